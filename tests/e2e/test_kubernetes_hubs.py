"""Hubs on Kubernetes end to end: through the console's API, its worker and the real ``kubernetes`` client.

What stands in for a cluster: an HTTP Kubernetes API emulator (kmock with our fidelity layer, validating every write
against the Kubernetes and Flux schemas, ``tests/k8s/emulator.py``) and, in place of Flux's helm-controller, a
controller thread that reads each HelmRelease and its values Secret, renders the real z2jh chart with Helm's engine
and writes Flux-shaped status (``tests/k8s/controller.py``).

The tests marked ``real_cluster`` also run against a real cluster with Flux installed: set
``HUBFLEET_TEST_KUBECONFIG`` to its kubeconfig (see docs/kubernetes.md); without it they run on the emulator only,
and their real-cluster variant is skipped with that reason.  The failure cases (a refused chart, a rollback, a stall,
a deleted Secret) are made by the stand-in controller and run on the emulator only.
"""
from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clusters.k8s_manifests import names
from console.crypto import encrypt_json
from console.extensions import db
from console.models import Cluster, Hub, Operation, Release
from console.services import config as config_service
from console.services import monitoring
from tests.helpers import wait_for
from tests.k8s.controller import FakeHelmController
from tests.k8s.reference import needs_reference

pytestmark = [pytest.mark.timeout(240), needs_reference]

REAL_KUBECONFIG = os.environ.get("HUBFLEET_TEST_KUBECONFIG")
NO_REAL_CLUSTER = ("no real cluster: set HUBFLEET_TEST_KUBECONFIG to the kubeconfig of a cluster with Flux installed "
                   "(docs/kubernetes.md)")
CHART = "4.4.0"


class Flux(threading.Thread):
    """The stand-in helm-controller, reconciling every HelmRelease of the emulator over and over, as Flux would."""

    def __init__(self, emulator):
        super().__init__(daemon=True)
        self.controller = FakeHelmController(emulator)
        self.running = threading.Event()
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        while not self.stopped.is_set():
            if self.running.wait(0.05):
                try:
                    self.controller.reconcile_all()
                except BaseException as exc:  # noqa: BLE001 — surfaced by the fixture's teardown
                    self.error = exc
                    return
                time.sleep(0.1)


class Platform:
    """Where the hubs run: the emulator with the stand-in Flux, or a real cluster with Flux."""

    def __init__(self, kubeconfig: str, emulator=None):
        self.kubeconfig, self.emulator = kubeconfig, emulator
        self.flux = Flux(emulator) if emulator is not None else None

    def objects(self, kind: str, namespace: str | None = None) -> list[dict]:
        return self.emulator.objects(kind, namespace)


@contextlib.contextmanager
def emulated_platform(emulator):
    """The emulator, with the stand-in Flux reconciling in the background until the test ends."""
    platform = Platform(emulator.kubeconfig(), emulator)
    platform.flux.start()
    platform.flux.running.set()
    yield platform
    platform.flux.stopped.set()
    platform.flux.join(10)
    assert platform.flux.error is None, platform.flux.error


@pytest.fixture(params=["emulated", pytest.param("real", marks=pytest.mark.skipif(not REAL_KUBECONFIG,
                                                                                  reason=NO_REAL_CLUSTER))])
def platform(request, kube_api):
    if request.param == "real":
        yield Platform(Path(REAL_KUBECONFIG).read_text())
        return
    with emulated_platform(kube_api) as platform:
        yield platform


@pytest.fixture
def emulated(kube_api):
    """The emulated platform only (for what only the stand-in controller can make happen)."""
    with emulated_platform(kube_api) as platform:
        yield platform


@pytest.fixture
def fleet(app, ctx, client, create_institution, create_user, api_headers, run_worker):
    """``fleet(platform)``: institution "north", the cluster "kube" onboarded through the API, a release of chart
    4.4.0; returns an operator's API headers."""

    def make(platform: Platform):
        create_institution("north")
        db.session.add(Cluster(name="kube", backend="kubernetes", state="registered",
                               kubeconfig=encrypt_json({"kubeconfig": platform.kubeconfig})))
        db.session.commit()
        headers = api_headers(create_user("operator"))
        assert client.post("/api/v1/clusters/kube/check", headers=headers).status_code == 202
        run_worker()
        cluster = client.get("/api/v1/clusters/kube", headers=headers).get_json()
        assert cluster["state"] == "ready", cluster
        published = client.post("/api/v1/releases", json={
            "name": "z2jh-4-4", "jupyterhub_version": "5.4.6", "chart_version": CHART,
            "hub_image": f"quay.io/jupyterhub/k8s-hub:{CHART}"}, headers=headers)
        assert published.status_code == 201, published.get_json()
        run_worker()
        return headers

    return make


