"""Configuration: defaults -> settings file -> HUBFLEET_* environment -> test config.

The settings file is TOML with upper-case keys (``DATABASE_URL = "postgresql+psycopg://..."``), named by the
``HUBFLEET_SETTINGS`` environment variable.  Environment variables are ``HUBFLEET_<KEY>`` (values parsed as JSON
when they parse, so ``HUBFLEET_LEASE_SECONDS=5`` is a number).

The data directory is mode 0711: local hubs' users (system accounts of their own) may pass it to reach the release
environments (0755) but list nothing; everything else in it is the console's alone (directories 0700, files 0600).
"""
from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

from tenants import outbound

DEFAULTS = {
    "DATA_DIR": "hubfleet-data",
    "DATABASE_URL": None,  # default: SQLite in the data dir
    "SECRET_KEY": None,  # default: generated once and kept in the data dir
    "SERVE_WORKER": True,  # `hubfleet serve` runs `hubfleet worker` and `hubfleet monitor` as its child processes
    "SERVE_WORKERS": None,  # web processes; default: 1 per CPU, at least 2, at most 8 (console.serving.default_workers)
    "SERVE_THREADS": 4,  # requests one web process runs at once (more only contend for its one core)
    "SERVE_MAX_INFLIGHT": 64,  # requests one web process holds (running and queued); more are answered 503 at once
    "SERVE_CONNECTIONS": 1000,  # open connections one web process accepts (idle kept-alive ones hold no thread)
    "SERVE_BACKLOG": 2048,  # the listen socket's queue of connections not yet accepted
    "SERVE_KEEPALIVE": 30,  # seconds an idle connection stays open (well over the pages' 5 s polling)
    "SERVE_TIMEOUT": 60,  # a web process silent this long is killed and replaced
    "SERVE_ACCESS_LOG": None,  # a file for one line per request ("-": standard error); None: none
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
    # "host:port" pairs requests to typed URLs (OIDC discovery, webhooks) may reach over plain http and on private
    # addresses; everything else must be https to a public address (tenants/outbound.py)
    "OUTBOUND_ALLOW": [],
    "MAX_CONTENT_LENGTH": 1024 * 1024,  # bytes of one request's body; more is refused with 413
    "MAX_JSON_DEPTH": 32,  # nesting of a JSON body (see console/limits.py)
    "MAX_JSON_ITEMS": 10000,  # entries of any one list or object in a JSON body
    "MAX_PENDING_OPERATIONS": 20,  # per institution: unfinished hub operations; more are refused with 429
    "ARCHIVE_RETENTION_DAYS": 90,  # how long a decommissioned hub's archive is kept before it is purged
    "LOCAL_PORT_RANGE": [18000, 18999],
    "LOCAL_HUB_IP": "127.0.0.1",
    "SLURM_TIMEOUT": 5.0,  # seconds the hub page and API wait for each of sinfo and squeue on a Slurm cluster
    "SLURM_STUCK_MINUTES": 10,  # a server's job pending longer than this is shown as stuck on its hub's page
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
    # Logins (console/services/sessions.py): failures in a row that are free, per account and per address; after
    # them each attempt waits 1 s, 2 s, 4 s, ... up to LOGIN_DELAY_MAX_SECONDS.  A session unused this long ends.
    "LOGIN_FAILURES_PER_ACCOUNT": 5,
    "LOGIN_FAILURES_PER_ADDRESS": 50,
    "LOGIN_DELAY_MAX_SECONDS": 900,
    "SESSION_IDLE_HOURS": 24,
    # The console's address as hubs and browsers reach it ("https://hubs.example.org"): the issuer of the OpenID
    # provider federated hubs log in through.  Never change it once hubs use it.
    "PUBLIC_URL": None,
    # Proxies in front of the console whose X-Forwarded-For/-Proto/-Host/-Port to believe (0: none; 1: one nginx).
    "PROXY_COUNT": 0,
    # Alert email to hubs' contacts (console/services/alert_email.py).  SMTP_HOST "" turns it off.  The password is
    # read from here only (settings file or HUBFLEET_SMTP_PASSWORD), never shown or logged.
    "SMTP_HOST": "",
    "SMTP_PORT": 587,
    "SMTP_SECURITY": "starttls",  # "starttls" | "ssl" (implicit TLS, usually port 465) | "none"
    "SMTP_USERNAME": "",  # "" sends without logging in
    "SMTP_PASSWORD": "",
    "SMTP_FROM": "hubfleet@localhost",
    "SMTP_TIMEOUT": 10,  # seconds for the connection and each command; a pass waits at most this long per try
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
    _make_data_dir(data_dir)
    app.config["DATA_DIR"] = str(data_dir)
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = f"sqlite:///{data_dir / 'hubfleet.sqlite'}"
        _private_file(data_dir / "hubfleet.sqlite")  # SQLite gives its journal the database's mode
    app.config["SQLALCHEMY_DATABASE_URI"] = app.config["DATABASE_URL"]
    app.config["RELEASE_ENVIRONMENTS"] = app.config["RELEASE_ENVIRONMENTS"] or str(data_dir / "environments")
    if app.config["DATABASE_URL"].startswith("sqlite"):
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 30}})
    else:  # a web process runs SERVE_THREADS requests at once: keep that many connections open, not fewer
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_size": max(5, int(app.config["SERVE_THREADS"]))})
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _persistent_secret(data_dir / "secret_key")
    outbound_policy(app)  # a mistyped allow-list entry stops the start, not the first request


def outbound_policy(app) -> outbound.Policy:
    """The guarded client's policy from ``OUTBOUND_ALLOW``; read at each request, so a test may set it late."""
    return outbound.Policy.from_setting(app.config["OUTBOUND_ALLOW"])


# What the console keeps in its data dir besides its keys and database: Terraform workspaces, local clusters' hubs
# (and the throw-away hubs of release smoke tests among them).  Release environments (RELEASE_ENVIRONMENTS) are
# the only thing others may reach.
PRIVATE_DIRS = ("terraform", "clusters")


def _make_data_dir(data_dir: Path) -> None:
    """Create the data dir (0711) and its private directories (0700), or bring an older one to these modes."""
    data_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    data_dir.chmod(0o711)
    for name in PRIVATE_DIRS:
        (data_dir / name).mkdir(mode=0o700, exist_ok=True)
        (data_dir / name).chmod(0o700)
    for name in ("secret_key", "encryption_key", "hubfleet.sqlite"):
        if (data_dir / name).exists():
            (data_dir / name).chmod(0o600)


def _private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists."""
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _persistent_secret(path: Path) -> str:
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text().strip()
