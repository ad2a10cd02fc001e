"""Benchmark: a rollout of 100 hubs in 4 waves with the slow test double (each upgrade takes DELAY seconds).

Runs on a throw-away PostgreSQL with WORKERS worker threads (several workers need PostgreSQL), so upgrades inside a
wave run in parallel up to max-unavailable.  Prints the rollout's wall time beside the sum of its single upgrades.
Run with `make bench` (or `python -m tests.perf.bench_rollout`).
"""
from __future__ import annotations

import tempfile
import threading
import time

from flask_migrate import upgrade

from console import create_app
from console.extensions import db
from console.models import Cluster, Hub, Institution, Operation, Release, Rollout, User
from console.services import releases
from console.worker import Worker
from tests.postgres import PostgresServer

HUBS, WAVES, MAX_UNAVAILABLE, WORKERS, DELAY = 100, 4, 10, 10, 0.2


def main() -> None:
    server = PostgresServer().start()
    try:
        app = create_app({"DATA_DIR": tempfile.mkdtemp(), "DATABASE_URL": server.create_database("bench"),
                          "SECRET_KEY": "bench", "WORKER_POLL_SECONDS": 0.05, "PROBE_SECONDS": 3600,
                          "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 3 * WORKERS, "max_overflow": 10}})
        with app.app_context():
            upgrade()
            operator = User(email="op@example.org", role="operator", password_hash="-")
            old = Release(name="old", jupyterhub_version="5.4.6")
            new = Release(name="new", jupyterhub_version="6.1.1")
            cluster = Cluster(name="slow", backend="fake-slow", settings={"delay": DELAY}, state="ready")
            institution = Institution(slug="inst", name="Institution")
            db.session.add_all([operator, old, new, cluster, institution])
            db.session.flush()
            db.session.add_all(Hub(slug=f"hub-{i:03d}", institution=institution, cluster=cluster, state="running",
                                   health="healthy", release=old, spec={}, backend_state={"deployed": True,
                                                                                          "url": "x"})
                               for i in range(HUBS))
            db.session.commit()
            rollout = releases.create_rollout(operator, new, {"channel": "stable"}, max_unavailable=MAX_UNAVAILABLE,
                                              gate_seconds=0, waves=WAVES, start=True)
            rollout_id = rollout.id
            sizes = sorted({h.wave for h in rollout.hubs})
            wave_sizes = [sum(1 for h in rollout.hubs if h.wave == w) for w in sizes]
        stop = threading.Event()
        threads = [threading.Thread(target=Worker(app, owner=f"bench-{i}").run, args=(stop,)) for i in range(WORKERS)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        with app.app_context():
            while db.session.get(Rollout, rollout_id).state == "running":
                db.session.remove()
                time.sleep(0.1)
            wall = time.perf_counter() - start
            state = db.session.get(Rollout, rollout_id).state
            ops = db.session.execute(db.select(Operation).filter_by(kind="upgrade")).unique().scalars().all()
            total = sum((op.finished_at - op.started_at).total_seconds() for op in ops)
        stop.set()
        for thread in threads:
            thread.join(30)
        print(f"{HUBS} hubs, waves {wave_sizes}, max unavailable {MAX_UNAVAILABLE}, {WORKERS} workers, "
              f"{DELAY}s per upgrade: rollout {state}")
        print(f"rollout wall time          {wall:8.2f} s")
        print(f"sum of single upgrades     {total:8.2f} s   ({len(ops)} upgrades)")
        print(f"speed-up                   {total / wall:8.1f} x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
