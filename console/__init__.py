"""The Hubfleet console: a Flask app over the fleet's database, with a worker that reconciles hubs."""
from __future__ import annotations

from pathlib import Path

from flask import Flask, jsonify

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict | None = None) -> Flask:
    """Build the console app. Nothing is started here: no worker, no hub, no migration."""
    from console import config, crypto, errors, headers, limits, security, views
    from console.extensions import api, csrf, db, login_manager, migrate

    app = Flask(__name__, template_folder=str(ROOT / "templates"),
                static_folder=str(ROOT / "node_modules" / "htmx.org" / "dist"), static_url_path="/static")
    app.url_map.converters["int"] = limits.IdConverter  # before any route is added
    config.load(app, test_config)
    crypto.load_keys(app)
    security.init_app(app)

    # Authentication runs before CSRF checks, so an anonymous POST is sent to log in rather than told off.
    app.before_request(security.require_login)
    app.before_request(limits.check_request)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).parent / "migrations"))
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    api.init_app(app, spec_kwargs={"security": [{"bearer": []}]})
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})

    errors.register(app)
    headers.register(app)
    views.register(app, api)

    @app.get("/healthz")
    def healthz():
        db.session.execute(db.text("SELECT 1"))
        return jsonify(status="ok")

    return app