def until_done(client, headers, run_worker, op_id: int, timeout: float = 90) -> dict:
    """Let the worker run (the controller acts meanwhile) until the operation ends; returns it."""
    def done():
        run_worker(timeout=1)
        body = client.get(f"/api/v1/operations/{op_id}", headers=headers).get_json()
        return body if body["state"] in ("succeeded", "failed", "cancelled") else None
    return wait_for(done, timeout, interval=0.2, what=f"operation {op_id} to end")


def create(client, headers, slug: str) -> int:
    created = client.post("/api/v1/hubs", json={"slug": slug, "institution": "north", "cluster": "kube"},
                          headers=headers)
    assert created.status_code == 202, created.get_json()
    return created.get_json()["operation"]


def hub_names(slug: str):
    db.session.expire_all()
    hub = db.session.execute(db.select(Hub).filter_by(slug=slug).order_by(Hub.id.desc())).unique().scalars().first()
    return names(config_service.hub_spec(hub))


def test_a_hub_created_through_the_api_progresses_then_serves_and_shows_on_the_fleet_page(
        client, platform, fleet, run_worker, create_user, login):
    headers = fleet(platform)
    if platform.flux:
        platform.flux.running.clear()  # Flux has not picked the release up yet
    op_id = create(client, headers, "physics")
    run_worker(timeout=2)
    waiting = client.get(f"/api/v1/operations/{op_id}", headers=headers).get_json()
    assert waiting["state"] in ("waiting", "running"), waiting
    hub = client.get("/api/v1/hubs/physics", headers=headers).get_json()
    assert hub["state"] == "provisioning", hub
    if platform.flux:
        release = platform.objects("HelmRelease", hub_names("physics").namespace)
        assert len(release) == 1 and release[0]["spec"]["chart"]["spec"]["version"] == CHART
        assert "status" not in release[0] or not release[0]["status"].get("history")
        platform.flux.running.set()
    op = until_done(client, headers, run_worker, op_id, timeout=60 if platform.flux else 20 * 60)
    assert op["state"] == "succeeded", op["log"]
    assert any(line.startswith("hub is healthy") for line in op["log"]), op["log"]
    hub = client.get("/api/v1/hubs/physics", headers=headers).get_json()
    assert hub["state"] == "running", hub
    page = login(client, create_user("operator")).get("/").get_data(as_text=True)
    assert "physics" in page and "kube" in page

    deleted = client.delete("/api/v1/hubs/physics", headers=headers)
    assert deleted.status_code == 202, deleted.get_json()
    assert until_done(client, headers, run_worker, deleted.get_json()["operation"])["state"] == "succeeded"
    if platform.flux:  # Flux uninstalls the release, then the namespace goes
        wait_for(lambda: not platform.objects("HelmRelease") and not [
            n for n in platform.objects("Namespace") if n["metadata"]["name"].startswith("hf-")], 30,
            what="the HelmRelease and the hub's namespace to be gone")


def test_a_value_the_charts_schema_refuses_fails_the_create_with_helms_message(client, emulated, fleet, run_worker):
    headers = fleet(emulated)
    release = db.session.execute(db.select(Release).filter_by(name="z2jh-4-4")).scalar_one()
    release.config = {"environment": {"storage_capacity": 5}}  # a number where the chart wants "5Gi"
    db.session.commit()
    op = until_done(client, headers, run_worker, create(client, headers, "broken"))
    assert op["state"] == "failed"
    assert "Helm install failed" in op["error"] and "capacity': got number, want null or string" in op["error"], op["error"]


