"""Benchmark: the fleet page and its polling refresh with 1,000 and 10,000 hubs, on SQLite and PostgreSQL.

Each fleet has a hub per 5th institution and 10th cluster, a few hubs down, degraded, failed or with a restart
queued, one finished operation per hub and a day of hourly samples per hub.  For each request the benchmark prints
the median server time (in-process, rendering included) and the part of it spent in the database, the SQL
statements it ran and the response size:

- the page (GET /: counts, the first 50 hubs, problems first, and the filter form);
- a search sorted by a column (GET /?q=...&sort=users&order=desc);
- the refresh while nothing changed (htmx, If-None-Match: 204, no body);
- the refresh after a change (htmx: the visible page only).

The aim at 10,000 hubs is under 50 ms and under 100 KB, and each request's statement count must not grow with the
fleet.  Run with `make bench` (or `python -m tests.perf.bench_fleet [--postgres] [--sizes 1000 10000]`).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import timedelta

from flask_migrate import upgrade
from sqlalchemy import event, insert

from console import create_app
from console.extensions import db
from console.models import Cluster, Hub, HubSample, Institution, Operation, User, utcnow
from console.security import hash_password
from tests.conftest import CSRF_RE, PASSWORD

REPEATS = 15
HX = {"HX-Request": "true"}


def seed(hubs: int) -> None:
    clusters = [Cluster(name=f"cluster-{i:03d}", backend="fake", settings={}, state="ready")
                for i in range(max(1, hubs // 10))]
    institutions = [Institution(slug=f"inst-{i:03d}", name=f"Institution {i}") for i in range(max(1, hubs // 5))]
    db.session.add_all(clusters + institutions)
    db.session.add(User(email="op@example.org", role="operator", password_hash=hash_password(PASSWORD)))
    db.session.flush()
    now = utcnow()

    def health(i):
        return "down" if i % 50 == 7 else "degraded" if i % 97 == 3 else "healthy"

    db.session.execute(insert(Hub), [
        {"slug": f"hub-{i:05d}", "institution_id": institutions[i % len(institutions)].id,
         "cluster_id": clusters[i % len(clusters)].id, "state": "failed" if i % 211 == 5 else "running",
         "desired": "running", "health": health(i), "health_since": now,
         "status_message": {"down": "no answer to 3 probes in a row", "degraded": "slow: 2.1 s to answer"}.get(
             health(i), "answering"),
         "url": f"http://127.0.0.1:{20000 + i % 40000}/", "jupyterhub_version": ("5.3.0", "5.2.1", "4.1.6")[i % 3],
         "user_count": i % 300, "channel": "stable", "pinned": False, "canary": False, "restart_count": 0,
         "spec": {"release": "default"}, "backend_state": {}, "created_at": now} for i in range(hubs)])
    ids = db.session.execute(db.select(Hub.id).order_by(Hub.id)).scalars().all()
    db.session.execute(insert(Operation), [
        {"hub_id": hub_id, "kind": "create", "actor": "op@example.org", "state": "succeeded", "outcome": "succeeded",
         "error": "", "step": "", "data": {}, "note": "", "attempts": 1, "created_at": now, "finished_at": now}
        for hub_id in ids])
    db.session.execute(insert(Operation), [
        {"hub_id": hub_id, "kind": "restart", "actor": "op@example.org", "state": "queued", "error": "", "step": "",
         "data": {}, "note": "", "attempts": 0, "created_at": now} for hub_id in ids[::200]])
    db.session.execute(insert(HubSample), [
        {"hub_id": hub_id, "at": now - timedelta(hours=hour, minutes=5), "resolution": "raw", "up": 1.0,
         "duration": 0.05, "running_servers": float(hub_id % 7), "total_users": 10.0,
         "active_users": float((hub_id + hour) % 5)} for hub_id in ids for hour in range(24)])
    db.session.commit()


def measure(database_url: str, hubs: int) -> list[tuple[str, float, float, int, int]]:
    """(request, median ms, median ms in SQL, SQL statements, bytes) for each request of the module docstring."""
    app = create_app({"DATA_DIR": tempfile.mkdtemp(), "DATABASE_URL": database_url, "SECRET_KEY": "bench"})
    with app.app_context():
        upgrade()
        seed(hubs)
        engine = db.engine
    statements: list[float] = []  # each statement's time in the database, as the driver returns it

    def started(conn, *args):
        conn.info["started"] = time.perf_counter()

    def ended(conn, *args):
        statements.append(time.perf_counter() - conn.info.pop("started"))

    event.listen(engine, "before_cursor_execute", started)
    event.listen(engine, "after_cursor_execute", ended)
    # Requests run outside any app context of ours, so each gets its own session, as in production.
    client = app.test_client()
    token = CSRF_RE.search(client.get("/login").get_data(as_text=True)).group(1)
    client.post("/login", data={"email": "op@example.org", "password": PASSWORD, "csrf_token": token})
    etag = client.get("/", headers=HX).headers["ETag"]
    requests = {
        "page": ("/", {}, 200),
        "search, sorted": ("/?q=inst-01&sort=users&order=desc", {}, 200),
        "refresh, unchanged": ("/", {**HX, "If-None-Match": etag}, 204),
        "refresh, changed": ("/", HX, 200),
    }
    results = []
    for name, (path, headers, code) in requests.items():
        client.get(path, headers=headers)  # warm caches (templates, statement cache)
        timings, in_sql = [], []
        for _ in range(REPEATS):
            statements.clear()
            start = time.perf_counter()
            response = client.get(path, headers=headers)
            timings.append(time.perf_counter() - start)
            in_sql.append(sum(statements))
            assert response.status_code == code, (name, response.status_code)
        body = response.get_data()
        assert code == 204 or body.count(b'<tr id="hub-') == 50, name
        results.append((name, statistics.median(timings) * 1000, statistics.median(in_sql) * 1000, len(statements),
                        len(body)))
    engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help="also run on a throw-away PostgreSQL server")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="fleet sizes (hubs)")
    args = parser.parse_args()
    targets = [("sqlite", lambda n: f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite")]
    server = None
    if args.postgres:
        from tests.postgres import PostgresServer

        server = PostgresServer().start()
        targets.append(("postgresql", lambda n: server.create_database(f"bench_{n}")))
    try:
        print(f"{'database':<11} {'hubs':>6} {'request':<19} {'median ms':>10} {'in SQL':>7} {'SQL statements':>15} "
              f"{'KiB':>7}")
        for name, url_for in targets:
            counts: dict[str, set[int]] = {}
            for hubs in args.sizes:
                for request, median_ms, sql_ms, count, size in measure(url_for(hubs), hubs):
                    counts.setdefault(request, set()).add(count)
                    print(f"{name:<11} {hubs:>6} {request:<19} {median_ms:>10.1f} {sql_ms:>7.1f} {count:>15} "
                          f"{size / 1024:>7.1f}", flush=True)
            grown = sorted(request for request, seen in counts.items() if len(seen) > 1)
            print(f"{name}: statement counts " + (f"grow with the fleet: {', '.join(grown)}" if grown else
                                                  "the same at every size"))
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
