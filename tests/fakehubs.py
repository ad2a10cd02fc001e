"""Many small HTTP servers on loopback that answer like JupyterHub's /hub/health, /hub/api/, /hub/metrics and
/hub/api/users?state=active (paginated as JupyterHub pages it when asked with its pagination media type).

A stand-in for a fleet of real hubs where the point is the console's side (probing 1,000 hubs, alerting), which
real JupyterHub processes could not provide at that count on one machine.  Each endpoint has a mode:
``ok``; ``slow`` (answers after ``delay`` seconds); ``blackhole`` (accepts, never answers); ``error`` (503);
``refused`` (nothing listens).  Modes can be changed while running.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from urllib.parse import parse_qs, urlsplit

METRICS = """# HELP jupyterhub_running_servers the number of user servers currently running
# TYPE jupyterhub_running_servers gauge
jupyterhub_running_servers {running}
# HELP jupyterhub_total_users total number of users
# TYPE jupyterhub_total_users gauge
jupyterhub_total_users {users}
# HELP jupyterhub_active_users number of users who were active in the given time period
# TYPE jupyterhub_active_users gauge
jupyterhub_active_users{{period="24h"}} {active}
jupyterhub_active_users{{period="7d"}} {active}
jupyterhub_active_users{{period="30d"}} {users}
# HELP jupyterhub_server_spawn_duration_seconds time taken for server spawning operation
# TYPE jupyterhub_server_spawn_duration_seconds histogram
jupyterhub_server_spawn_duration_seconds_bucket{{le="+Inf",status="success"}} {spawns}
jupyterhub_server_spawn_duration_seconds_count{{status="success"}} {spawns}
jupyterhub_server_spawn_duration_seconds_sum{{status="success"}} 12.5
jupyterhub_server_spawn_duration_seconds_bucket{{le="+Inf",status="failure"}} {failures}
jupyterhub_server_spawn_duration_seconds_count{{status="failure"}} {failures}
jupyterhub_server_spawn_duration_seconds_sum{{status="failure"}} 1.0
"""


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


class FakeHubs:
    def __init__(self, count: int, delay: float = 1.0):
        self.ports = free_ports(count)
        self._index = {port: index for index, port in enumerate(self.ports)}  # a list's index() is slow at 10,000
        self.modes = {port: "ok" for port in self.ports}
        self.delay = delay
        self.failures = {port: 0 for port in self.ports}
        # port -> the users /hub/api/users?state=active lists (JupyterHub user models), and the largest page
        self.users: dict[int, list[dict]] = {port: [] for port in self.ports}
        self.page_limit = 200
        # port -> the one token its users API accepts (unset: any token), as a hub knows its services' tokens
        self.tokens: dict[int, str] = {}
        self.user_requests: list[tuple[int, str, dict[str, str]]] = []  # (port, path, headers) of each users call
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._servers: dict[int, asyncio.Server] = {}
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/" for port in self.ports]

    def __enter__(self) -> FakeHubs:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start_all(), self._loop).result(60)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop_all(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def set_mode(self, port: int, mode: str) -> None:
        asyncio.run_coroutine_threadsafe(self._set_mode(port, mode), self._loop).result(10)

    async def _set_mode(self, port: int, mode: str) -> None:
        self.modes[port] = mode
        if mode == "refused" and port in self._servers:
            server = self._servers.pop(port)
            server.close()
            await server.wait_closed()
        elif mode != "refused" and port not in self._servers:
            await self._listen(port)

    async def _start_all(self) -> None:
        for port in self.ports:
            await self._listen(port)

    async def _stop_all(self) -> None:
        # Connections still held open (blackholes, slow answers) end here, before the loop stops.
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for server in self._servers.values():
            server.close()
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()

    async def _listen(self, port: int) -> None:
        self._servers[port] = await asyncio.start_server(
            lambda r, w, port=port: self._handle(port, r, w), "127.0.0.1", port, reuse_address=True)

    async def _handle(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while request := await reader.readline():  # keep-alive: several requests per connection
                headers = {}
                while (line := (await reader.readline()).strip()):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                self.requests += 1
                mode = self.modes[port]
                if mode == "blackhole":
                    await asyncio.sleep(3600)
                if mode == "slow":
                    await asyncio.sleep(self.delay)
                status, body, kind = self._answer(port, mode, request, headers)
                data = body.encode()
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(data)}\r\n"
                             f"\r\n".encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _answer(self, port: int, mode: str, request: bytes, headers: dict[str, str]) -> tuple[int, str, str]:
        path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else "/"
        if mode == "error":
            return 503, '{"status": 503}', "application/json"
        if path.startswith("/hub/health"):
            return 200, "{}", "application/json"
        if path.startswith("/hub/api/users"):
            self.user_requests.append((port, path, headers))
            return self._users(port, path, headers)
        if path.startswith("/hub/api/"):
            return 200, '{"version": "5.3.0"}', "application/json"
        if path.startswith("/hub/metrics"):
            index = self._index[port]
            return 200, METRICS.format(running=index % 7, users=20 + index % 50, active=index % 13,
                                       spawns=100 + index, failures=self.failures[port]), "text/plain; version=0.0.4"
        return 404, "{}", "application/json"

    def _users(self, port: int, path: str, headers: dict[str, str]) -> tuple[int, str, str]:
        """JupyterHub's user list: 403 without a token (or with another than ``tokens`` names for the port); with
        state=active only users with a server; pages of ``offset``/``limit`` (capped at ``page_limit``) with
        ``_pagination`` when the pagination type is accepted, else the first page as a bare list."""
        given = headers.get("authorization", "")
        if not given.startswith("token ") or (port in self.tokens and given != f"token {self.tokens[port]}"):
            return 403, '{"status": 403, "message": "Missing or invalid credentials"}', "application/json"
        query = {key: values[0] for key, values in parse_qs(urlsplit(path).query).items()}
        users = self.users[port]
        if query.get("state") == "active":
            users = [user for user in users if user.get("servers")]
        offset = int(query.get("offset", 0))
        limit = min(int(query.get("limit", self.page_limit)), self.page_limit)
        items = users[offset:offset + limit]
        if "application/jupyterhub-pagination+json" not in headers.get("accept", ""):
            return 200, json.dumps(items), "application/json"
        following = None
        if offset + limit < len(users):
            following = {"offset": offset + limit, "limit": limit,
                         "url": f"http://127.0.0.1:{port}/hub/api/users?offset={offset + limit}&limit={limit}"}
        return 200, json.dumps({"items": items, "_pagination": {"offset": offset, "limit": limit,
                                                                  "total": len(users), "next": following}}), \
            "application/jupyterhub-pagination+json"
