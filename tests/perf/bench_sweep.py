"""Benchmark: probe sweeps over hub endpoints on loopback.

1. One sweep over 1,000 endpoints, some slow, some dead: the concurrent sweep's wall time (goal: under 5 s), the same
   sweep done serially, their ratio, the sweep of an all-healthy fleet (to show dead hubs fewer than the pool size
   add at most one timeout).
2. The console's monitor over 10,000 hubs in its database (SQLite), each pointing at its own loopback endpoint, for
   a few sweeps, while a worker thread restarts other hubs over and over beside it: each sweep's wall time (aim:
   under 25 s), peak RSS (aim: under 200 MB), the longest gap between two samples of one hub, and the operations
   finished meanwhile.

The endpoints (tests/fakehubs.py) run in a separate process so that the peak RSS printed is this process's own.
Run with `make bench` (or `python -m tests.perf.bench_sweep [--serial-sample N] [--fleet N] [--sweeps N]`).
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from clusters.probe import Target, sweep

HUBS, SLOW, BLACKHOLE, REFUSED = 1000, 50, 20, 20
POOL, TIMEOUT, DELAY = 64, 2.0, 0.5
FLEET, FLEET_DEAD, SWEEPS = 10_000, 20, 4
BESIDE, BESIDE_DELAY = 20, 1.0  # hubs restarted over and over beside the sweeps; each is ready 1 s after its deploy


def serve(conn, count: int, modes: dict[int, str]) -> None:
    from tests.fakehubs import FakeHubs

    with FakeHubs(count, delay=DELAY) as hubs:
        for index, mode in modes.items():
            hubs.set_mode(hubs.ports[index], mode)
        conn.send(hubs.urls)
        conn.recv()  # until the benchmark is done


def endpoints(modes: dict[int, str], count: int = HUBS):
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=serve, args=(child, count, modes), daemon=True)
    process.start()
    return process, parent, parent.recv()


def timed(targets, concurrency):
    start = time.perf_counter()
    results = sweep(targets, concurrency=concurrency, timeout=TIMEOUT)
    return time.perf_counter() - start, results


def seed_fleet(urls: list[str]) -> list[int]:
    """The monitored hubs (one per endpoint, running and healthy) and the ones operations work on; returns the ids
    of the latter."""
    from console.extensions import db
    from console.models import Cluster, Hub, Institution

    institution = Institution(slug="inst", name="Institution")
    probed = Cluster(name="probed", backend="fake", settings={"reachable": True}, state="ready")
    busy = Cluster(name="busy", backend="fake-delayed", settings={"delay": BESIDE_DELAY}, state="ready")
    db.session.add_all([institution, probed, busy])
    db.session.flush()
    rows = [{"slug": f"hub-{i:05d}", "institution_id": institution.id, "cluster_id": probed.id, "state": "running",
             "health": "healthy", "url": url, "spec": {}, "status_message": "",
             "backend_state": {"deployed": True, "slug": f"hub-{i:05d}", "url": url}} for i, url in enumerate(urls)]
    rows += [{"slug": f"busy-{i:02d}", "institution_id": institution.id, "cluster_id": busy.id, "state": "running",
              "health": "healthy", "url": None, "spec": {}, "status_message": "",
              "backend_state": {"deployed": True, "slug": f"busy-{i:02d}", "url": "http://busy.invalid/"}}
             for i in range(BESIDE)]
    db.session.execute(db.insert(Hub), rows)
    db.session.commit()
    return list(db.session.execute(db.select(Hub.id).where(Hub.cluster_id == busy.id)).scalars())


def restart_forever(app, hub_ids: list[int], stop: threading.Event) -> None:
    """Queue a restart of every busy hub that has none in flight, every half second: operations beside the sweeps."""
    from console.extensions import db
    from console.models import OPERATION_PENDING, Hub, Operation
    from console.services import operations

    with app.app_context():
        while not stop.wait(0.5):
            busy = set(db.session.execute(db.select(Operation.hub_id).where(
                Operation.state.in_(OPERATION_PENDING), Operation.hub_id.in_(hub_ids))).scalars())
            for hub_id in set(hub_ids) - busy:
                operations.enqueue(db.session.get(Hub, hub_id), "restart", "bench")
            db.session.commit()
            db.session.remove()


def fleet(count: int, sweeps: int) -> None:
    """The monitor over ``count`` hubs with operations beside it; prints sweeps, RSS, the longest sample gap."""
    from flask_migrate import upgrade

    from console import create_app
    from console.extensions import db
    from console.models import HubSample, Operation
    from console.monitor import Monitor
    from console.worker import Worker

    process, conn, urls = endpoints({i: "blackhole" for i in range(FLEET_DEAD // 2)} |
                                    {i: "refused" for i in range(FLEET_DEAD // 2, FLEET_DEAD)}, count)
    app = create_app({"DATA_DIR": tempfile.mkdtemp(prefix="hubfleet-bench-sweep-"), "SECRET_KEY": "bench",
                      "DATABASE_URL": f"sqlite:///{tempfile.mkdtemp()}/console.sqlite", "WORKER_POLL_SECONDS": 0.05,
                      "PROBE_CONCURRENCY": POOL, "PROBE_TIMEOUT": TIMEOUT, "RECHECK_SECONDS": 1.0})
    every = float(app.config["PROBE_SECONDS"])
    ticks: list[tuple[float, float, bool]] = []  # (start, seconds, was a sweep)

    class TimedMonitor(Monitor):
        def tick(self) -> None:
            sweeping = time.monotonic() >= self.next_sweep
            began = time.monotonic()
            super().tick()
            ticks.append((began, time.monotonic() - began, sweeping))

    try:
        with app.app_context():
            upgrade()
            busy = seed_fleet(urls)
            db.session.remove()
        stop = threading.Event()
        threads = [threading.Thread(target=TimedMonitor(app).run, args=(stop,), daemon=True),
                   threading.Thread(target=Worker(app, owner="bench").run, args=(stop,), daemon=True),
                   threading.Thread(target=restart_forever, args=(app, busy, stop), daemon=True)]
        began = time.monotonic()
        reset = reset_peak_rss()
        for thread in threads:
            thread.start()
        while sum(sweep for _, _, sweep in ticks) < sweeps and time.monotonic() - began < sweeps * every + 120:
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(60)
        running_peak = peak_rss() if reset else None
        with app.app_context():
            samples = defaultdict(list)
            for hub_id, at in db.session.execute(db.select(HubSample.hub_id, HubSample.at)
                                                 .where(HubSample.hub_id.not_in(busy))
                                                 .order_by(HubSample.hub_id, HubSample.at)):
                samples[hub_id].append(at)
            gaps = [(b - a).total_seconds() for ats in samples.values() for a, b in zip(ats, ats[1:])]
            done = db.session.execute(db.select(db.func.count()).where(Operation.kind == "restart",
                                                                       Operation.outcome == "succeeded")).scalar()
    finally:
        conn.send("done")
        process.join(30)
    walls = [seconds for _, seconds, sweep in ticks if sweep]
    rechecks = [seconds for _, seconds, sweep in ticks if not sweep]
    print(f"monitor over {count:,} hubs ({FLEET_DEAD} dead), probe interval {every:g} s, pool {POOL}, "
          f"timeout {TIMEOUT}s, SQLite; a worker restarting {BESIDE} other hubs beside it")
    print(f"sweeps                  {len(walls):8d}     wall each: " + ", ".join(f"{w:.1f}" for w in walls) + " s"
          f"   (aim: under 25 s)")
    print(f"ticks between sweeps    {len(rechecks):8d}     longest {max(rechecks, default=0):.2f} s")
    print(f"samples                 {sum(map(len, samples.values())):8d}     of {len(samples):,} hubs")
    print(f"longest gap between two samples of one hub  {max(gaps, default=0):.1f} s")
    print(f"operations finished beside the sweeps       {done}")
    if running_peak is not None:
        print(f"peak RSS while watching {running_peak:8.1f} MiB   (aim: under 200 MB)")
    print(f"peak RSS of the process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.1f} MiB   "
          f"(start-up and seeding included)")


def reset_peak_rss() -> bool:
    """Start counting this process's peak RSS afresh (Linux), so start-up is not in it; False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss() -> float:
    """This process's peak RSS in MiB since start, or since :func:`reset_peak_rss`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial-sample", type=int, default=HUBS // 4,
                        help="probe only this many hubs serially and scale up (the full serial run takes 2 minutes)")
    parser.add_argument("--fleet", type=int, default=FLEET, help="hubs the monitor watches in part 2")
    parser.add_argument("--sweeps", type=int, default=SWEEPS, help="sweeps the monitor makes in part 2")
    parser.add_argument("--fleet-only", action="store_true", help="skip part 1")
    args = parser.parse_args()
    if not args.fleet_only:
        single_sweep(args)
    fleet(args.fleet, args.sweeps)


def single_sweep(args) -> None:
    modes = {i: "slow" for i in range(0, SLOW)}
    modes.update({i: "blackhole" for i in range(SLOW, SLOW + BLACKHOLE)})
    modes.update({i: "refused" for i in range(SLOW + BLACKHOLE, SLOW + BLACKHOLE + REFUSED)})
    process, conn, urls = endpoints(modes)
    targets = [Target(i, url, "token") for i, url in enumerate(urls)]
    try:
        wall, results = timed(targets, POOL)
        up = sum(r.up for r in results)
        sample = targets[:: max(1, HUBS // args.serial_sample)][:args.serial_sample]
        serial, _ = timed(sample, 1)
        serial_full = serial * HUBS / len(sample)
    finally:
        conn.send("done")
        process.join(30)
    healthy_process, healthy_conn, healthy_urls = endpoints({})
    try:
        baseline, _ = timed([Target(i, url, "token") for i, url in enumerate(healthy_urls)], POOL)
    finally:
        healthy_conn.send("done")
        healthy_process.join(30)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"hubs {HUBS}: {SLOW} slow ({DELAY}s), {BLACKHOLE} never answer, {REFUSED} refuse; pool {POOL}, "
          f"timeout {TIMEOUT}s")
    print(f"concurrent sweep        {wall:8.2f} s   ({up} up)")
    print(f"serial sweep            {serial_full:8.2f} s   "
          f"({'measured' if len(sample) == HUBS else f'{len(sample)} probed, scaled'})")
    print(f"ratio                   {serial_full / wall:8.1f} x")
    print(f"all-healthy sweep       {baseline:8.2f} s   (dead hubs added {wall - baseline:.2f} s; one timeout is "
          f"{TIMEOUT}s)")
    print(f"peak RSS                {rss:8.1f} MiB")


if __name__ == "__main__":
    main()
