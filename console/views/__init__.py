"""Blueprints, one per area."""


def register(app, api) -> None:
    from console.extensions import csrf
    from console.views import api as api_views
    from console.views import auth, clusters, fleet, institutions, monitoring, releases

    app.register_blueprint(auth.bp)
    app.register_blueprint(fleet.bp)
    app.register_blueprint(institutions.bp)
    app.register_blueprint(clusters.bp)
    app.register_blueprint(monitoring.bp)
    app.register_blueprint(releases.bp)
    csrf.exempt(api_views.blp)  # bearer tokens only; a browser's cookie never authenticates the API
    api.register_blueprint(api_views.blp)

    from console.services.releases import hub_actions, rollout_actions
    from console.status import badge

    app.jinja_env.globals["badge"] = badge
    app.jinja_env.globals["rollout_actions"] = rollout_actions  # pages ask the lifecycle what a rollout offers
    app.jinja_env.globals["rollout_hub_actions"] = hub_actions
