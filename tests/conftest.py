"""Fixtures shared by the whole suite.

Every test that takes ``app`` runs twice: on SQLite and on a real PostgreSQL server started for the session.
"""
from __future__ import annotations

import itertools
import os
import time
import tempfile
from pathlib import Path
import re

import pytest
from flask import g, has_app_context
from flask_migrate import upgrade
from hypothesis import settings

from console import create_app
from console.extensions import db
from console.models import Cluster, Institution, User
from console.security import hash_password, new_api_token
from tests.postgres import PostgresServer, available
from tests.browser import browser, live_server  # noqa: F401  (fixtures, found by name)
from tests.k8s.emulator import kube_api, kube_api_factory  # noqa: F401  (fixtures, found by name)
from tests.slurm import slurm_site  # noqa: F401  (fixture, found by name)

PASSWORD = "correct horse battery"

# CI explores the same examples on every run, so a result never depends on the draw; locally every run explores anew.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
_counter = itertools.count()


def _share_ports() -> None:
    """Under pytest-xdist (``make test`` runs two workers), give each worker its own slice of HUBFLEET_TEST_PORTS,
    before any test module reads it, so hubs started side by side never race for a port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2:
        return
    first, last = (int(p) for p in os.environ.get("HUBFLEET_TEST_PORTS", "21000-21999").split("-"))
    size = (last - first + 1) // count
    start = first + int(worker[2:]) * size
    os.environ["HUBFLEET_TEST_PORTS"] = f"{start}-{start + size - 1}"


_share_ports()


@pytest.fixture(scope="session")
def postgres():
    reason = available()
    if reason:
        if os.environ.get("HUBFLEET_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here but cannot start: {reason}")
        pytest.skip(f"PostgreSQL half of the suite not run: {reason}")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'console.sqlite'}"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"test_{next(_counter)}")


@pytest.fixture
def config(tmp_path, database_url):
    return {
        "TESTING": True,
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret",
        "WORKER_POLL_SECONDS": 0.05,
        "LEASE_SECONDS": 3,
        "HUB_START_TIMEOUT": 60,
        # HUBFLEET_TEST_PORTS="first-last" keeps suites run side by side on one machine off each other's ports
        "LOCAL_PORT_RANGE": [int(p) for p in os.environ.get("HUBFLEET_TEST_PORTS", "21000-21999").split("-")],
        # JupyterHub versions installed for release tests are kept across tests and runs
        "RELEASE_ENVIRONMENTS": os.environ.get("HUBFLEET_TEST_ENVIRONMENTS",
                                               str(Path(tempfile.gettempdir()) / "hubfleet-test-environments")),
    }


@pytest.fixture
def app(config):
    app = create_app(config)
    with app.app_context():
        upgrade()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def own_g_per_request(app):
    """A test holds an app context, which Flask reuses for every request the test makes, so ``g`` (Flask-Login's
    loaded user, Flask-WTF's CSRF token) would carry from one request to the next, even to another client's.  In
    production each request has its own ``g``; with this fixture each test request starts with an empty one too."""

    def forget():
        for name in list(g):
            g.pop(name)

    app.before_request_funcs.setdefault(None, []).insert(0, forget)


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


# -- factories: each returns a callable that makes a row and commits ---------------------------------------------


@pytest.fixture
def create_institution(ctx):
    def make(slug=None, name=None):
        slug = slug or f"inst-{next(_counter)}"
        row = Institution(slug=slug, name=name or slug.title())
        db.session.add(row)
        db.session.commit()
        return row

    return make


@pytest.fixture
def create_cluster(ctx):
    def make(name=None, backend="fake", **settings):
        row = Cluster(name=name or f"cluster-{next(_counter)}", backend=backend, settings=settings, state="ready")
        db.session.add(row)
        db.session.commit()
        return row

    return make


@pytest.fixture
def create_user(ctx):
    def make(role="operator", institution=None, email=None):
        row = User(email=email or f"user{next(_counter)}@example.org", role=role, institution=institution,
                   password_hash=hash_password(PASSWORD))
        db.session.add(row)
        db.session.commit()
        return row

    return make


@pytest.fixture
def api_headers(ctx):
    """``api_headers(user)`` -> Authorization headers with a fresh token for ``user``."""

    def make(user):
        token = new_api_token(user)
        db.session.commit()
        return {"Authorization": f"Bearer {token}"}

    return make


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


@pytest.fixture
def login(app):
    """``login(client, user)`` logs the client in through the real login form."""

    def do(client, user):
        token = csrf_from(client.get("/login").get_data(as_text=True))
        response = client.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302, response.get_data(as_text=True)
        return client

    return do


@pytest.fixture
def run_worker(app):
    """``run_worker()`` works on operations in this thread until none is queued or waiting (a waiting one is taken
    up again when it is due); returns how many operations finished."""
    from console.models import WAITING, Operation
    from console.services import operations
    from console.worker import Worker

    def run(limit: int = 50, timeout: float = 60) -> int:
        worker = Worker(app, owner="test-worker")
        deadline = time.monotonic() + timeout
        done = 0
        with app.app_context():
            while done < limit and time.monotonic() < deadline:
                op = worker.run_once()
                if op is not None:
                    done += op.terminal
                    continue
                if not db.session.execute(db.select(Operation.id).where(Operation.state == WAITING)).first():
                    break
                time.sleep(max(0.01, operations.next_due_in(1.0)))
            db.session.remove()
        if has_app_context():
            db.session.expire_all()  # the test's own session must see what the worker wrote
        return done

    return run
