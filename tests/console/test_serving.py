"""`hubfleet serve` as run in production: gunicorn web processes with `hubfleet worker` and `hubfleet monitor` beside
them (restarted when they die, stopped with the console), open connections that do not use the server up, and
overload answered with 503 at once instead of a hang."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    def __init__(self, data: Path, *args: str, **settings):
        self.port = _free_port()
        self.log = data / "serve.log"
        env = {**os.environ, "HUBFLEET_DATA_DIR": str(data), "HUBFLEET_SECRET_KEY": "test-secret",
               **{f"HUBFLEET_{key}": str(value) for key, value in settings.items()}}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "console.cli", "serve", "--port", str(self.port),
                                             *args], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.2)

    def children(self) -> dict[str, list[psutil.Process]]:
        """The console's live child processes by kind: "web", "worker", "monitor"."""
        kinds = {"web": [], "worker": [], "monitor": []}
        for child in psutil.Process(self.process.pid).children():
            try:
                command = child.cmdline()
            except psutil.Error:  # gone, or a zombie not yet reaped
                continue
            kinds["worker" if "worker" in command else "monitor" if "monitor" in command else "web"].append(child)
        return kinds

    def wait_for(self, counts: list[int]) -> dict[str, list[psutil.Process]]:
        """The children once there are ``counts`` [web, worker, monitor] of them (web processes boot after the
        first answers)."""
        deadline = time.monotonic() + 30
        while True:
            kinds = self.children()
            if [len(found) for found in kinds.values()] == counts:
                return kinds
            assert time.monotonic() < deadline, (kinds, self.log.read_text())
            time.sleep(0.2)

    def stop(self) -> list[psutil.Process]:
        """SIGTERM, as systemd stops it; returns the processes it had, for the caller to check they are gone."""
        family = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(90)
        return family


def _response(sock: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body) read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"EOF"
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _request(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: console\r\n\r\n")
    return _response(sock)


def test_web_processes_with_one_worker_and_one_monitor_beside_them(tmp_path):
    console = Served(tmp_path, "--workers", "2")
    try:
        kinds = console.wait_for([2, 1, 1])
        assert "--no-monitor" in kinds["worker"][0].cmdline()

        # a dead monitor is started again (after a second's backoff); the web processes are untouched
        dead = kinds["monitor"][0]
        dead.kill()
        deadline = time.monotonic() + 15
        while not (monitors := console.children()["monitor"]) or monitors[0].pid == dead.pid:
            assert time.monotonic() < deadline, console.log.read_text()
            time.sleep(0.2)
        assert f"monitor (pid {dead.pid}) exited" in console.log.read_text()
        assert {p.pid for p in console.children()["web"]} == {p.pid for p in kinds["web"]}
    finally:
        family = console.stop()
    assert console.process.returncode == 0
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_no_worker_when_they_run_elsewhere(tmp_path):
    console = Served(tmp_path, "--workers", "1", "--no-worker")
    try:
        console.wait_for([1, 0, 0])
        time.sleep(2)  # and no worker or monitor comes later
        console.wait_for([1, 0, 0])
    finally:
        console.stop()


def test_open_connections_do_not_keep_new_clients_out(tmp_path):
    console = Served(tmp_path, "--workers", "1", "--no-worker")
    held = []
    try:
        # 300 clients that each made a request and keep their connection open, like fleet pages between two polls
        for _ in range(300):
            held.append(socket.create_connection(("127.0.0.1", console.port), timeout=10))
            assert _request(held[-1]).startswith(b"HTTP/1.1 200"), len(held)
        started = time.perf_counter()
        response = httpx.get(console.url + "/login", timeout=10)
        assert response.status_code == 200
        assert time.perf_counter() - started < 5  # not after the 80 s a full server kept a new client waiting
    finally:
        for sock in held:
            sock.close()
        console.stop()


def test_overload_is_answered_503_at_once(tmp_path):
    # One web process of one thread that holds two requests at most (one running, one waiting).
    console = Served(tmp_path, "--workers", "1", "--no-worker", SERVE_THREADS=1, SERVE_MAX_INFLIGHT=2)
    time.sleep(1)  # the start's requests are done with
    # A client that sends half a request holds the only thread while it waits for the rest; a second one waits.
    slow = socket.create_connection(("127.0.0.1", console.port), timeout=10)
    waiting = socket.create_connection(("127.0.0.1", console.port), timeout=0.5)
    try:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: console\r\n")
        time.sleep(0.5)
        waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: console\r\n\r\n")
        with pytest.raises(TimeoutError):
            waiting.recv(1)  # queued behind the slow one, not refused
        waiting.settimeout(10)
        started = time.perf_counter()
        refused = httpx.get(console.url + "/healthz", timeout=10)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "2"
        assert "busy" in refused.text
        assert time.perf_counter() - started < 5  # at once, not after the held request

        slow.sendall(b"\r\n")  # the held request completes, and the waiting one is served after it, as usual
        assert _response(slow).startswith(b"HTTP/1.1 200")
        assert _response(waiting).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)
        assert _request(slow).startswith(b"HTTP/1.1 200")
    finally:
        slow.close()
        waiting.close()
        console.stop()


def test_backends_are_imported_before_the_web_processes_fork(tmp_path):
    """The Kubernetes client takes seconds to import: a web process that imported it at its first hub page held
    every other request of its process on the import lock meanwhile (all of them stalled ~5 s in the load benchmark).
    `hubfleet serve` imports the backends in the master, so each forked web process starts with them."""
    script = f"""
import sys
from console import create_app, serving
app = create_app({{"DATA_DIR": {str(tmp_path)!r}, "SECRET_KEY": "test-secret"}})
before = "clusters.kubernetes" in sys.modules
serving.ConsoleArbiter.run = lambda self: print(before, "clusters.kubernetes" in sys.modules)  # instead of forking
serving.serve(app, "127.0.0.1", 0, with_background=False, workers=1)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]  # not imported by creating the app; imported before the fork
