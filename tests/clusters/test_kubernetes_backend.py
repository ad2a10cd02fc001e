"""The Kubernetes backend against a stand-in API server (L4) and a simulated helm-controller (L5).

What stands in for a cluster: ``tests/k8s/emulator.py`` serves the Kubernetes API over real HTTP (kmock plus the
fidelity layer: server-side apply that creates, generation bumped only by spec changes, label selectors, schema
validation of every write) and records every request; the backend reaches it through the official ``kubernetes``
client from a kubeconfig, as it would reach a cluster.  Where a test writes a HelmRelease's status itself, it acts as
Flux's helm-controller would; ``tests/k8s/controller.py`` does the same by rendering the real z2jh chart.  What only a
real cluster with Flux shows (Helm's own upgrade and rollback, SSA field ownership, pods really starting) is listed in
``../shared/notes/kubernetes.md`` §9.
"""
from __future__ import annotations

import base64
import json
import os
import socket

import pytest

from clusters.base import BackendError, HubSpec, backend_class
from clusters.k8s_manifests import SYSTEM_NAMESPACE, names
from clusters.kubernetes import (APPLY, FLUX_FIX, HELMRELEASE, MERGE, NO_KUBECONFIG, NOT_CHECKED, Check,
                                 KubernetesBackend)
from tests.k8s.emulator import Emulator

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cret-client-value"
TOKEN = "kubeconfig-bearer-token-xyz"
SPEC = HubSpec(
    slug="physics", institution="uni", uid="42", chart_version="4.4.0",
    config={"hub": {"config": {"JupyterHub": {"authenticator_class": "generic-oauth"},
                               "GenericOAuthenticator": {"client_id": "physics-hub"}}}},
    secrets={"hub": {"config": {"GenericOAuthenticator": {"client_secret": SECRET}}}})
NAMES = names(SPEC)
ORDER = ["Namespace", "Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "NetworkPolicy", "Secret",
         "HelmRepository", "HelmRelease"]
PLURAL_KIND = {"namespaces": "Namespace", "resourcequotas": "ResourceQuota", "limitranges": "LimitRange",
               "networkpolicies": "NetworkPolicy", "secrets": "Secret", "helmrepositories": "HelmRepository",
               "helmreleases": "HelmRelease", "deployments": "Deployment"}
CHECKS = ["API reachable", "Kubernetes 1.32 or newer", "Flux HelmRelease v2 served", "Flux HelmRepository v1 served",
          "a default StorageClass"]
PORTS = [int(p) for p in os.environ.get("HUBFLEET_TEST_PORTS", "22600-22799").split("-")]


def spec(**changes) -> HubSpec:
    return HubSpec(**{**SPEC.__dict__, **changes})


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)


@pytest.fixture
def backend(kube_api):
    with KubernetesBackend(kubeconfig=kube_api.kubeconfig(token=TOKEN)) as backend:
        yield backend


def writes(emulator: Emulator, since: int = 0):
    return [r for r in emulator.requests[since:] if r.method != "GET"]


def kind_of_path(path: str) -> str:
    parts = path.strip("/").split("/")
    plural = parts[-2] if parts[-2] in PLURAL_KIND else parts[-1]
    return PLURAL_KIND[plural]


def release_of(emulator: Emulator, state: dict) -> dict:
    return emulator.get("HelmRelease", state["release"], state["namespace"])


