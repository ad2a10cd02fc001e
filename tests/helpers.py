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