def test_an_upgrade_flux_rolled_back_shows_rolled_back_and_halts_the_rollout(client, emulated, fleet, run_worker):
    headers = fleet(emulated)
    for slug in ("canary", "second"):
        assert until_done(client, headers, run_worker, create(client, headers, slug))["state"] == "succeeded"
    published = client.post("/api/v1/releases", json={
        "name": "z2jh-broken", "jupyterhub_version": "5.4.6", "chart_version": "4.4.1",
        "hub_image": "quay.io/jupyterhub/k8s-hub:4.4.1"}, headers=headers)
    assert published.status_code == 201, published.get_json()
    run_worker()
    broken = db.session.execute(db.select(Release).filter_by(name="z2jh-broken")).scalar_one()
    broken.config = {"environment": {"storage_capacity": 5}}
    db.session.commit()
    rollout = client.post("/api/v1/rollouts", json={"release": "z2jh-broken", "target": {"channel": "stable"},
                                                    "waves": 2, "gate_seconds": 0, "start": True}, headers=headers)
    assert rollout.status_code == 201, rollout.get_json()

    def ended():
        from console.services import releases
        releases.advance()
        db.session.commit()
        run_worker(timeout=1)
        body = client.get(f"/api/v1/rollouts/{rollout.get_json()['id']}", headers=headers).get_json()
        return body if body["state"] in ("done", "halted") else None
    body = wait_for(ended, 120, interval=0.2, what="the rollout to end")
    assert body["state"] == "halted", body
    upgrades = db.session.execute(db.select(Operation).filter_by(kind="upgrade")).unique().scalars().all()
    assert len(upgrades) == 1 and upgrades[0].outcome == "rolled_back", [(o.hub.slug, o.outcome) for o in upgrades]
    assert "rolled back by the cluster (RollbackSucceeded)" in upgrades[0].error, upgrades[0].error
    first = upgrades[0].hub.slug
    hub = client.get(f"/api/v1/hubs/{first}", headers=headers).get_json()
    assert hub["release"] == "z2jh-4-4" and hub["state"] == "running", hub
    release = emulated.objects("HelmRelease", hub_names(first).namespace)[0]
    assert release["spec"]["chart"]["spec"]["version"] == CHART  # the console put its previous release back


def test_an_institutions_new_login_reaches_its_kubernetes_hub_with_the_secret_only_in_the_values_secret(
        app, client, emulated, fleet, run_worker, create_user, api_headers):
    headers = fleet(emulated)
    assert until_done(client, headers, run_worker, create(client, headers, "bio"))["state"] == "succeeded"
    admin = api_headers(create_user("institution_admin", institution=db.session.get(Hub, 1).institution))
    secret = "k8s-oidc-s3cret-91d2"
    applied = client.put("/api/v1/institutions/north/config", headers=admin, json={
        "auth": {"authenticator_class": "generic-oauth", "client_id": "bio-hub", "client_secret": secret,
                 "authorize_url": "https://idp.north.edu/auth", "token_url": "https://idp.north.edu/token",
                 "userdata_url": "https://idp.north.edu/me", "allowed_groups": ["students"], "manage_groups": True},
        "environment": {"image": "quay.io/jupyter/scipy-notebook:2025-01-06", "cpu_limit": 2, "mem_limit": "4G"}})
    assert applied.status_code == 200, applied.get_json()

    def ended():
        from console.services import releases
        releases.advance()
        db.session.commit()
        run_worker(timeout=1)
        body = client.get(f"/api/v1/rollouts/{applied.get_json()['rollout']}", headers=headers).get_json()
        return body if body["state"] in ("done", "halted") else None
    assert wait_for(ended, 120, interval=0.2, what="the config rollout to end")["state"] == "done"
    reconfigure = db.session.execute(db.select(Operation).filter_by(kind="reconfigure")).unique().scalar_one()
    log = client.get(f"/api/v1/operations/{reconfigure.id}", headers=headers).get_json()["log"]
    assert any("no local preflight for a Kubernetes hub" in line for line in log), log
    hub_ns = hub_names("bio")
    release = emulated.objects("HelmRelease", hub_ns.namespace)[0]
    auth = release["spec"]["values"]["hub"]["config"]
    assert auth["GenericOAuthenticator"]["client_id"] == "bio-hub" and secret not in str(release)
    values = emulated.emulator.get("Secret", "hubfleet-values", hub_ns.namespace)
    assert secret in base64.b64decode(values["data"]["values.yaml"]).decode()
    hub_secret = emulated.emulator.get("Secret", "hub", hub_ns.namespace)  # what the chart rendered for the hub
    assert secret in base64.b64decode(hub_secret["data"]["values.yaml"]).decode()