def act_as_flux(emulator: Emulator, state: dict, token: str | None = None, chart_version: str = "4.4.0") -> None:
    """Write the status helm-controller writes after a successful upgrade of the release's current generation."""
    release = release_of(emulator, state)
    generation = release["metadata"]["generation"]
    status = {
        "observedGeneration": generation, "lastAttemptedRevision": chart_version,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "UpgradeSucceeded", "message": "Helm upgrade succeeded",
             "observedGeneration": generation, "lastTransitionTime": "2026-11-01T00:00:00Z"},
            {"type": "Released", "status": "True", "reason": "UpgradeSucceeded", "message": "Helm upgrade succeeded",
             "observedGeneration": generation, "lastTransitionTime": "2026-11-01T00:00:00Z"}],
        "history": [{"version": generation, "status": "deployed", "chartName": "jupyterhub",
                     "chartVersion": chart_version, "action": "upgrade", "name": state["release"],
                     "namespace": state["namespace"], "configDigest": "sha256:" + "0" * 64,
                     "digest": "sha256:" + "1" * 64, "firstDeployed": "2026-11-01T00:00:00Z",
                     "lastDeployed": "2026-11-01T00:00:00Z"}],
    }
    if token:
        status["lastHandledReconcileAt"] = status["lastHandledForceAt"] = token
    emulator.patch("HelmRelease", state["release"], state["namespace"], {"status": status}, subresource="status")


def running_hub(emulator: Emulator, namespace: str) -> None:
    """The chart's hub and proxy Deployments, ready, as the kubelet would leave them."""
    for component in ("hub", "proxy"):
        labels = {"app": "jupyterhub", "component": component, "release": NAMES.release}
        emulator.put({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": component, "namespace": namespace, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": component, "image": "example/image:1"}]}}},
            "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}})


def closed_port() -> int:
    """A port in this suite's range that nothing listens on."""
    for port in range(PORTS[0], PORTS[1] + 1):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no closed port in HUBFLEET_TEST_PORTS")


def unreachable_kubeconfig() -> str:
    return (f"apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{{name: c, cluster: {{server: "
            f"'http://127.0.0.1:{closed_port()}'}}}}]\nusers: [{{name: u, user: {{token: {TOKEN}}}}}]\n"
            f"contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n")


# -- L4: the API contract --------------------------------------------------------------------------------------------

def test_backend_is_registered_and_not_supervised():
    cls = backend_class("kubernetes")
    assert cls is KubernetesBackend
    assert (cls.supervised, cls.render_target, cls.ready_timeout) == (False, "z2jh", 20 * 60)


def test_deploy_applies_every_object_in_order_with_server_side_apply(kube_api, backend):
    log = Log()
    state = backend.deploy(SPEC, {}, log)

    sent = writes(kube_api)
    assert [kind_of_path(r.path) for r in sent] == ORDER
    assert sent[0].path == f"/api/v1/namespaces/{SYSTEM_NAMESPACE}"  # where the shared HelmRepository lives
    for request in sent:
        assert request.method == "PATCH"
        assert request.content_type == APPLY
        assert request.params == {"fieldManager": "hubfleet", "force": "true"}
    assert state == {"state_version": 1, "namespace": NAMES.namespace, "release": NAMES.release, "uid": "42",
                     "generation": 1, "chart_version": "4.4.0", "token": None, "url": None}
    release = release_of(kube_api, state)
    assert release["spec"]["chart"]["spec"]["version"] == "4.4.0"
    assert kube_api.get("HelmRepository", NAMES.repository, SYSTEM_NAMESPACE)["spec"]["url"]
    assert log[:9] == [f"applied {kind} {name}" for kind, name in zip(ORDER, (
        SYSTEM_NAMESPACE, NAMES.namespace, "hubfleet-guardrails", "hubfleet-defaults", "hubfleet-deny-ingress",
        "hubfleet-allow-ingress-to-proxy", NAMES.values_secret, NAMES.repository, NAMES.release))]
    assert "generation 1" in log[9]


def test_a_second_deploy_with_the_same_spec_leaves_the_generation(kube_api, backend):
    first = backend.deploy(SPEC, {}, Log())
    second = backend.deploy(SPEC, first, Log())
    assert second == first
    assert release_of(kube_api, second)["metadata"]["generation"] == 1


