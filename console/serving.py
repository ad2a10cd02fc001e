"""Serving the console in production: gunicorn's threaded workers in front, the worker and the monitor beside them.

``hubfleet serve`` becomes a gunicorn master that forks ``SERVE_WORKERS`` web processes of ``SERVE_THREADS`` threads
each (the app is built once, before the fork).  A kept-alive connection, such as an open fleet page polling every few
seconds, waits in its process's poller without holding a thread, so open tabs do not use up the server.  The same
master starts ``hubfleet worker --no-monitor`` and ``hubfleet monitor`` as its child processes and restarts either
one when it exits: one set per console, never one per web process (``--no-worker`` when they run elsewhere).

Overload is answered, not queued without end: a web process that already holds ``SERVE_MAX_INFLIGHT`` requests
(running or waiting for a thread) answers each further one at once with 503 and ``Retry-After``, from two threads
of its own and without running the app; and each process keeps accepting up to ``SERVE_CONNECTIONS`` connections,
so a new client gets an answer instead of waiting in the listen backlog.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

from clusters.base import load_builtin
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 2
BUSY_MESSAGE = b"The console is busy; try again in a moment.\n"
BACKGROUND = {"worker": ["worker", "--no-monitor"], "monitor": ["monitor"]}  # hubfleet commands serve runs beside
# gunicorn's default line plus the time the app took (in ms, from when a thread took the request up)
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
STOP_SECONDS = 60  # how long a stopping worker may take to finish its step (its own join) before it is killed


def default_workers() -> int:
    """Web processes: one per core, at least 2 (one busy with a slow page leaves another), at most 8.  Each process
    runs one core's worth of Python (its threads cover the waits on the database), costs ~150 MiB and holds up to
    SERVE_THREADS database connections.  Not more: a process more than the cores only competes with PostgreSQL, the
    worker and the monitor for them (on 2 cores, 3 processes answered the load benchmark slower than 2)."""
    return min(max(os.cpu_count() or 1, 2), 8)


# -- refusing what a process cannot serve soon ---------------------------------------------------------------------

_request = threading.local()


class _BoundedPool(futures.ThreadPoolExecutor):
    """The worker's thread pool, counting the requests it holds (queued and running).  One submitted while the count
    is over ``limit`` goes to a small pool of its own instead and runs marked as overflow, so that :class:`Shed`
    answers it 503 at once, even while every thread of the main pool is busy."""

    def __init__(self, threads: int, limit: int):
        super().__init__(max_workers=threads, thread_name_prefix="hubfleet-web")
        self.refuser = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="hubfleet-busy")
        self.limit = limit
        self.held = 0
        self._count = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        with self._count:
            self.held += 1
            overflow = self.held > self.limit
        pool = self.refuser if overflow else super()
        future = pool.submit(_run_marked, overflow, fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future) -> None:
        with self._count:
            self.held -= 1

    def shutdown(self, wait=True, **kwargs):
        self.refuser.shutdown(wait, **kwargs)
        super().shutdown(wait, **kwargs)


def _run_marked(overflow: bool, fn, *args, **kwargs):
    _request.overflow = overflow
    try:
        return fn(*args, **kwargs)
    finally:
        _request.overflow = False


class Shed:
    """WSGI middleware: a request marked as overflow gets 503 with Retry-After."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if getattr(_request, "overflow", False):
            start_response("503 Service Unavailable", [
                ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(BUSY_MESSAGE))),
                ("Retry-After", str(RETRY_AFTER_SECONDS))])
            return [BUSY_MESSAGE]
        return self.app(environ, start_response)


class ConsoleWorker(ThreadWorker):
    """gunicorn's threaded worker with a bounded pool (its documented extension point)."""

    def get_thread_pool(self):
        return _BoundedPool(self.cfg.threads, self.app.max_inflight)


# -- the worker and the monitor beside the web processes ---------------------------------------------------------

def _die_with_parent() -> None:
    # A child gets SIGTERM (and stops as on any SIGTERM) if the master dies without stopping it; its own process
    # group keeps a terminal's Ctrl-C for the master, which stops the children in order.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()


