"""The Hubfleet console: a Flask app over the fleet's database, with a worker that reconciles hubs."""
from __future__ import annotations

from pathlib import Path

from flask import Flask, jsonify, send_from_directory
from werkzeug.exceptions import NotFound
from werkzeug.security import safe_join

ROOT = Path(__file__).resolve().parent.parent
# Where /static/<file> comes from, first match wins: the browser files of the npm packages the console serves (htmx,
# and uPlot for charts, each from its package's dist folder), then the console's own (the charts' start-up script).
STATIC_FOLDERS = (ROOT / "node_modules" / "htmx.org" / "dist", ROOT / "node_modules" / "uplot" / "dist",
                  Path(__file__).resolve().parent / "static")


def create_app(test_config: dict | None = None) -> Flask:
    """Build the console app. Nothing is started here: no worker, no hub, no migration."""
    from console import config, crypto, errors, headers, limits, security, views
    from console.extensions import api, commit_reads, csrf, db, login_manager, migrate

    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=None)
    app.add_url_rule("/static/<path:filename>", endpoint="static", view_func=static_file)
    app.url_map.converters["int"] = limits.IdConverter  # before any route is added
    config.load(app, test_config)
    crypto.load_keys(app)
    security.init_app(app)

    # Authentication runs before CSRF checks, so an anonymous POST is sent to log in rather than told off.
    app.before_request(security.require_login)
    app.before_request(limits.check_request)
    db.init_app(app)
    app.teardown_request(commit_reads)  # before Flask-SQLAlchemy removes the session (app context teardown)
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


def static_file(filename: str):
    """``/static/<filename>`` from the first of ``STATIC_FOLDERS`` that has it (cached like Flask's own static
    files); 404 when none does."""
    for folder in STATIC_FOLDERS:
        found = safe_join(str(folder), filename)  # None for a name that would leave the folder
        if found and Path(found).is_file():
            return send_from_directory(folder, filename)
    raise NotFound()
