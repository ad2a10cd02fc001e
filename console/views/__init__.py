"""Blueprints, one per area."""
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def register(app, api) -> None:
    from console.extensions import csrf
    from console.views import api as api_views
    from console.views import (account, auth, clusters, fleet, institutions, memberships, monitoring, oidc, open_links,
                               people, releases)

    app.register_blueprint(auth.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(fleet.bp)
    app.register_blueprint(institutions.bp)
    app.register_blueprint(clusters.bp)
    app.register_blueprint(monitoring.bp)
    app.register_blueprint(releases.bp)
    app.register_blueprint(people.bp)
    app.register_blueprint(memberships.bp)
    app.register_blueprint(oidc.bp)
    from console.views import usage
    app.register_blueprint(usage.bp)
    csrf.exempt(oidc.bp)  # hubs post to the token endpoint with their client secret, not a CSRF token
    from console.services import federation
    federation.init_app(app)
    app.register_blueprint(open_links.bp)
    csrf.exempt(api_views.blp)  # bearer tokens only; a browser's cookie never authenticates the API
    api.register_blueprint(api_views.blp)
    csrf.exempt(people.api_blp)
    api.register_blueprint(people.api_blp)
    csrf.exempt(memberships.api_blp)
    api.register_blueprint(memberships.api_blp)
    from console.views import contacts  # contacts of institutions and hubs; the alert email's test
    app.register_blueprint(contacts.bp)
    csrf.exempt(contacts.api_blp)
    api.register_blueprint(contacts.api_blp)
    from console.views import archives  # decommission requests and the archives of decommissioned hubs
    app.register_blueprint(archives.bp)
    csrf.exempt(archives.api_blp)
    api.register_blueprint(archives.api_blp)
    from console.views import fleet_code  # the fleet as code (plan, apply) and drift (report, reconcile)
    app.register_blueprint(fleet_code.bp)
    csrf.exempt(fleet_code.api_blp)
    api.register_blueprint(fleet_code.api_blp)

    from console.services.releases import hub_actions, rollout_actions
    from console import permissions
    from console.status import badge

    app.jinja_env.globals["badge"] = badge
    app.jinja_env.globals["rollout_actions"] = rollout_actions  # pages ask the lifecycle what a rollout offers
    app.jinja_env.globals["rollout_hub_actions"] = hub_actions
    app.jinja_env.globals["can"] = permissions.template_can  # pages offer only what the permission table allows
    app.jinja_env.globals["actor"] = permissions.template_actor
    app.jinja_env.globals["FLEET"] = permissions.FLEET
    from console.views.formatting import FILTERS, sparkline
    app.jinja_env.filters.update(FILTERS)  # one way to say a time, a count, a rollout target on every page
    app.jinja_env.globals["sparkline"] = sparkline

    from flask import Response

    icon = (ASSETS / "favicon.svg").read_bytes()

    @app.get("/favicon.ico", endpoint="favicon")
    @app.get("/favicon.svg", endpoint="favicon")
    def favicon():
        """Our icon (an SVG, which browsers take at either address); public, like the login page it sits on."""
        return Response(icon, mimetype="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})

    from console.services.memberships import home_endpoint
    app.jinja_env.globals["home_endpoint"] = home_endpoint  # members land on My hubs, everyone else on the fleet
