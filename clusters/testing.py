"""Test doubles for backends: first-class, registered like the real ones.

They keep all they know in the ``state`` dict the console stores, so they behave the same in the web process, an
in-process worker or a separate ``hubfleet worker``.

- ``fake``: deploys instantly and is ready at once.
- ``fake-slow``: takes ``delay`` seconds to deploy (default 2).
- ``fake-never-ready``: deploys, runs, never answers health.
- ``fake-failing``: every deploy raises :class:`BackendError`.

Any of them fails a deploy whose config says ``{"FakeBackend": {"fail_deploy": true}}``, as a release whose
settings break JupyterHub would.
"""
from __future__ import annotations

import hashlib
import json
import time

from clusters.base import BackendError, HubSpec, HubStatus, Log, register


@register("fake")
class FakeBackend:
    """``reachable``: the hubs' URLs answer HTTP (a test points them at stand-in servers), so probe them."""

    def __init__(self, delay: float = 0.0, reachable: bool = False, **_ignored):
        self.delay = float(delay)
        self.reachable = reachable

    @staticmethod
    def fingerprint(spec: HubSpec) -> str:
        # The state is stored by the console, so it keeps a digest of the config, never the config (secrets).
        return hashlib.sha256(json.dumps([spec.config, spec.jupyterhub_version], sort_keys=True).encode()).hexdigest()

    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict:
        if spec.config.get("FakeBackend", {}).get("fail_deploy"):
            raise BackendError(f"{spec.slug} refuses this configuration")
        if state.get("deployed") and state.get("config") == self.fingerprint(spec):
            log(f"{spec.slug} already deployed")
            return state
        if self.delay:
            log(f"deploying {spec.slug} (takes {self.delay:g}s)")
            time.sleep(self.delay)
        log(f"deployed {spec.slug}")
        return {"deployed": True, "url": f"http://{spec.slug}.fake.invalid/", "config": self.fingerprint(spec),
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
        log("removed")

    def status(self, state: dict) -> HubStatus:
        if not state.get("deployed"):
            return HubStatus(running=False, ready=False, message="not deployed")
        return HubStatus(running=True, ready=True, url=state["url"], version=state.get("version", "fake"), users=0)

    def api_url(self, state: dict) -> str | None:
        return state["url"] + "hub/api/" if self.reachable and state.get("url") else None

    def api_token(self, state: dict, purpose: str = "probe") -> str | None:
        return None


@register("fake-slow")
class SlowBackend(FakeBackend):
    def __init__(self, delay: float = 2.0, **settings):
        super().__init__(delay=delay, **{k: v for k, v in settings.items() if k == "reachable"})


@register("fake-never-ready")
class NeverReadyBackend(FakeBackend):
    def status(self, state: dict) -> HubStatus:
        if not state.get("deployed"):
            return HubStatus(running=False, ready=False, message="not deployed")
        return HubStatus(running=True, ready=False, url=state["url"], message="health check never answers")


@register("fake-failing")
class FailingBackend(FakeBackend):
    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict:
        log(f"deploying {spec.slug}")
        raise BackendError("the fake backend fails every deploy")