def test_a_spec_change_bumps_the_generation_and_status_waits_for_the_controller(kube_api, backend):
    state = backend.deploy(SPEC, {}, Log())
    assert backend.status(state).phase == "pending"  # Flux has not seen it yet
    act_as_flux(kube_api, state)
    running_hub(kube_api, state["namespace"])
    done = backend.status(state)
    assert (done.phase, done.running, done.ready) == ("succeeded", True, True)

    changed = spec(config={**SPEC.config, "singleuser": {"defaultUrl": "/lab"}})
    state = backend.deploy(changed, state, Log())
    assert state["generation"] == 2
    waiting = backend.status(state)
    assert (waiting.phase, waiting.ready) == ("pending", False)
    act_as_flux(kube_api, state)
    assert backend.status(state).phase == "succeeded"


def test_a_new_chart_version_is_pending_until_deployed(kube_api, backend):
    state = backend.deploy(SPEC, {}, Log())
    act_as_flux(kube_api, state)
    state = backend.deploy(spec(chart_version="4.5.0"), state, Log())
    assert (state["generation"], state["chart_version"]) == (2, "4.5.0")
    act_as_flux(kube_api, state, chart_version="4.4.0")  # observed, but the old chart still deployed
    assert backend.status(state).phase == "pending"
    act_as_flux(kube_api, state, chart_version="4.5.0")
    assert backend.status(state).phase == "succeeded"


