"""The concurrent sweep against loopback servers that answer like JupyterHub (tests/fakehubs.py)."""
from clusters.probe import Target, parse_metrics, sweep
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
