"""The concurrent sweep against loopback servers that answer like JupyterHub (tests/fakehubs.py)."""
from clusters.probe import ServerSeen, Target, parse_metrics, parse_users, sweep
from tests.fakehubs import METRICS, FakeHubs


def test_sweep_reports_each_hub_and_survives_slow_and_dead_ones():
    with FakeHubs(12, delay=0.2) as hubs:
        modes = {0: "blackhole", 1: "refused", 2: "error", 3: "slow"}
        for index, mode in modes.items():
            hubs.set_mode(hubs.ports[index], mode)
        results = sweep([Target(i, url, "token") for i, url in enumerate(hubs.urls)], concurrency=4, timeout=1.0)
    assert [r.key for r in results] == list(range(12))
    assert results[0].error == "no answer within 1s" and not results[0].up
    assert results[1].error == "ConnectError" and not results[1].up
    assert results[2].error == "/hub/health answered 503"
    assert results[3].up and results[3].duration >= 0.2
    healthy = results[5]
    assert healthy.up and healthy.version == "5.3.0" and healthy.running_servers == 5
    assert healthy.active_users == {"24h": 5, "7d": 5, "30d": 25} and healthy.spawn_success == 105


def test_parse_metrics_sums_spawn_outcomes():
    text = METRICS.format(running=2, users=9, active=4, spawns=7, failures=3)
    assert parse_metrics(text) == {"running_servers": 2, "total_users": 9, "spawn_success": 7, "spawn_failure": 3,
                                   "active_users": {"24h": 4, "7d": 4, "30d": 9}}


def test_sweep_reads_chunked_answers_and_refuses_huge_ones():
    """A hub whose server answers in chunks is read; one announcing an enormous body is refused, not buffered."""
    import socketserver
    import threading

    class Hub(socketserver.StreamRequestHandler):
        def handle(self):
            while (request := self.rfile.readline()):
                path = request.split()[1].decode()
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                if path.endswith("/hub/metrics"):
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n")
                    return
                body = b'{"version": "9.0.0"}' if path.endswith("/hub/api/") else b"ok"
                self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                                 b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:1], body[1:])) +
                                 b"0\r\n\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Hub) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            [result] = sweep([Target(1, f"http://127.0.0.1:{server.server_address[1]}/")], timeout=2.0)
        finally:
            server.shutdown()
    assert result.up and result.version == "9.0.0"
    assert result.error == "answer too large" and result.running_servers is None


def _user(name: str, ready=True, pending=None, started="2026-11-29T10:00:00.000000Z",
          last_activity="2026-11-29T11:30:00Z") -> dict:
    return {"name": name, "last_activity": last_activity, "servers": {
        "": {"name": "", "ready": ready, "pending": pending, "started": started, "last_activity": last_activity}}}


def test_parse_users_reads_each_users_default_server():
    from datetime import datetime
    items = [_user("ada"), _user("bob", ready=False, pending="spawn", started=None),
             {"name": "carl", "servers": {"gpu": {"ready": True, "started": "2026-11-29T09:00:00+01:00"}}},
             {"name": "dora", "servers": {}}, {"servers": {}}, "junk"]
    assert parse_users(items) == [
        ServerSeen("ada", "running", datetime(2026, 11, 29, 10), datetime(2026, 11, 29, 11, 30)),
        ServerSeen("bob", "pending", None, datetime(2026, 11, 29, 11, 30)),
        ServerSeen("carl", "running", datetime(2026, 11, 29, 8), None)]
    assert parse_users({"not": "a list"}) == []


def test_sweep_lists_active_servers_page_by_page_with_the_token():
    """The stand-in hub pages /hub/api/users as JupyterHub does (offset, limit, _pagination.next)."""
    with FakeHubs(3) as hubs:
        hubs.page_limit = 2
        hubs.users[hubs.ports[0]] = [_user(f"user{i}") for i in range(5)] + [{"name": "idle", "servers": {}}]
        hubs.users[hubs.ports[1]] = [_user("solo", ready=False, pending="spawn")]
        results = sweep([Target(0, hubs.urls[0], "secret"), Target(1, hubs.urls[1], "secret"),
                         Target(2, hubs.urls[2])], timeout=2.0)
        calls = list(hubs.user_requests)
    assert [s.username for s in results[0].servers] == [f"user{i}" for i in range(5)]
    assert results[0].servers_complete and {s.state for s in results[0].servers} == {"running"}
    assert results[1].servers == [ServerSeen("solo", "pending", parse_users([_user("x")])[0].started,
                                             parse_users([_user("x")])[0].last_activity)]
    assert results[2].servers is None  # no token: the users were not asked
    first = [(path, headers) for port, path, headers in calls if port == hubs.ports[0]]
    assert [path.split("offset=")[1].split("&")[0] for path, _ in first] == ["0", "2", "4"]
    assert all(h["accept"] == "application/jupyterhub-pagination+json" and h["authorization"] == "token secret"
               for _, h in first)
    assert "state=active" in first[0][0]


def test_a_hub_refusing_the_user_list_leaves_servers_unknown(monkeypatch):
    import clusters.probe as probe
    with FakeHubs(1) as hubs:
        hubs._users = lambda port, path, headers: (403, '{"status": 403}', "application/json")
        refused = sweep([Target(0, hubs.urls[0], "secret")])[0]
        hubs.users[hubs.ports[0]] = [_user(f"u{i}") for i in range(7)]
        del hubs._users
        hubs.page_limit = 2
        monkeypatch.setattr(probe, "MAX_USER_PAGES", 2)
        truncated = sweep([Target(0, hubs.urls[0], "secret")])[0]
    assert refused.up and refused.servers is None
    assert [s.username for s in truncated.servers] == ["u0", "u1", "u2", "u3"] and not truncated.servers_complete
