"""Benchmark: 10 servers started at once on one slurm hub: the time until all are ready, and the hub's memory.

Starts a real single-node Slurm cluster (``clusters.slurm_site``, as the tests do) and a real slurm hub on it through
``SlurmBackend``, then asks the hub's API for N users' servers at once (the console's check token may start any
user's server) and times until every one is ready: each is a Slurm job, submitted as the user's own system account,
whose server reports its port to the hub.  Prints the time to all ready, each server's time, the jobs' states, and
the resident memory of the hub's own processes (JupyterHub, its proxy and idle culler; the jobs are not the hub's)
before and with the servers running.  Everything is removed afterwards (hub, accounts, jobs, cluster).
Needs root and Slurm (``scripts/ensure-slurm.sh``).  Run with `make bench` (or
`python -m tests.perf.bench_slurm [--servers N]`); ports come from HUBFLEET_TEST_PORTS ("first-last", default
21000-21999).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from clusters import slurm
from clusters.base import HubSpec
from clusters.local import hub_accounts, remove_account
from clusters.slurm_backend import SlurmBackend
from clusters.slurm_site import SlurmSite, missing
from tenants.layering import layered
from tenants.render import render_local
from tests.helpers import wait_for

ENVIRONMENTS = os.environ.get("HUBFLEET_TEST_ENVIRONMENTS",
                              str(Path(tempfile.gettempdir()) / "hubfleet-test-environments"))


def rss_mb(backend: SlurmBackend, hub_dir: Path) -> float:
    return sum(p.memory_info().rss for p in backend.processes(hub_dir)) / 2 ** 20


def start_and_wait(api: httpx.Client, user: str, began: float) -> float:
    """Ask for ``user``'s server and wait until the hub says it is ready; seconds since ``began``."""
    assert api.post(f"users/{user}", json={}).status_code in (201, 409)
    answer = api.post(f"users/{user}/server", json={})
    assert answer.status_code in (201, 202), answer.text
    wait_for(lambda: (api.get(f"users/{user}").json()["servers"].get("") or {}).get("ready"), 180, interval=0.25,
             what=f"{user}'s server ready")
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10)
    args = parser.parse_args()
    reason = missing()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    ports = [int(p) for p in os.environ.get("HUBFLEET_TEST_PORTS", "21000-21999").split("-")]
    public = Path(tempfile.mkdtemp(prefix="hubfleet-bench-slurm-"))
    public.chmod(0o755)
    (public / "homes").mkdir(mode=0o755)
    site = SlurmSite().start()
    backend = SlurmBackend(str(public / "hubs"), slurm_conf=str(site.conf), port_range=ports,
                           partitions=[{"name": "debug", "max_time_minutes": 60}], homes=str(public / "homes"),
                           environments=ENVIRONMENTS)
    spec = HubSpec(slug="bench", institution="bench", config=render_local(layered(None, None, None, None), {}))
    state = {}
    try:
        state = backend.deploy(spec, {}, lambda line: None)
        wait_for(lambda: backend.status(state).ready, 60, what="the hub to answer")
        hub_dir = Path(state["dir"])
        idle = rss_mb(backend, hub_dir)
        users = [f"student{i}" for i in range(1, args.servers + 1)]
        with httpx.Client(base_url=backend.api_url(state), timeout=60,
                          headers={"Authorization": f"token {backend.api_token(state, 'check')}"}) as api, \
                ThreadPoolExecutor(len(users)) as pool:
            began = time.monotonic()
            times = list(pool.map(lambda user: start_and_wait(api, user, began), users))
            all_ready = time.monotonic() - began
        jobs = backend.jobs(state)
        busy = rss_mb(backend, hub_dir)
        print(f"{args.servers} servers started at once on one slurm hub (single-node Slurm, "
              f"{os.cpu_count()} CPUs):")
        print(f"  all ready after                  {all_ready:8.1f} s")
        print(f"  each: median {statistics.median(times):.1f} s, first {min(times):.1f} s, last {max(times):.1f} s")
        print(f"  jobs in the queue                {len(jobs):8d}  ({', '.join(sorted({j.state for j in jobs}))})")
        print(f"  hub memory (RSS of JupyterHub, proxy, idle culler)  {idle:.0f} MB idle, {busy:.0f} MB with the "
              f"servers")
    finally:
        if state:
            backend.remove(state, lambda line: None)
        for account in hub_accounts(public, prefix=True):
            remove_account(account, lambda line: None)
        left = slurm.jobs(site.env)
        site.stop()
        shutil.rmtree(public, ignore_errors=True)
        if left:
            raise SystemExit(f"jobs left after removing the hub: {left}")


if __name__ == "__main__":
    main()