class Child:
    """One background process (``hubfleet worker``, ``hubfleet monitor``), restarted with backoff when it exits."""

    def __init__(self, name: str, argv: list[str]):
        self.name, self.argv = name, argv
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.backoff = 0.0
        self.restart_at = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.started = time.monotonic()
        logger.info("started %s (pid %s)", self.name, self.process.pid)

    def check(self) -> None:
        """Start it again if it has exited and its backoff is over (1 s, doubling up to a minute; reset after a
        minute up)."""
        if self.process is None:
            if time.monotonic() >= self.restart_at:
                self.start()
            return
        # gunicorn's master reaps any child, so the exit code may be lost (poll() then says 0): it exited all the same.
        if self.process.poll() is None:
            return
        up = time.monotonic() - self.started
        self.backoff = 1.0 if up >= 60 else min(max(1.0, 2 * self.backoff), 60.0)
        logger.error("%s (pid %s) exited after %.0f s; restarting it in %.0f s",
                     self.name, self.process.pid, up, self.backoff)
        self.process = None
        self.restart_at = time.monotonic() + self.backoff

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()

    def wait(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.error("%s (pid %s) did not stop in time; killing it", self.name, self.process.pid)
            self.process.kill()
            self.process.wait()


class ConsoleArbiter(Arbiter):
    """gunicorn's master, also keeping the console's background processes running."""

    def __init__(self, app, children: list[Child]):
        super().__init__(app)
        self.children = children

    def start(self):
        super().start()
        for child in self.children:
            child.start()

    def manage_workers(self):  # called on every turn of the master's loop (at least once a second)
        super().manage_workers()
        for child in self.children:
            child.check()

    def stop(self, graceful=True):
        # The worker finishes its step and the monitor gives up its lease while the web processes drain.
        for child in self.children:
            child.terminate()
        super().stop(graceful)
        deadline = time.monotonic() + STOP_SECONDS
        for child in self.children:
            child.wait(deadline)
        self.children = []


class ConsoleServer(BaseApplication):
    """The console app under gunicorn, configured from the console's SERVE_* settings."""

    def __init__(self, app, host: str, port: int, workers: int):
        config = app.config
        self.flask_app = app
        self.max_inflight = int(config["SERVE_MAX_INFLIGHT"])
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.options = {
            "bind": [bind], "workers": workers, "worker_class": ConsoleWorker,
            "threads": int(config["SERVE_THREADS"]), "worker_connections": int(config["SERVE_CONNECTIONS"]),
            "backlog": int(config["SERVE_BACKLOG"]), "keepalive": int(config["SERVE_KEEPALIVE"]),
            "timeout": int(config["SERVE_TIMEOUT"]), "graceful_timeout": 30, "preload_app": True,
            "proc_name": "hubfleet", "accesslog": config["SERVE_ACCESS_LOG"], "errorlog": "-", "loglevel": "info",
            "access_log_format": ACCESS_LOG_FORMAT,
            "control_socket_disable": True,
        }
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return Shed(self.flask_app)


def serve(app, host: str, port: int, with_background: bool, workers: int | None = None) -> None:
    """Serve ``app`` with gunicorn until stopped (SIGTERM, SIGINT); with ``with_background`` also run the worker and
    the monitor as child processes.  Returns when everything has stopped."""
    from console.extensions import db

    load_builtin()  # once, here: every web process starts with the backends imported (see load_builtin)
    with app.app_context():
        db.engine.dispose()  # the web processes are forked: none may inherit a connection of this process
    server = ConsoleServer(app, host, port, workers or app.config["SERVE_WORKERS"] or default_workers())
    base = [sys.executable, "-m", "console.cli"]
    children = [Child(name, base + argv) for name, argv in BACKGROUND.items()] if with_background else []
    try:
        ConsoleArbiter(server, children).run()
    except SystemExit as stop:  # the master's way to end; a clean stop is no error for the caller
        if stop.code:
            raise
