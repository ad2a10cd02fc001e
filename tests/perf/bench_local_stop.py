"""Benchmark: how long stopping a real local hub takes (aim: under 3 s).

Starts a real JupyterHub (its proxy and idle culler, as every new hub has) through the local backend, waits until it
answers, and times ``stop``: SIGTERM to all of the hub's processes, until the last one has exited.  Then the same with
a user's single-user server running.  Prints each time and whether anything had to be killed.
Run with `make bench` (or `python -m tests.perf.bench_local_stop [--rounds N]`); ports come from HUBFLEET_TEST_PORTS
("first-last", default 21000-21999).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from clusters.base import HubSpec
from clusters.local import LocalBackend
from tenants.layering import layered
from tenants.render import render_local
from tests.e2e.helpers import login_and_start_server
from tests.helpers import wait_for


def start(backend: LocalBackend, slug: str) -> dict:
    state = backend.deploy(HubSpec(slug=slug, institution="bench", config=render_local(layered(None, None, None, None),
                                                                                        {})), {}, lambda line: None)
    wait_for(lambda: backend.status(state).ready, 60, what="the hub to answer")
    return state


def timed_stop(backend: LocalBackend, state: dict) -> tuple[float, list[str]]:
    lines: list[str] = []
    began = time.perf_counter()
    backend.stop(state, lines.append)
    return time.perf_counter() - began, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ports = [int(p) for p in os.environ.get("HUBFLEET_TEST_PORTS", "21000-21999").split("-")]
    backend = LocalBackend(tempfile.mkdtemp(prefix="hubfleet-bench-stop-") + "/hubs", port_range=ports)
    plain, killed = [], 0
    for round_ in range(args.rounds):
        seconds, lines = timed_stop(backend, start(backend, f"stop-{round_}"))
        plain.append(seconds)
        killed += any(line.startswith("killed") for line in lines)
    state = start(backend, "stop-with-server")
    login_and_start_server(state["url"], "student1", "anything")
    with_server, lines = timed_stop(backend, state)
    killed += any(line.startswith("killed") for line in lines)
    print(f"stopping a real local hub (JupyterHub, proxy, idle culler), {args.rounds} rounds: "
          f"median {statistics.median(plain):.2f} s, max {max(plain):.2f} s   (aim: under 3 s)")
    print(f"stopping one with a user's server running:        {with_server:8.2f} s")
    print(f"stops that had to kill a process:                 {killed:8d}")


if __name__ == "__main__":
    main()
