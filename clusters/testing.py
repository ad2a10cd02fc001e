"""Test doubles for backends: first-class, registered like the real ones.

They keep all they know in the ``state`` dict the console stores, so they behave the same in the web process, an
in-process worker or a separate ``hubfleet worker``.

- ``fake``: deploys instantly and is ready at once.
- ``fake-slow``: takes ``delay`` seconds to deploy (default 2), blocking the caller.
- ``fake-delayed``: deploys at once and becomes ready ``delay`` seconds later (default 5), as a real hub does.
- ``fake-never-ready``: deploys, runs, never answers health.
- ``fake-failing``: every deploy raises :class:`BackendError`.

Any of them fails a deploy whose config says ``{"FakeBackend": {"fail_deploy": true}}``, as a release whose
settings break JupyterHub would.
"""
from __future__ import annotations

import hashlib
import json
import time

# Hubs of the fakes that a test declared dead (``FakeBackend.kill``), by slug: alive() answers False for them
# until their next deploy, as a killed local hub's process table would.
_killed: set[str] = set()
# Lines a test made the fakes' hubs write to their logs (``FakeBackend.write_log``), by slug; gone with the hub.
_logs: dict[str, list[str]] = {}

from clusters.base import BackendError, HubLog, HubSpec, HubStatus, Log, register


@register("fake")
class FakeBackend:
    """``reachable``: the hubs' URLs answer HTTP (a test points them at stand-in servers), so probe them;
    ``probe_token``: the token the probe sends them (none by default)."""

    supervised = True
    render_target = "local"

    def __init__(self, delay: float = 0.0, reachable: bool = False, probe_token: str | None = None, **_ignored):
        self.delay = float(delay)
        self.reachable = reachable
        self.probe_token = probe_token

    @staticmethod
    def kill(slug: str) -> None:
        """Make the hub ``slug`` look as if its processes died (tests of supervision)."""
        _killed.add(slug)

    @staticmethod
    def write_log(slug: str, *lines: str) -> None:
        """Append ``lines`` to the log of the hub ``slug``, as if the hub had written them (tests of log views)."""
        _logs.setdefault(slug, []).extend(lines)

    @staticmethod
    def fingerprint(spec: HubSpec) -> str:
        # The state is stored by the console, so it keeps a digest of the config, never the config (secrets).
        return hashlib.sha256(json.dumps([spec.config, spec.secrets, spec.jupyterhub_version], sort_keys=True).encode()).hexdigest()

    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict:
        if spec.config.get("FakeBackend", {}).get("fail_deploy"):
            raise BackendError(f"{spec.slug} refuses this configuration")
        if state.get("deployed") and state.get("config") == self.fingerprint(spec) and spec.slug not in _killed:
            log(f"{spec.slug} already deployed")
            return state
        if self.delay:
            log(f"deploying {spec.slug} (takes {self.delay:g}s)")
            time.sleep(self.delay)
        log(f"deployed {spec.slug}")
        _killed.discard(spec.slug)
        return {"deployed": True, "slug": spec.slug, "url": f"http://{spec.slug}.fake.invalid/", "config": self.fingerprint(spec),
                "version": spec.jupyterhub_version or "fake",
                "restarts": state.get("restarts", 0)}

    def restart(self, spec: HubSpec, state: dict, log: Log) -> dict:
        state = self.deploy(spec, {}, log)
        return {**state, "restarts": state.get("restarts", 0) + 1}

    def stop(self, state: dict, log: Log) -> None:
        log("stopped")

    def backup(self, state: dict, name: str, log: Log) -> str:
        log(f"backed up as {name}")
        return name

    def restore(self, state: dict, backup: str, log: Log) -> None:
        log(f"restored {backup}")

    def remove(self, state: dict, log: Log) -> None:
        _killed.add(state.get("slug"))  # gone until deployed again
        _logs.pop(state.get("slug"), None)
        log("removed")

    def status(self, state: dict) -> HubStatus:
        if not self.alive(state):
            return HubStatus(running=False, ready=False, message="not deployed", phase="pending")
        return HubStatus(running=True, ready=True, url=state["url"], version=state.get("version", "fake"), users=0,
                         phase="succeeded")

    def alive(self, state: dict) -> bool | None:
        return bool(state.get("deployed")) and state.get("slug") not in _killed

    def log_tail(self, state: dict, lines: int = 200) -> HubLog:
        if not state.get("deployed"):
            return HubLog(reason="the hub was never deployed, so it has no log yet")
        written = [f"[I JupyterHub app] Running JupyterHub version {state.get('version', 'fake')}",
                   f"[I JupyterHub app] JupyterHub is now running at {state['url']}",
                   *_logs.get(state["slug"], [])]
        return HubLog(lines=written[-lines:] if lines > 0 else [], source=f"fake log of {state['slug']}")

    def api_url(self, state: dict) -> str | None:
        return state["url"] + "hub/api/" if self.reachable and state.get("url") else None

    def api_token(self, state: dict, purpose: str = "probe") -> str | None:
        return self.probe_token if purpose == "probe" else None


@register("fake-slow")
class SlowBackend(FakeBackend):
    def __init__(self, delay: float = 2.0, **settings):
        super().__init__(delay=delay, **{k: v for k, v in settings.items() if k == "reachable"})


@register("fake-delayed")
class DelayedBackend(FakeBackend):
    """Deploys at once; the hub answers ``delay`` seconds later.  The reconciler must not wait by blocking."""

    def __init__(self, delay: float = 5.0, **settings):
        super().__init__(**{k: v for k, v in settings.items() if k == "reachable"})
        self.delay_ready = float(delay)

    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict:
        state = super().deploy(spec, state, log)
        return state if state.get("ready_at") else {**state, "ready_at": time.time() + self.delay_ready}

    def status(self, state: dict) -> HubStatus:
        status = super().status(state)
        wait = state.get("ready_at", 0) - time.time()
        if status.ready and wait > 0:
            return HubStatus(running=True, ready=False, url=status.url, message=f"starting (ready in {wait:.1f}s)",
                             retry_after=wait, phase="progressing")
        return status


@register("fake-never-ready")
class NeverReadyBackend(FakeBackend):
    def status(self, state: dict) -> HubStatus:
        if not self.alive(state):
            return HubStatus(running=False, ready=False, message="not deployed", phase="pending")
        return HubStatus(running=True, ready=False, url=state["url"], message="health check never answers",
                         phase="progressing")


@register("fake-failing")
class FailingBackend(FakeBackend):
    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict:
        log(f"deploying {spec.slug}")
        raise BackendError("the fake backend fails every deploy")
