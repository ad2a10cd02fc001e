"""Benchmark: one probe sweep over 1,000 hub endpoints on loopback, some slow, some dead.

The endpoints (tests/fakehubs.py) run in a separate process so that the peak RSS printed is the sweep's own.
Prints the concurrent sweep's wall time (goal: under 5 s), the same sweep done serially, their ratio, the sweep of
an all-healthy fleet (to show dead hubs fewer than the pool size add at most one timeout), and peak RSS.
Run with `make bench` (or `python -m tests.perf.bench_sweep [--serial-sample N]`).
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

from clusters.probe import Target, sweep

HUBS, SLOW, BLACKHOLE, REFUSED = 1000, 50, 20, 20
POOL, TIMEOUT, DELAY = 64, 2.0, 0.5


def serve(conn, count: int, modes: dict[int, str]) -> None:
    from tests.fakehubs import FakeHubs

    with FakeHubs(count, delay=DELAY) as hubs:
        for index, mode in modes.items():
            hubs.set_mode(hubs.ports[index], mode)
        conn.send(hubs.urls)
        conn.recv()  # until the benchmark is done


def endpoints(modes: dict[int, str]):
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=serve, args=(child, HUBS, modes), daemon=True)
    process.start()
    return process, parent, parent.recv()


def timed(targets, concurrency):
    start = time.perf_counter()
    results = sweep(targets, concurrency=concurrency, timeout=TIMEOUT)
    return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial-sample", type=int, default=HUBS,
                        help="probe only this many hubs serially and scale up (the full serial run takes minutes)")
    args = parser.parse_args()
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
