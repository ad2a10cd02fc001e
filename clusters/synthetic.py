"""A synthetic check: do what a student does, through the hub's REST API, and time it.

Create a test user, start their server, follow the hub's spawn progress until the server is ready (or the hub
reports the failure, in its own words), stop it.  Needs a token allowed to manage users and servers.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx

CHECK_USER = "hubfleet-check"


@dataclass
class CheckResult:
    ok: bool
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds
    error: str = ""


def _progress(client: httpx.Client, user: str, timeout: float) -> tuple[bool, str]:
    """Follow /server/progress until ready or failed; (ready, the hub's last message)."""
    message = ""
    with client.stream("GET", f"users/{user}/server/progress", timeout=timeout) as events:
        for line in events.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            message = event.get("message") or message
            if event.get("ready"):
                return True, message
            if event.get("failed"):
                return False, message
    return False, message or "the hub ended the progress stream without a result"


def run_check(api_url: str, token: str, log: Callable[[str], None], timeout: float = 120) -> CheckResult:
    """Run the check against the hub API at ``api_url``; never raises for the hub's failures. Safe to repeat."""
    result = CheckResult(ok=False)
    headers = {"Authorization": f"token {token}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        def step(name: str, started: float) -> None:
            result.timings[name] = round(time.monotonic() - started, 3)
            log(f"{name}: {result.timings[name]:.2f}s")

        try:
            started = time.monotonic()
            created = client.post(f"users/{CHECK_USER}")
            if created.status_code not in (201, 409):
                raise RuntimeError(f"creating the test user: {created.status_code} {created.text[:200]}")
            step("create user", started)
            started = time.monotonic()
            spawn = client.post(f"users/{CHECK_USER}/server")
            if spawn.status_code >= 500:
                # the API answer is generic; the spawn's progress stream carries the hub's own reason
                _, message = _progress(client, CHECK_USER, timeout)
                raise RuntimeError(f"the server did not start: {message or _hub_message(spawn)}")
            if spawn.status_code not in (201, 202, 400):
                raise RuntimeError(_hub_message(spawn))
            ready, message = (True, "") if spawn.status_code == 201 else _progress(client, CHECK_USER, timeout)
            if not ready:
                raise RuntimeError(f"the server did not start: {message}")
            step("spawn", started)
            started = time.monotonic()
            client.delete(f"users/{CHECK_USER}/server")
            deadline = time.monotonic() + timeout
            while client.get(f"users/{CHECK_USER}").json().get("servers"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not stop")
                time.sleep(0.25)
            step("stop", started)
            result.ok = True
        except (RuntimeError, httpx.HTTPError, ValueError) as exc:
            result.error = str(exc) if not isinstance(exc, httpx.HTTPError) else f"{exc.__class__.__name__}"
            log(f"check failed: {result.error}")
            # leave nothing running behind the failure
            try:
                client.delete(f"users/{CHECK_USER}/server")
            except httpx.HTTPError:
                pass
    return result


def _hub_message(response: httpx.Response) -> str:
    try:
        return response.json().get("message") or response.text[:300]
    except ValueError:
        return f"{response.status_code} {response.text[:300]}"
