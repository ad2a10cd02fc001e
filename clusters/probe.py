"""Probe many hubs at once: a bounded pool of concurrent requests, each hub within its own time budget.

``sweep(targets)`` asks every hub ``GET /hub/health``, then ``GET /hub/api/`` (version) and ``GET /hub/metrics``
(with the hub's read-only service token), and returns one :class:`ProbeResult` per target.  A hub that is slow or
dead costs at most ``timeout`` seconds of one pool slot, so while fewer hubs are dead than the pool has slots, the
whole sweep takes at most one timeout longer than it would with every hub alive.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

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


MAX_BODY = 4 * 1024 * 1024  # a hub's answer larger than this is refused, not read into memory


class ProtocolError(Exception):
    """The hub's answer was not HTTP this client understands."""


class _Connection:
    """One keep-alive HTTP/1.1 connection to one hub, for the few GETs of its probe.

    A probe sweep makes three requests to each of thousands of hubs, each on its own host and port: a general
    client's per-request machinery (pools, middleware, its async backend) costs several times what the requests
    themselves do, so the sweep speaks the little HTTP it needs over asyncio streams.  Redirects are not followed.
    """

    def __init__(self, url: str, tls: ssl.SSLContext):
        parts = urlsplit(url)
        self.secure = parts.scheme == "https"
        self.host, self.port = parts.hostname or "", parts.port or (443 if self.secure else 80)
        self.authority = parts.netloc.rpartition("@")[2]
        self.base = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.tls = tls
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """GET ``path`` (relative to the hub's URL); returns (status, body)."""
        if self.writer is None:
            try:
                self.reader, self.writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.tls if self.secure else None,
                    server_hostname=self.host if self.secure else None)
            except OSError as exc:
                raise ConnectionError("ConnectError") from exc
        lines = [f"GET {self.base}{path} HTTP/1.1", f"Host: {self.authority}", "Accept: */*",
                 *(f"{name}: {value}" for name, value in headers.items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            status_line = await self.reader.readline()
            fields = status_line.split(None, 2)
            if len(fields) < 2 or not fields[0].startswith(b"HTTP/1.") or not fields[1].isdigit():
                raise ProtocolError("RemoteProtocolError")
            found: dict[str, str] = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                found[name.strip().lower()] = value.strip()
            if "chunked" in found.get("transfer-encoding", "").lower():
                body = b""
                while size := int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16):
                    if len(body) + size > MAX_BODY:
                        raise ProtocolError("answer too large")
                    body += await self.reader.readexactly(size)
                    await self.reader.readexactly(2)
                while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
            elif "content-length" in found:
                if int(found["content-length"]) > MAX_BODY:
                    raise ProtocolError("answer too large")
                body = await self.reader.readexactly(int(found["content-length"]))
            else:
                body = await self.reader.read(MAX_BODY + 1)  # the answer ends with the connection
                if len(body) > MAX_BODY:
                    raise ProtocolError("answer too large")
                found["connection"] = "close"
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise ConnectionError("ReadError") from exc
        except ValueError as exc:
            raise ProtocolError("RemoteProtocolError") from exc
        if found.get("connection", "").lower() == "close":
            self.close()
        return int(fields[1]), body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def _probe(target: Target, timeout: float, tls: ssl.SSLContext) -> ProbeResult:
    start = time.monotonic()
    result = ProbeResult(key=target.key, up=False, duration=0.0)
    connection = _Connection(target.url, tls)
    try:
        async with asyncio.timeout(timeout):
            status, _ = await connection.get("hub/health", {})
            if status != 200:
                result.error = f"/hub/health answered {status}"
                return result
            result.up = True
            status, body = await connection.get("hub/api/", {})
            if status == 200:
                result.version = json.loads(body).get("version")
            headers = {"Authorization": f"token {target.token}"} if target.token else {}
            status, body = await connection.get("hub/metrics", headers)
            if status == 200:
                for key, value in parse_metrics(body.decode("utf-8", "replace")).items():
                    setattr(result, key, value)
    except TimeoutError:
        result.error = f"no answer within {timeout:g}s"
    except (ConnectionError, ProtocolError) as exc:
        result.error = str(exc)
    except (ValueError, AttributeError):
        result.error = "the hub's answer could not be read"
    finally:
        connection.close()
        result.duration = time.monotonic() - start
    return result


async def _sweep(targets: list[Target], concurrency: int, timeout: float) -> list[ProbeResult]:
    """``concurrency`` workers take hubs from one queue; each probe opens one connection to its hub."""
    queue: asyncio.Queue[tuple[int, Target]] = asyncio.Queue()
    for index, target in enumerate(targets):
        queue.put_nowait((index, target))
    results: list[ProbeResult | None] = [None] * len(targets)
    tls = ssl.create_default_context()  # built once, shared: building one per connection is slow

    async def work() -> None:
        while not queue.empty():
            index, target = queue.get_nowait()
            results[index] = await _probe(target, timeout, tls)

    await asyncio.gather(*(work() for _ in range(min(concurrency, len(targets)))))
    return results


def sweep(targets: list[Target], concurrency: int = 64, timeout: float = 2.0) -> list[ProbeResult]:
    """Probe every target; returns results in the targets' order. Never raises for a hub's failure."""
    if not targets:
        return []
    return asyncio.run(_sweep(list(targets), concurrency, timeout))
