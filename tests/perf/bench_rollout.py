"""Benchmark: a rollout of 1,000 hubs in 4 waves, at most 100 upgrading at once, on the ``fake-delayed`` test double
(each upgrade is ready DELAY seconds after its deploy, without blocking a worker).

Prints the wall time, the ideal (the sum over waves of ceil(wave size / max unavailable) x DELAY: the upgrades of a
wave run in batches of max-unavailable, each taking DELAY) and wall/ideal; on SQLite with one worker and on a
throw-away PostgreSQL with two.  The workers are `hubfleet worker` processes, started (and up) before the rollout
is, so the clock starts when the rollout does.  The aim is wall < 1.25 x ideal.
Run with `make bench` (or `python -m tests.perf.bench_rollout [--sqlite-only]`).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flask_migrate import upgrade

from console import create_app
from console.extensions import db
from console.models import Cluster, Hub, Institution, Operation, Release, Rollout, RolloutHub, User
from console.services import releases

ROOT = Path(__file__).resolve().parents[2]
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
    data_dir = tempfile.mkdtemp()
    app = create_app({"DATA_DIR": data_dir, "DATABASE_URL": database_url, "SECRET_KEY": "bench"})
    with app.app_context():
        upgrade()
        rollout_id = seed()
        sizes = [n for _, n in db.session.execute(db.select(RolloutHub.wave, db.func.count())
                                                  .where(RolloutHub.rollout_id == rollout_id)
                                                  .group_by(RolloutHub.wave).order_by(RolloutHub.wave))]
    # `hubfleet worker` processes, as an operator runs them (the monitor in them has nothing to sweep this hour)
    env = {**os.environ, "HUBFLEET_DATABASE_URL": database_url, "HUBFLEET_DATA_DIR": data_dir,
           "HUBFLEET_SECRET_KEY": "bench", "HUBFLEET_PROBE_SECONDS": "3600"}
    logs = [Path(data_dir) / f"worker-{i}.log" for i in range(workers)]
    processes = [subprocess.Popen([sys.executable, "-m", "console.cli", "worker"], env=env, cwd=ROOT,
                                  stdout=log.open("wb"), stderr=subprocess.STDOUT) for log in logs]
    try:
        deadline = time.monotonic() + 60
        while not all(b":hubs starting" in log.read_bytes() for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"the workers did not start; see {data_dir}")
            time.sleep(0.1)
        with app.app_context():
            releases.control(db.session.get(User, 1), db.session.get(Rollout, rollout_id), "start")
        start = time.perf_counter()
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
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
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
              f"fake-delayed {DELAY:g} s per upgrade; workers are `hubfleet worker` processes")
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