def test_restart_round_trips_a_reconcile_token(kube_api, backend):
    state = backend.deploy(SPEC, {}, Log())
    act_as_flux(kube_api, state)
    running_hub(kube_api, state["namespace"])
    before = len(kube_api.requests)

    state = backend.restart(SPEC, state, Log())
    token = state["token"]
    assert token
    annotation_patches = [r for r in writes(kube_api, before) if r.content_type == MERGE]
    assert [kind_of_path(r.path) for r in annotation_patches] == ["HelmRelease", "Deployment"]
    assert annotation_patches[0].body == {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": token, "reconcile.fluxcd.io/forceAt": token}}}
    assert annotation_patches[1].path.endswith("/deployments/hub")
    template = kube_api.get("Deployment", "hub", state["namespace"])["spec"]["template"]
    assert template["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] == token
    assert release_of(kube_api, state)["metadata"]["generation"] == 1  # annotations are not the spec

    waiting = backend.status(state)
    assert waiting.phase == "pending" and "reconcile request" in waiting.message
    act_as_flux(kube_api, state, token="an older token")
    assert backend.status(state).phase == "pending"
    act_as_flux(kube_api, state, token=token)
    assert backend.status(state).phase == "succeeded"


def test_a_deploy_keeps_a_pending_restart_request(kube_api, backend):
    state = backend.deploy(SPEC, {}, Log())
    act_as_flux(kube_api, state)
    restarted = backend.restart(SPEC, state, Log())
    redeployed = backend.deploy(SPEC, restarted, Log())
    assert redeployed["token"] == restarted["token"]
    assert backend.status(redeployed).phase == "pending"

    kube_api.delete("HelmRelease", state["release"], state["namespace"])  # deleted behind the console's back
    recreated = backend.deploy(SPEC, redeployed, Log())
    assert recreated["token"] is None  # the new release carries no request: nothing to wait for


def test_stop_suspends_and_scales_down_and_deploy_resumes(kube_api, backend):
    state = backend.deploy(SPEC, {}, Log())
    running_hub(kube_api, state["namespace"])
    backend.stop(state, Log())
    backend.stop(state, Log())  # safe twice
    assert release_of(kube_api, state)["spec"]["suspend"] is True
    for name in ("hub", "proxy"):
        assert kube_api.get("Deployment", name, state["namespace"])["spec"]["replicas"] == 0

    log = Log()
    resumed = backend.deploy(SPEC, state, log)
    release = release_of(kube_api, resumed)
    assert release["spec"]["suspend"] is False
    assert resumed["token"] and release["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] == \
        resumed["token"]
    assert resumed["generation"] == release["metadata"]["generation"]
    assert any("resumed" in line for line in log)
    assert backend.status(resumed).phase == "pending"  # until Flux reconciles the resumed release


def test_every_patch_says_its_content_type_and_no_json_patch_goes_as_merge_patch(kube_api, backend):
    state = backend.deploy(SPEC, {}, Log())
    running_hub(kube_api, state["namespace"])
    state = backend.restart(SPEC, state, Log())
    backend.stop(state, Log())
    backend.deploy(SPEC, state, Log())
    patches = [r for r in kube_api.requests if r.method == "PATCH"]
    assert {r.content_type for r in patches} == {APPLY, MERGE}
    for request in patches:
        assert isinstance(request.body, dict), request.path
        assert request.params["fieldManager"] == "hubfleet"
        assert ("force" in request.params) == (request.content_type == APPLY)
    with pytest.raises(TypeError):
        backend._merge_patch(HELMRELEASE, state["namespace"], state["release"],
                             [{"op": "replace", "path": "/spec/suspend", "value": True}])


def test_remove_deletes_release_then_namespace_and_is_safe_twice(kube_api, backend):
    state = backend.deploy(SPEC, {}, Log())
    before = len(kube_api.requests)
    backend.remove(state, Log())
    deletes = writes(kube_api, before)
    assert [(r.method, kind_of_path(r.path)) for r in deletes] == [("DELETE", "HelmRelease"), ("DELETE", "Namespace")]
    assert kube_api.get("HelmRelease", state["release"], state["namespace"]) is None
    assert kube_api.get("Namespace", state["namespace"]) is None
    assert kube_api.get("HelmRepository", NAMES.repository, SYSTEM_NAMESPACE) is not None  # shared, kept

    log = Log()
    backend.remove(state, log)
    assert log == [f"HelmRelease {state['namespace']}/{state['release']} was already gone",
                   f"Namespace {state['namespace']} was already gone"]
    before = len(kube_api.requests)
    backend.remove({}, Log())  # a hub that never started
    assert len(kube_api.requests) == before


def test_a_missing_hub_is_a_status_and_stopping_it_is_harmless(kube_api, backend):
    gone = {"namespace": "hf-7-gone", "release": "hf-7-gone", "generation": 3, "chart_version": "", "token": None}
    status = backend.status(gone)
    assert (status.running, status.ready, status.phase) == (False, False, "failed")
    assert "hf-7-gone" in status.message and "gone" in status.message
    assert backend.status({**gone, "generation": None}).phase == "pending"
    assert backend.status({}).phase == "pending"
    backend.stop(gone, Log())
    backend.remove(gone, Log())


def test_statuses_of_thirty_hubs_take_one_request_per_kind(kube_api, backend):
    states = []
    for number in range(30):
        namespace = release = f"hf-{number}-hub"
        kube_api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        kube_api.put({"apiVersion": HELMRELEASE.api_version, "kind": "HelmRelease",
                      "metadata": {"name": release, "namespace": namespace,
                                   "labels": {"app.kubernetes.io/managed-by": "hubfleet"}},
                      "spec": {"interval": "10m", "chart": {"spec": {"chart": "jupyterhub"}}}})
        state = {"namespace": namespace, "release": release, "generation": 1, "chart_version": "4.4.0",
                 "token": None, "url": None}
        if number % 2 == 0:
            act_as_flux(kube_api, state)
            running_hub(kube_api, namespace)
        states.append(state)
    states.append({})  # not deployed yet
    before = len(kube_api.requests)
    found = backend.statuses(states)
    reads = kube_api.requests[before:]
    assert len(reads) == 6
    assert all("/namespaces/" not in r.path for r in reads)  # cluster-wide lists, not one per hub
    assert reads[0].params == {"labelSelector": "app.kubernetes.io/managed-by=hubfleet"}
    assert [s.phase for s in found[:4]] == ["succeeded", "pending", "succeeded", "pending"]
    assert [s.ready for s in found[:2]] == [True, False]
    assert found[-1].phase == "pending"
    assert found[:3] == [backend.status(state) for state in states[:3]]


def test_status_reads_warning_events_and_pods_of_the_chart(kube_api, backend):
    state = backend.deploy(SPEC, {}, Log())
    act_as_flux(kube_api, state)
    kube_api.put({"apiVersion": "v1", "kind": "Event",
                  "metadata": {"name": "hub-1.abc", "namespace": state["namespace"]}, "type": "Warning",
                  "reason": "FailedScheduling", "message": "0/3 nodes are available: insufficient cpu",
                  "involvedObject": {"kind": "Pod", "name": "hub-1", "namespace": state["namespace"]}})
    status = backend.status(state)
    assert "insufficient cpu" in status.message and status.reason == "FailedScheduling"
    assert not status.ready


def test_an_unreachable_api_is_a_status_not_an_error():
    with KubernetesBackend(kubeconfig=unreachable_kubeconfig(), request_timeout=2) as backend:
        state = {"namespace": "hf-1-a", "release": "hf-1-a", "generation": 1}
        status = backend.status(state)
        assert (status.running, status.ready, status.phase) == (True, False, "")
        assert status.message.startswith("the cluster's API does not answer")
        assert backend.statuses([state, state]) == [status, status]
        with pytest.raises(BackendError, match="does not answer") as raised:
            backend.deploy(SPEC, {}, Log())
        assert TOKEN not in str(raised.value)


def test_api_errors_name_the_object_and_never_a_credential(kube_api, backend):
    """Deploying into a namespace that is being deleted: the API refuses new content with 403."""
    state = backend.deploy(SPEC, {}, Log())
    kube_api.patch("Namespace", state["namespace"], None, {"metadata": {"finalizers": ["example.org/hold"]}})
    kube_api.delete("Namespace", state["namespace"])  # terminating: the finalizer holds it
    with pytest.raises(BackendError) as raised:
        backend.deploy(SPEC, state, Log())
    message = str(raised.value)
    assert "HTTP 403" in message and "being terminated" in message and state["namespace"] in message
    assert TOKEN not in message and "Bearer" not in message and len(message) < 400


def test_without_a_kubeconfig_only_manifests_work():
    backend = KubernetesBackend()
    with pytest.raises(BackendError, match=NO_KUBECONFIG):
        backend.deploy(SPEC, {}, Log())
    with pytest.raises(BackendError, match=NO_KUBECONFIG):
        backend.remove({"namespace": "a", "release": "a"}, Log())
    assert backend.status({"namespace": "a", "release": "a"}).message == NO_KUBECONFIG
    manifests = backend.manifests(SPEC)
    assert [obj["kind"] for obj in manifests] == ORDER[1:]
    assert SECRET not in json.dumps(manifests)
    onboarding = backend.onboard()
    assert onboarding[0] == Check("API reachable", False, NO_KUBECONFIG, onboarding[0].fix)
    assert all(check.detail == NOT_CHECKED for check in onboarding[1:])


def test_a_broken_kubeconfig_is_reported_without_its_content():
    broken = f"apiVersion: v1\nusers: [{{name: u, user: {{token: {TOKEN}}}\n  : :\n"
    backend = KubernetesBackend(kubeconfig=broken)
    with pytest.raises(BackendError, match="not valid YAML") as raised:
        backend.deploy(SPEC, {}, Log())
    assert TOKEN not in str(raised.value)
    status = backend.status({"namespace": "a", "release": "a"})
    assert status.message.startswith("the kubeconfig is not valid YAML") and TOKEN not in status.message
    assert KubernetesBackend(kubeconfig="users: []\n").status({"namespace": "a", "release": "a"}).message == \
        "the kubeconfig cannot be used: ConfigException"


def test_url_comes_from_the_ingress_host(kube_api, backend):
    published = spec(config={**SPEC.config, "ingress": {"enabled": True, "hosts": ["physics.hub.example.edu"]}})
    state = backend.deploy(published, {}, Log())
    assert state["url"] == "https://physics.hub.example.edu/"
    assert backend.api_url(state) == "https://physics.hub.example.edu/hub/api/"
    assert backend.status(state).url == "https://physics.hub.example.edu/"
    assert backend.api_url({**state, "url": None}) is None
    assert backend.api_token(state) is None and backend.alive(state) is None


def test_backup_and_restore_only_log(backend):
    log = Log()
    assert backend.backup({"namespace": "a"}, "before-upgrade", log) == ""
    backend.restore({"namespace": "a"}, "", log)
    assert "kept volume" in log[0] and "rolls a failed upgrade back" in log[0] and len(log) == 2


def test_a_secret_goes_only_into_the_secret(kube_api, backend):
    log = Log()
    state = backend.deploy(SPEC, {}, log)
    running_hub(kube_api, state["namespace"])
    state = backend.restart(SPEC, state, log)
    backend.stop(state, log)
    state = backend.deploy(SPEC, state, log)
    backend.status(state)
    backend.statuses([state])
    backend.remove(state, log)

    carrying = [r.path for r in kube_api.requests if SECRET in json.dumps(r.body)]
    assert carrying == [f"/api/v1/namespaces/{NAMES.namespace}/secrets/{NAMES.values_secret}"] * 3
    assert SECRET not in json.dumps(state) and SECRET not in "\n".join(log)
    stored = kube_api.history("Secret", NAMES.values_secret, NAMES.namespace)[0]
    assert SECRET in base64.b64decode(stored["data"]["values.yaml"]).decode()


# -- onboarding ------------------------------------------------------------------------------------------------------

def onboard(kube_api_factory, **options) -> dict[str, Check]:
    emulator = kube_api_factory(**options)
    with KubernetesBackend(kubeconfig=emulator.kubeconfig()) as backend:
        checks = backend.onboard()
    assert [check.name for check in checks] == CHECKS
    return {check.name: check for check in checks}


def test_onboarding_passes_on_a_good_cluster(kube_api_factory):
    checks = onboard(kube_api_factory)
    assert all(check.ok and not check.fix for check in checks.values()), checks
    assert "v1.33.0" in checks["API reachable"].detail


def test_onboarding_without_flux_says_how_to_install_it(kube_api_factory):
    checks = onboard(kube_api_factory, flux=False)
    for name in ("Flux HelmRelease v2 served", "Flux HelmRepository v1 served"):
        assert not checks[name].ok and checks[name].fix == FLUX_FIX
    assert [name for name, check in checks.items() if not check.ok] == CHECKS[2:4]


def test_onboarding_refuses_an_old_kubernetes(kube_api_factory):
    checks = onboard(kube_api_factory, kube_version="1.30.0")
    check = checks["Kubernetes 1.32 or newer"]
    assert not check.ok and "v1.30.0" in check.detail and "upgrade the cluster" in check.fix
    assert [name for name, check in checks.items() if not check.ok] == [CHECKS[1]]


def test_onboarding_needs_a_default_storage_class(kube_api_factory):
    checks = onboard(kube_api_factory, storage_class=False)
    check = checks["a default StorageClass"]
    assert not check.ok and "kubectl patch storageclass" in check.fix
    assert [name for name, check in checks.items() if not check.ok] == [CHECKS[4]]


def test_onboarding_an_unreachable_cluster_checks_nothing_else():
    with KubernetesBackend(kubeconfig=unreachable_kubeconfig(), request_timeout=2) as backend:
        checks = backend.onboard()
    assert [check.name for check in checks] == CHECKS
    assert not checks[0].ok and "does not answer" in checks[0].detail and "kubeconfig" in checks[0].fix
    assert all(not check.ok and check.detail == NOT_CHECKED for check in checks[1:])


# -- L5: with a simulated helm-controller --------------------------------------------------------------------------

@pytest.fixture
def flux(kube_api):
    from tests.k8s.controller import FakeHelmController
    return FakeHelmController(kube_api)


def rendered_hub_values(emulator: Emulator, namespace: str) -> str:
    """The hub's config as the chart rendered it (its ``hub`` Secret's values.yaml)."""
    secret = emulator.get("Secret", "hub", namespace)
    return base64.b64decode(secret["data"]["values.yaml"]).decode()


def test_a_hub_goes_from_pending_to_succeeded_through_flux(kube_api, backend, flux):
    state = backend.deploy(SPEC, {}, Log())
    first = backend.status(state)
    assert (first.phase, first.ready, first.running) == ("pending", False, True)

    assert flux.reconcile_all() == [f"{state['namespace']}/{state['release']}"]
    done = backend.status(state)
    assert (done.phase, done.ready, done.running, done.reason) == ("succeeded", True, True, "InstallSucceeded")
    assert done.url == "http://203.0.113.10/"  # the proxy-public LoadBalancer's address
    assert SECRET in rendered_hub_values(kube_api, state["namespace"])  # valuesFrom reached the chart
    assert backend.statuses([state]) == [done]

    assert backend.deploy(SPEC, state, Log()) == state  # nothing changed: Flux has nothing to do
    assert flux.reconcile_all() == []


def test_a_config_change_and_a_restart_go_through_flux(kube_api, backend, flux):
    state = backend.deploy(SPEC, {}, Log())
    flux.reconcile_all()
    changed = spec(config={**SPEC.config, "singleuser": {"defaultUrl": "/lab"}})
    state = backend.deploy(changed, state, Log())
    assert backend.status(state).phase == "pending"
    flux.reconcile_all()
    assert backend.status(state).phase == "succeeded"
    assert "/lab" in rendered_hub_values(kube_api, state["namespace"])

    state = backend.restart(changed, state, Log())
    assert backend.status(state).phase == "pending"
    flux.reconcile_all()
    restarted = backend.status(state)
    assert (restarted.phase, restarted.ready) == ("succeeded", True)
    assert release_of(kube_api, state)["status"]["lastHandledReconcileAt"] == state["token"]


def test_a_stopped_hub_is_left_alone_by_flux_until_deployed_again(kube_api, backend, flux):
    state = backend.deploy(SPEC, {}, Log())
    flux.reconcile_all()
    backend.stop(state, Log())
    assert kube_api.get("Deployment", "hub", state["namespace"])["spec"]["replicas"] == 0
    state = backend.deploy(SPEC, state, Log())
    assert backend.status(state).phase == "pending"
    flux.reconcile_all()  # the forced upgrade puts the chart's Deployments back
    assert kube_api.get("Deployment", "hub", state["namespace"])["spec"]["replicas"] == 1
    assert backend.status(state).phase == "succeeded"


def test_a_broken_upgrade_is_rolled_back_and_says_why(kube_api, backend, flux):
    state = backend.deploy(SPEC, {}, Log())
    flux.reconcile_all()
    broken = spec(config={**SPEC.config, "singleuser": {"storage": {"capacity": 10}}})  # the chart wants "10Gi"
    state = backend.deploy(broken, state, Log())
    flux.reconcile_all()
    status = backend.status(state)
    assert (status.phase, status.running, status.ready) == ("rolled-back", True, True)
    assert "capacity" in status.message


def test_an_image_that_cannot_be_pulled_shows_in_the_status(kube_api, backend, flux):
    state = backend.deploy(SPEC, {}, Log())
    flux.fail_next[f"{state['namespace']}/{state['release']}"] = "image-pull"
    flux.reconcile_all()
    status = backend.status(state)
    assert (status.phase, status.ready, status.reason) == ("succeeded", False, "ImagePullBackOff")
    assert "cannot be pulled" in status.message


def test_remove_lets_flux_uninstall_then_deletes_the_namespace(kube_api, backend, flux):
    state = backend.deploy(SPEC, {}, Log())
    flux.reconcile_all()
    backend.remove(state, Log())
    flux.reconcile_all()  # the finalizer: helm-controller uninstalls, then lets the HelmRelease go
    assert kube_api.get("HelmRelease", state["release"], state["namespace"]) is None
    assert kube_api.get("Deployment", "hub", state["namespace"]) is None
    namespace = kube_api.get("Namespace", state["namespace"])  # the namespace controller finishes it
    assert namespace is None or namespace["metadata"].get("deletionTimestamp")
    backend.remove(state, Log())
    assert backend.status(state).phase == "failed"
