"""Probe many hubs at once: a bounded pool of concurrent requests, each hub within its own time budget.

``sweep(targets)`` asks every hub ``GET /hub/health``, then ``GET /hub/api/`` (version) and ``GET /hub/metrics``
(with the hub's read-only service token), and returns one :class:`ProbeResult` per target.  A hub that is slow or
dead costs at most ``timeout`` seconds of one pool slot, so while fewer hubs are dead than the pool has slots, the
whole sweep takes at most one timeout longer than it would with every hub alive.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Target:
    key: int  # the caller's id for the hub
    url: str  # the hub's public URL, ending in "/"
    token: str | None = None


@dataclass
class ProbeResult:
    key: int
    up: bool
    duration: float  # seconds for the whole probe
    error: str = ""
    version: str | None = None
    running_servers: int | None = None
    total_users: int | None = None
    active_users: dict[str, int] = field(default_factory=dict)  # period ("24h", "7d", "30d") -> users
    spawn_success: int | None = None  # cumulative counts from the spawn-duration histogram
    spawn_failure: int | None = None
    alive: bool | None = None  # False: the backend saw the hub's processes gone (no request was made)


def parse_metrics(text: str) -> dict:
    """The numbers the console keeps, from JupyterHub's Prometheus exposition; pure."""
    found: dict = {"active_users": {}}
    spawns: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jupyterhub_running_servers":
                found["running_servers"] = int(sample.value)
            elif sample.name == "jupyterhub_total_users":
                found["total_users"] = int(sample.value)
            elif sample.name == "jupyterhub_active_users":
                found["active_users"][sample.labels.get("period", "")] = int(sample.value)
            elif sample.name == "jupyterhub_server_spawn_duration_seconds_count":
                status = sample.labels.get("status", "")
                spawns[status] = spawns.get(status, 0) + sample.value
    if spawns:
        found["spawn_success"] = int(spawns.get("success", 0))
        found["spawn_failure"] = int(sum(v for k, v in spawns.items() if k != "success"))
    return found


async def _probe(client: httpx.AsyncClient, target: Target, timeout: float) -> ProbeResult:
    start = time.monotonic()
    result = ProbeResult(key=target.key, up=False, duration=0.0)
    try:
        async with asyncio.timeout(timeout):
            health = await client.get(target.url + "hub/health")
            if health.status_code != 200:
                result.error = f"/hub/health answered {health.status_code}"
                return result
            result.up = True
            info = await client.get(target.url + "hub/api/")
            if info.status_code == 200:
                result.version = info.json().get("version")
            headers = {"Authorization": f"token {target.token}"} if target.token else {}
            metrics = await client.get(target.url + "hub/metrics", headers=headers)
            if metrics.status_code == 200:
                for key, value in parse_metrics(metrics.text).items():
                    setattr(result, key, value)
    except TimeoutError:
        result.error = f"no answer within {timeout:g}s"
    except httpx.HTTPError as exc:
        result.error = f"{exc.__class__.__name__}"
    except ValueError:
        result.error = "the hub's answer could not be read"
    finally:
        result.duration = time.monotonic() - start
    return result


async def _sweep(targets: list[Target], concurrency: int, timeout: float) -> list[ProbeResult]:
    """``concurrency`` workers, each with its own small HTTP client, take hubs from one queue.

    One client per worker keeps every connection pool tiny: a single client with a connection per hub spends more
    time managing its pool than probing once there are hundreds of hubs.
    """
    queue: asyncio.Queue[tuple[int, Target]] = asyncio.Queue()
    for index, target in enumerate(targets):
        queue.put_nowait((index, target))
    results: list[ProbeResult | None] = [None] * len(targets)
    tls = httpx.create_ssl_context()  # built once, shared: building one per client is slow
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def work() -> None:
        async with httpx.AsyncClient(timeout=timeout, limits=limits, verify=tls) as client:
            while not queue.empty():
                index, target = queue.get_nowait()
                results[index] = await _probe(client, target, timeout)

    await asyncio.gather(*(work() for _ in range(min(concurrency, len(targets)))))
    return results


def sweep(targets: list[Target], concurrency: int = 64, timeout: float = 2.0) -> list[ProbeResult]:
    """Probe every target; returns results in the targets' order. Never raises for a hub's failure."""
    if not targets:
        return []
    return asyncio.run(_sweep(list(targets), concurrency, timeout))
