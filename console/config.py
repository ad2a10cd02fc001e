"""Configuration: defaults -> settings file -> HUBFLEET_* environment -> test config.

The settings file is TOML with upper-case keys (``DATABASE_URL = "postgresql+psycopg://..."``), named by the
``HUBFLEET_SETTINGS`` environment variable.  Environment variables are ``HUBFLEET_<KEY>`` (values parsed as JSON
when they parse, so ``HUBFLEET_LEASE_SECONDS=5`` is a number).
"""
from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

DEFAULTS = {
    "DATA_DIR": "hubfleet-data",
    "DATABASE_URL": None,  # default: SQLite in the data dir
    "SECRET_KEY": None,  # default: generated once and kept in the data dir
    "WORKER_IN_PROCESS": True,
    "WORKER_POLL_SECONDS": 0.5,
    "LEASE_SECONDS": 30,
    "MAX_ATTEMPTS": 3,
    "HUB_START_TIMEOUT": 120,
    "PROBE_SECONDS": 15,  # how often the monitor sweeps the fleet
    "RECHECK_SECONDS": 1.0,  # how often it looks at processes and re-probes a hub whose last probe failed
    "MAX_RESTARTS": 5,  # a hub whose processes died is restarted (with backoff) this often, then marked failed
    "ROLLOUT_STEP_SECONDS": 0.5,  # how often the worker drives running rollouts
    "PROBE_TIMEOUT": 2.0,  # per hub, for all its requests together
    "PROBE_CONCURRENCY": 64,
    "ALERT_DOWN_SECONDS": 30,  # alert when a hub has been down this long
    "ALERT_DEGRADED_SECONDS": 600,
    "LOCAL_PORT_RANGE": [18000, 18999],
    "LOCAL_HUB_IP": "127.0.0.1",
    "TERRAFORM_BIN": "terraform",
    "RELEASE_ENVIRONMENTS": None,  # where local hubs' JupyterHub versions are installed; default <data dir>/environments
    # None: state in each workspace's directory; or {"type": "s3"|"gcs"|"azurerm", "config": {...}}
    "TERRAFORM_BACKEND": None,
    # Third-party settings derived from ours below.
    "API_TITLE": "Hubfleet",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/api/v1",
    "OPENAPI_JSON_PATH": "openapi.json",
    "WTF_CSRF_TIME_LIMIT": None,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
}


def load(app, test_config: dict | None) -> None:
    """Fill ``app.config`` in the documented order and derive the rest."""
    app.config.from_mapping(DEFAULTS)
    settings = os.environ.get("HUBFLEET_SETTINGS")
    if settings:
        app.config.from_file(settings, load=tomllib.load, text=False)
    app.config.from_prefixed_env("HUBFLEET")
    if test_config:
        app.config.from_mapping(test_config)

    data_dir = Path(app.config["DATA_DIR"]).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    app.config["DATA_DIR"] = str(data_dir)
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = f"sqlite:///{data_dir / 'hubfleet.sqlite'}"
    app.config["SQLALCHEMY_DATABASE_URI"] = app.config["DATABASE_URL"]
    app.config["RELEASE_ENVIRONMENTS"] = app.config["RELEASE_ENVIRONMENTS"] or str(data_dir / "environments")
    if app.config["DATABASE_URL"].startswith("sqlite"):
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 30}})
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _persistent_secret(data_dir / "secret_key")


def _persistent_secret(path: Path) -> str:
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text().strip()