def test_a_stalled_release_fails_the_hub_with_fluxs_reason(client, emulated, fleet, run_worker):
    headers = fleet(emulated)
    emulated.flux.running.clear()
    op_id = create(client, headers, "stuck")
    run_worker(timeout=2)
    hub_ns = hub_names("stuck")
    emulated.flux.controller.fail_next[f"{hub_ns.namespace}/{hub_ns.release}"] = "stalled"
    emulated.flux.running.set()
    op = until_done(client, headers, run_worker, op_id)
    assert op["state"] == "failed" and "RetriesExceeded" in op["error"], op["error"]
    hub = client.get("/api/v1/hubs/stuck", headers=headers).get_json()
    assert hub["state"] == "failed" and "RetriesExceeded" in hub["status_message"], hub


def test_a_deleted_values_secret_shows_as_a_values_error_on_the_hub(app, client, emulated, fleet, run_worker):
    headers = fleet(emulated)
    assert until_done(client, headers, run_worker, create(client, headers, "chem"))["state"] == "succeeded"
    hub_ns = hub_names("chem")
    emulated.emulator.delete("Secret", "hubfleet-values", hub_ns.namespace)
    emulated.emulator.patch("HelmRelease", hub_ns.release, hub_ns.namespace, {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": "interval"}}})  # as Flux's interval comes round
    wait_for(lambda: "ValuesError" in str(emulated.objects("HelmRelease", hub_ns.namespace)[0]["status"]), 30,
             what="the controller to meet the missing Secret")
    hubs = monitoring.live_hubs()
    results = monitoring.probe_fleet(hubs)  # what the monitor does on its interval
    monitoring.record(hubs, results)
    db.session.commit()
    hub = client.get("/api/v1/hubs/chem", headers=headers).get_json()
    assert "could not resolve Secret chart values reference" in hub["status_message"], hub


def start_worker(app, tmp_path, name: str) -> subprocess.Popen:
    env = {**os.environ, "HUBFLEET_DATABASE_URL": app.config["DATABASE_URL"],
           "HUBFLEET_DATA_DIR": app.config["DATA_DIR"], "HUBFLEET_SECRET_KEY": app.config["SECRET_KEY"],
           "HUBFLEET_LEASE_SECONDS": "2", "HUBFLEET_WORKER_POLL_SECONDS": "0.1",
           "HUBFLEET_RELEASE_ENVIRONMENTS": app.config["RELEASE_ENVIRONMENTS"]}
    with open(tmp_path / f"{name}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "console.cli", "worker", "--no-monitor"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def test_a_worker_killed_in_the_middle_of_a_create_leaves_one_helmrelease_and_the_create_finishes(
        app, client, emulated, fleet, run_worker, tmp_path):
    headers = fleet(emulated)
    emulated.emulator.api.latency = 0.3  # each write takes a while: the kill lands between two of them
    op_id = create(client, headers, "kill")
    first = start_worker(app, tmp_path, "worker-1")
    try:
        wait_for(lambda: any(r.method == "PATCH" and "/namespaces/hf-" in r.path for r in emulated.emulator.requests),
                 60, interval=0.02, what="the worker to start applying the hub's objects")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    written = [r.path for r in emulated.emulator.requests if r.method == "PATCH"]
    assert not any("/helmreleases/" in path for path in written), written  # killed before the HelmRelease
    emulated.emulator.api.latency = 0.0
    second = start_worker(app, tmp_path, "worker-2")
    try:
        def ended():
            body = client.get(f"/api/v1/operations/{op_id}", headers=headers).get_json()
            return body if body["state"] in ("succeeded", "failed") else None
        op = wait_for(ended, 120, interval=0.3, what="the create to finish")
    finally:
        second.terminate()
        second.wait(30)
    assert op["state"] == "succeeded", op
    assert len(emulated.objects("HelmRelease")) == 1
    assert client.get("/api/v1/hubs/kill", headers=headers).get_json()["state"] == "running"
