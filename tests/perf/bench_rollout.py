"""Benchmark: a rollout of 1,000 hubs in 4 waves, at most 100 upgrading at once, on the ``fake-delayed`` test double
(each upgrade is ready DELAY seconds after its deploy, without blocking a worker).

Prints the wall time, the ideal (the sum over waves of ceil(wave size / max unavailable) x DELAY: the upgrades of a
wave run in batches of max-unavailable, each taking DELAY) and wall/ideal; on SQLite with one worker and on a
throw-away PostgreSQL with two.  The workers are threads of this process, each with its own ``Worker`` (its own
owner name, database session and loop), as `hubfleet worker` processes would be.  The aim is wall < 1.25 x ideal.
Run with `make bench` (or `python -m tests.perf.bench_rollout [--sqlite-only]`).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time

from flask_migrate import upgrade

from console import create_app
from console.extensions import db
from console.models import Cluster, Hub, Institution, Operation, Release, Rollout, RolloutHub, User
from console.services import releases
from console.worker import Worker

HUBS, WAVES, MAX_UNAVAILABLE, DELAY = 1000, 4, 100, 2.0
TIMEOUT = 120  # seconds a run may take before it is reported as stuck


def seed() -> int:
    """1,000 running hubs on release old, a planned rollout of new over them; returns the rollout's id."""
    operator = User(email="op@example.org", role="operator", password_hash="-")
    old = Release(name="old", jupyterhub_version="5.4.6", state="ready")
    new = Release(name="new", jupyterhub_version="6.1.1", state="ready")
    cluster = Cluster(name="delayed", backend="fake-delayed", settings={"delay": DELAY}, state="ready")
    institution = Institution(slug="inst", name="Institution")
    db.session.add_all([operator, old, new, cluster, institution])
    db.session.flush()
    db.session.add_all(Hub(slug=f"hub-{i:04d}", institution=institution, cluster=cluster, state="running",
                           health="healthy", release=old, spec={},
                           backend_state={"deployed": True, "slug": f"hub-{i:04d}", "url": "http://x.invalid/",
                                          "config": "old", "version": "5.4.6"})
                       for i in range(HUBS))
    db.session.commit()
    rollout = releases.create_rollout(operator, new, {"channel": "stable"}, max_unavailable=MAX_UNAVAILABLE,
                                      gate_seconds=0, waves=WAVES)
    return rollout.id


def run(database_url: str, workers: int) -> dict:
    app = create_app({"DATA_DIR": tempfile.mkdtemp(), "DATABASE_URL": database_url, "SECRET_KEY": "bench",
                      "PROBE_SECONDS": 3600, "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 4 * workers + 2}}
                     if not database_url.startswith("sqlite") else
                     {"DATA_DIR": tempfile.mkdtemp(), "DATABASE_URL": database_url, "SECRET_KEY": "bench",
                      "PROBE_SECONDS": 3600})
    with app.app_context():
        upgrade()
        rollout_id = seed()
        sizes = [n for _, n in db.session.execute(db.select(RolloutHub.wave, db.func.count())
                                                  .where(RolloutHub.rollout_id == rollout_id)
                                                  .group_by(RolloutHub.wave).order_by(RolloutHub.wave))]
        releases.control(db.session.get(User, 1), db.session.get(Rollout, rollout_id), "start")
    stop = threading.Event()
    threads = [threading.Thread(target=Worker(app, owner=f"bench-{i}").run, args=(stop,), daemon=True)
               for i in range(workers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    with app.app_context():
        while time.perf_counter() - start < TIMEOUT:
            state = db.session.execute(db.select(Rollout.state).where(Rollout.id == rollout_id)).scalar()
            db.session.remove()
            if state != "running":
                break
            time.sleep(0.05)
        wall = time.perf_counter() - start
        upgraded = db.session.execute(db.select(db.func.count()).where(RolloutHub.rollout_id == rollout_id,
                                                                       RolloutHub.state == "upgraded")).scalar()
        ops = db.session.execute(db.select(db.func.count()).where(Operation.kind == "upgrade",
                                                                  Operation.outcome == "succeeded")).scalar()
    stop.set()
    for thread in threads:
        thread.join(30)
    with app.app_context():
        db.engine.dispose()
    ideal = sum(math.ceil(size / MAX_UNAVAILABLE) for size in sizes) * DELAY
    return {"state": state, "wall": wall, "ideal": ideal, "sizes": sizes, "upgraded": upgraded, "ops": ops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite-only", action="store_true", help="skip the PostgreSQL run")
    args = parser.parse_args()
    targets = [("sqlite", 1, lambda: f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite")]
    server = None
    if not args.sqlite_only:
        from tests.postgres import PostgresServer

        server = PostgresServer().start()
        targets.append(("postgresql", 2, lambda: server.create_database("bench_rollout")))
    try:
        print(f"rollout of {HUBS} hubs, {WAVES} waves, max unavailable {MAX_UNAVAILABLE}, gate 0 s, "
              f"fake-delayed {DELAY:g} s per upgrade; workers are threads of one process, one Worker each")
        print(f"{'database':<11} {'workers':>7} {'waves':<20} {'state':<8} {'upgraded':>8} {'wall s':>7} "
              f"{'ideal s':>7} {'wall/ideal':>10}")
        for name, workers, url in targets:
            result = run(url(), workers)
            print(f"{name:<11} {workers:>7} {str(result['sizes']):<20} {result['state']:<8} {result['upgraded']:>8} "
                  f"{result['wall']:>7.2f} {result['ideal']:>7.1f} {result['wall'] / result['ideal']:>10.2f}",
                  flush=True)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
