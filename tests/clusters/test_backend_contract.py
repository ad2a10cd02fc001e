"""The backend contract (``clusters/base.py``), checked the same way over every backend the console can drive.

- ``fake``: the test double the console's own tests use;
- ``local``: real JupyterHub processes on this machine;
- ``kubernetes``: the real ``kubernetes`` client against an HTTP Kubernetes API emulator (kmock and our fidelity layer,
  ``tests/k8s/emulator.py``), with a stand-in for Flux's helm-controller that renders the real z2jh chart
  (``tests/k8s/controller.py``); no cluster is needed.

Each backend gets the same hub — a closed one whose first admin's password hash is its one secret — rendered for the
backend's own ``render_target`` and split into config and secrets as the console splits it.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from clusters.base import PHASES, HubSpec, HubStatus, backend_class, get_backend, statuses
from clusters.local import LocalBackend, hub_accounts, remove_account
from tenants.auth import first_admin
from tenants.layering import layered
from tenants.render import render_local, render_z2jh, split_secrets
from tests.helpers import wait_for
from tests.k8s.controller import FakeHelmController
from tests.k8s.reference import needs_reference

pytestmark = pytest.mark.timeout(120)

PORTS = [int(p) for p in os.environ.get("HUBFLEET_TEST_PORTS", "21000-21999").split("-")]
ENVIRONMENTS = os.environ.get("HUBFLEET_TEST_ENVIRONMENTS",
                              str(Path(tempfile.gettempdir()) / "hubfleet-test-environments"))
ADMIN, _PASSWORD = first_admin()
SECRET = ADMIN["password_hash"]


@dataclass
class Rig:
    backend: object
    settle: Callable[[], None]  # let the platform act on what was asked (a controller pass; nothing for processes)


def hub(backend, slug: str, uid: str) -> HubSpec:
    """The same closed hub for every backend, rendered for its target, its secret apart."""
    config = layered(None, None, None, None)
    config["auth"]["first_admin"] = ADMIN
    render = render_local if backend.render_target == "local" else render_z2jh
    public, secret = split_secrets(render(config, {}))
    return HubSpec(slug=slug, institution="north", uid=uid, chart_version="4.4.0", config=public, secrets=secret)


@pytest.fixture(params=["fake", "local", pytest.param("kubernetes", marks=needs_reference)])
def rig(request, tmp_path, kube_api):
    if request.param == "fake":
        yield Rig(get_backend("fake"), lambda: None)
    elif request.param == "local":
        backend = LocalBackend(str(tmp_path / "hubs"), port_range=PORTS, environments=ENVIRONMENTS)
        yield Rig(backend, lambda: None)
        for hub_dir in (tmp_path / "hubs").glob("*"):
            if hub_dir.is_dir():
                backend._stop(hub_dir, lambda line: None)
        for account in hub_accounts(tmp_path, prefix=True):
            remove_account(account, lambda line: None)
    else:
        controller = FakeHelmController(kube_api)
        with get_backend("kubernetes", kubeconfig=kube_api.kubeconfig()) as backend:
            yield Rig(backend, controller.reconcile_all)


def until_ready(rig: Rig, state: dict) -> HubStatus:
    def ready():
        rig.settle()
        status = rig.backend.status(state)
        return status if status.ready else None
    return wait_for(ready, 60, what="the hub to be ready")


def test_every_backend_declares_what_the_console_needs(rig):
    cls = backend_class(rig.backend.name)
    assert cls.render_target in ("local", "z2jh") and isinstance(cls.supervised, bool)


def test_a_deployed_hub_becomes_ready_and_its_state_holds_no_secret(rig):
    log = []
    state = rig.backend.deploy(hub(rig.backend, "contract", "7"), {}, log.append)
    stored = json.dumps(state)  # the console stores it as JSON, in the clear
    assert SECRET not in stored and SECRET not in "\n".join(log)
    status = until_ready(rig, state)
    assert (status.running, status.phase) == (True, "succeeded")
    assert SECRET not in json.dumps(status.__dict__)


def test_a_second_deploy_of_the_same_spec_changes_nothing(rig):
    spec = hub(rig.backend, "again", "8")
    state = rig.backend.deploy(spec, {}, lambda line: None)
    until_ready(rig, state)
    assert rig.backend.deploy(spec, state, lambda line: None) == state
    assert rig.backend.status(state).ready


def test_status_never_raises_and_speaks_in_phases(rig):
    for state in ({}, {"namespace": "nowhere", "release": "nothing", "uid": "0"}, {"dir": "/nonexistent/hub"}):
        status = rig.backend.status(state)
        assert isinstance(status, HubStatus) and not status.ready and status.phase in (*PHASES, "")


def test_many_statuses_at_once_agree_with_one_at_a_time(rig):
    states = [rig.backend.deploy(hub(rig.backend, f"many-{n}", str(20 + n)), {}, lambda line: None) for n in range(2)]
    for state in states:
        until_ready(rig, state)
    one_by_one = [rig.backend.status(state) for state in states]
    together = statuses(rig.backend, states)
    assert [(s.ready, s.phase, s.url) for s in together] == [(s.ready, s.phase, s.url) for s in one_by_one]


def test_remove_takes_everything_and_is_safe_twice(rig):
    state = rig.backend.deploy(hub(rig.backend, "gone", "9"), {}, lambda line: None)
    until_ready(rig, state)
    rig.backend.remove(state, lambda line: None)
    rig.settle()
    rig.backend.remove(state, lambda line: None)
    status = rig.backend.status(state)
    assert not status.ready and status.phase in (*PHASES, "")
