"""Small helpers shared by tests: waiting for a condition, checking a port."""
from __future__ import annotations

import re
import socket
import time


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Call ``predicate`` until it returns something truthy; return that, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(url_or_port, host: str = "127.0.0.1") -> bool:
    port = url_or_port if isinstance(url_or_port, int) else int(re.search(r":(\d+)", url_or_port).group(1))
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class WebhookReceiver:
    """An HTTP server on loopback that records the JSON bodies POSTed to it."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"  # for OUTBOUND_ALLOW: plain http on loopback
        self.url = f"http://{self.address}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def events(self, kind: str) -> list[dict]:
        return [body for body in self.received if body["event"] == kind]
