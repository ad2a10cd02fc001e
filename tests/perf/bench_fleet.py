"""Benchmark: the fleet page with 10, 100 and 1,000 hubs (on 1, 10 and 100 clusters).

Prints, per fleet size, the median server time of GET / for an operator and the number of SQL statements it ran.
The statement count must not grow with the number of hubs.  Run with `make bench` (or
`python -m tests.perf.bench_fleet [--postgres]`).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from flask_migrate import upgrade
from sqlalchemy import event

from console import create_app
from console.extensions import db
from console.models import Cluster, Hub, Institution, User
from console.security import hash_password
from tests.conftest import CSRF_RE, PASSWORD

REPEATS = 15


def seed(hubs: int) -> None:
    clusters = [Cluster(name=f"cluster-{i:03d}", backend="fake", settings={}, state="ready")
                for i in range(max(1, hubs // 10))]
    institutions = [Institution(slug=f"inst-{i:03d}", name=f"Institution {i}") for i in range(max(1, hubs // 5))]
    db.session.add_all(clusters + institutions)
    db.session.add(User(email="op@example.org", role="operator", password_hash=hash_password(PASSWORD)))
    db.session.flush()
    db.session.add_all(
        Hub(slug=f"hub-{i:04d}", institution_id=institutions[i % len(institutions)].id,
            cluster_id=clusters[i % len(clusters)].id, state="running", health="healthy",
            url=f"http://127.0.0.1:{20000 + i}/", jupyterhub_version="5.3.0", user_count=i % 300,
            spec={"release": "default"}, backend_state={})
        for i in range(hubs))
    db.session.commit()


def measure(database_url: str, hubs: int) -> tuple[float, int, int]:
    app = create_app({"DATA_DIR": tempfile.mkdtemp(), "DATABASE_URL": database_url, "SECRET_KEY": "bench"})
    with app.app_context():
        upgrade()
        seed(hubs)
        engine = db.engine
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(1))
    # Requests run outside any app context of ours, so each gets its own session, as in production.
    client = app.test_client()
    token = CSRF_RE.search(client.get("/login").get_data(as_text=True)).group(1)
    client.post("/login", data={"email": "op@example.org", "password": PASSWORD, "csrf_token": token})
    client.get("/")  # warm caches (templates, statement cache)
    timings = []
    for _ in range(REPEATS):
        statements.clear()
        start = time.perf_counter()
        response = client.get("/")
        timings.append(time.perf_counter() - start)
        assert response.status_code == 200 and response.get_data(as_text=True).count('id="hub-') == hubs
    engine.dispose()
    return statistics.median(timings) * 1000, len(statements), len(response.get_data())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help="also run on a throw-away PostgreSQL server")
    args = parser.parse_args()
    targets = [("sqlite", lambda n: f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite")]
    server = None
    if args.postgres:
        from tests.postgres import PostgresServer

        server = PostgresServer().start()
        targets.append(("postgresql", lambda n: server.create_database(f"bench_{n}")))
    try:
        print(f"{'database':<11} {'hubs':>5} {'clusters':>8} {'median ms':>10} {'SQL statements':>15} {'page KiB':>9}")
        for name, url_for in targets:
            for hubs in (10, 100, 1000):
                median_ms, count, size = measure(url_for(hubs), hubs)
                print(f"{name:<11} {hubs:>5} {max(1, hubs // 10):>8} {median_ms:>10.1f} {count:>15} "
                      f"{size / 1024:>9.0f}")
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
