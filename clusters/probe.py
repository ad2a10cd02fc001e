"""Probe many hubs at once: a bounded pool of concurrent requests, each hub within its own time budget.

``sweep(targets)`` asks every hub ``GET /hub/health``, then ``GET /hub/api/`` (version), ``GET /hub/metrics`` and,
with the hub's read-only service token, ``GET /hub/api/users?state=active`` page by page (whose servers run, since
when, last active: what "My hubs" shows), and returns one :class:`ProbeResult` per target.  The users a target names
as ``running`` whom that list no longer has are asked for one by one (``GET /hub/api/users/{name}
?include_stopped_servers``), so the hub itself says when their servers stopped (usage accounting).

A hub that is slow or dead costs at most ``timeout`` seconds of one pool slot, so while fewer hubs are dead than the
pool has slots, the whole sweep takes at most one timeout longer than it would with every hub alive.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Target:
    key: int  # the caller's id for the hub
    url: str  # the hub's public URL, ending in "/"
    token: str | None = None
    running: tuple[str, ...] = ()  # users the caller holds as running: asked when no longer listed (ServerStop)


@dataclass(frozen=True)
class ServerSeen:
    """One user's server as the hub reported it: state "running" or "pending", times in naive UTC."""

    username: str
    state: str
    started: datetime | None = None
    last_activity: datetime | None = None


@dataclass(frozen=True)
class ServerStop:
    """What the hub says of a server the caller held as running that its active list no longer has.

    JupyterHub sets a server's last activity to the moment it stops it (``User.stop``), so a stopped server's
    ``last_activity`` is its stop time.  ``stopped`` None: the hub cannot say (the user is gone, the token may not
    read them, or the server has no record).  ``restarted``: the server runs again, since then (a new session).
    """

    username: str
    stopped: datetime | None = None
    restarted: datetime | None = None


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
    # The active users' servers; None when they were not asked or could not be read (nothing is known then).
    servers: list[ServerSeen] | None = None
    servers_complete: bool = True  # False: more pages than MAX_USER_PAGES, so a user not listed may still be active
    stops: list[ServerStop] = field(default_factory=list)  # of the target's ``running`` users no longer listed


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


USERS_PAGE = 200  # JupyterHub's default largest page
MAX_USER_PAGES = 50  # at most this many pages of active users per hub and sweep (10,000 users)
MAX_STOP_LOOKUPS = 25  # at most this many stopped servers asked about per hub and sweep; the rest at the next one
PAGINATION = "application/jupyterhub-pagination+json"


def _when(value) -> datetime | None:
    """A JupyterHub timestamp ("2026-11-29T20:45:11.123456Z") as naive UTC; None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def parse_users(items: list) -> list[ServerSeen]:
    """The servers of ``GET /hub/api/users?state=active`` items: a user's default server when they have one, else
    their first named one; pure.  A server that is not ready is pending, whatever it is doing."""
    seen = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        servers = item.get("servers") if isinstance(item.get("servers"), dict) else {}
        server = servers.get("") or next(iter(servers.values()), None)
        if not isinstance(server, dict):
            continue
        state = "running" if server.get("ready") and not server.get("pending") else "pending"
        seen.append(ServerSeen(item["name"], state, _when(server.get("started")),
                               _when(server.get("last_activity")) or _when(item.get("last_activity"))))
    return seen


def parse_stop(username: str, status: int, body: bytes) -> ServerStop:
    """What ``GET /hub/api/users/{name}?include_stopped_servers`` answered of the user's server (the default one,
    else their first named one); pure.  A 404 or 403, or a model without that server, says nothing: ``stopped``
    None."""
    model = json.loads(body) if status == 200 else None
    if not isinstance(model, dict):
        return ServerStop(username)
    servers = model.get("servers") if isinstance(model.get("servers"), dict) else {}
    server = servers.get("") or next(iter(servers.values()), None)
    if not isinstance(server, dict):
        return ServerStop(username)
    started = _when(server.get("started"))
    if started is not None and not server.get("stopped"):
        return ServerStop(username, restarted=started)
    return ServerStop(username, stopped=_when(server.get("last_activity")) or _when(model.get("last_activity")))


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
        lines = [f"GET {self.base}{path} HTTP/1.1", f"Host: {self.authority}",
                 *([] if "Accept" in headers else ["Accept: */*"]),
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


async def _active_servers(connection: _Connection, headers: dict[str, str]) -> tuple[list[ServerSeen] | None, bool]:
    """(every active user's server, whether that is all of them), following ``_pagination.next`` for at most
    ``MAX_USER_PAGES`` pages; (None, False) when the hub refuses (a token without ``list:users``) or answers
    something else than pages."""
    headers = {**headers, "Accept": PAGINATION}
    seen: list[ServerSeen] = []
    offset = 0
    for _ in range(MAX_USER_PAGES):
        status, body = await connection.get(f"hub/api/users?state=active&offset={offset}&limit={USERS_PAGE}",
                                             headers)
        page = json.loads(body) if status == 200 else None
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            return None, False
        seen += parse_users(page["items"])
        following = (page.get("_pagination") or {}).get("next")
        if not isinstance(following, dict) or not isinstance(following.get("offset"), int) or \
                following["offset"] <= offset:
            return seen, True
        offset = following["offset"]
    return seen, False


async def _stops(connection: _Connection, headers: dict[str, str], usernames: list[str]) -> list[ServerStop]:
    """Ask the hub about each of ``usernames`` (at most ``MAX_STOP_LOOKUPS``); an answer other than 200, 403 or 404
    (a hub in trouble) stops the asking: those not asked are asked at the next sweep."""
    found = []
    for name in usernames[:MAX_STOP_LOOKUPS]:
        status, body = await connection.get(f"hub/api/users/{quote(name, safe='')}?include_stopped_servers=1",
                                             headers)
        if status not in (200, 403, 404):
            break
        found.append(parse_stop(name, status, body))
    return found


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
            if target.token:
                result.servers, result.servers_complete = await _active_servers(connection, headers)
                if result.servers is not None and result.servers_complete and target.running:
                    listed = {server.username for server in result.servers}
                    result.stops = await _stops(connection, headers,
                                                [name for name in target.running if name not in listed])
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
