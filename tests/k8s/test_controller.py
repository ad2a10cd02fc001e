"""The console's loop against a simulated cluster: write a HelmRelease, reconcile, read the status (§8.6, L5).

A fake helm-controller (tests/k8s/controller.py) stands in for Flux, and the API emulator (tests/k8s/emulator.py)
for the API server; the chart is the real z2jh chart rendered by the real Helm engine.  What the tests write, they
write as the backend does: server-side apply with the official client, field manager ``hubfleet``.
"""
from __future__ import annotations

import base64

import pytest
import yaml
from kubernetes import client, config

from tests.k8s.controller import FakeHelmController, at_path, condition, format_timeout, merge
from tests.k8s.emulator import Emulator
from tests.k8s.reference import needs_reference

HR = ("helm.toolkit.fluxcd.io", "v2", "hub-a", "helmreleases")
APPLY = {"field_manager": "hubfleet", "force": True, "_content_type": "application/apply-patch+yaml"}
CONDITION_KEYS = {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}


def chart_values(**singleuser) -> dict:
    """z2jh values without secrets, as the console writes them into ``spec.values`` (§8.2's test values)."""
    return {
        "hub": {"config": {"GenericOAuthenticator": {"client_id": "hubfleet", "oauth_callback_url":
                                                     "https://a.example.org/hub/oauth_callback"}},
                "db": {"pvc": {"annotations": {"helm.sh/resource-policy": "keep"}}}},
        "proxy": {"service": {"type": "ClusterIP"}, "https": {"enabled": False}},
        "scheduling": {"userScheduler": {"enabled": False}},
        "prePuller": {"hook": {"enabled": False}},
        "singleuser": {"cloudMetadata": {"blockWithIptables": False}, "storage": {"capacity": "5Gi"},
                       **singleuser},
    }


def helmrelease(values: dict, **spec) -> dict:
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "hub", "namespace": "hub-a"},
        "spec": {"interval": "10m", "timeout": "15m", "releaseName": "hub-a", "targetNamespace": "hub-a",
                 "chart": {"spec": {"chart": "jupyterhub", "version": "4.4.0",
                                    "sourceRef": {"kind": "HelmRepository", "name": "z2jh",
                                                  "namespace": "hubfleet-system"}}},
                 "valuesFrom": [{"kind": "Secret", "name": "hub-values"}],
                 "values": values, **spec},
    }


class Console:
    """What the backend does over the wire, reduced to the calls these tests need."""

    def __init__(self, emulator: Emulator):
        api = config.new_client_from_config_dict(yaml.safe_load(emulator.kubeconfig()))
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)

    def apply_secret(self, secret_values: dict) -> None:
        self.core.patch_namespaced_secret("hub-values", "hub-a", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hub-values", "namespace": "hub-a"},
            "stringData": {"values.yaml": yaml.safe_dump(secret_values)}}, **APPLY)

    def apply_release(self, body: dict) -> None:
        self.custom.patch_namespaced_custom_object(*HR, "hub", body, **APPLY)

    def release(self) -> dict:
        return self.custom.get_namespaced_custom_object(*HR, "hub")

    def request_reconcile(self, token: str) -> None:
        self.custom.patch_namespaced_custom_object(*HR, "hub", {
            "metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}})


def conditions(release: dict) -> dict[str, dict]:
    found = {c["type"]: c for c in release["status"]["conditions"]}
    assert all(set(c) == CONDITION_KEYS for c in found.values()), found
    return found


def hub_values(emulator: Emulator) -> dict:
    """The values the hub reads: the ``values.yaml`` key of the chart's hub Secret."""
    secret = emulator.get("Secret", "hub", "hub-a")
    return yaml.safe_load(base64.b64decode(secret["data"]["values.yaml"]))


SECRET = {"hub": {"config": {"GenericOAuthenticator": {"client_secret": "s3cret"}}}}


@pytest.fixture
def console(kube_api):
    client.CoreV1Api(config.new_client_from_config_dict(yaml.safe_load(kube_api.kubeconfig()))).create_namespace(
        {"metadata": {"name": "hub-a"}})
    return Console(kube_api)


@pytest.fixture
def controller(kube_api):
    return FakeHelmController(kube_api)


@pytest.fixture
def installed(kube_api, console, controller):
    console.apply_secret(SECRET)
    console.apply_release(helmrelease(chart_values()))
    assert controller.reconcile_all() == ["hub-a/hub"]
    return console


@needs_reference
def test_first_pass_installs_and_the_secret_from_values_from_reaches_the_hub(kube_api, installed, controller):
    release = installed.release()
    found = conditions(release)
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("True", "InstallSucceeded")
    assert found["Released"]["status"] == "True" and found["Ready"]["observedGeneration"] == 1
    status = release["status"]
    assert status["observedGeneration"] == release["metadata"]["generation"] == 1
    assert {k: status["history"][0][k] for k in ("version", "status", "chartVersion", "action")} == {
        "version": 1, "status": "deployed", "chartVersion": "4.4.0", "action": "install"}
    assert status["lastAttemptedRevision"] == "4.4.0"
    assert release["metadata"]["finalizers"] == ["finalizers.fluxcd.io"]
    oauth = hub_values(kube_api)["hub"]["config"]["GenericOAuthenticator"]
    assert oauth == {"client_id": "hubfleet", "client_secret": "s3cret",
                     "oauth_callback_url": "https://a.example.org/hub/oauth_callback"}
    assert kube_api.get("Deployment", "hub", "hub-a")["status"]["readyReplicas"] == 1
    assert kube_api.get("PersistentVolumeClaim", "hub-db-dir", "hub-a")["status"]["phase"] == "Bound"
    assert kube_api.get("Service", "proxy-public", "hub-a")["spec"]["type"] == "ClusterIP"
    assert kube_api.objects("ClusterRole") == []
    assert controller.reconcile_all() == []


@needs_reference
def test_a_spec_change_helm_refuses_fails_the_upgrade_with_helms_message(installed, controller):
    installed.apply_release(helmrelease(chart_values(storage={"capacity": 5})))
    assert installed.release()["metadata"]["generation"] == 2
    controller.reconcile_all()
    release = installed.release()
    assert release["status"]["observedGeneration"] == 2
    found = conditions(release)
    assert (found["Released"]["status"], found["Released"]["reason"]) == ("False", "UpgradeFailed")
    assert found["Ready"]["reason"] == "UpgradeFailed"
    assert "got number, want null or string" in found["Released"]["message"]
    assert found["Released"]["message"].startswith("Helm upgrade failed for release hub-a/hub-a with chart")
    assert [entry["status"] for entry in release["status"]["history"]] == ["failed", "deployed"]
    assert "Remediated" not in found


@needs_reference
def test_a_first_install_helm_refuses_is_install_failed(kube_api, console, controller):
    console.apply_secret(SECRET)
    console.apply_release(helmrelease(chart_values(storage={"capacity": 5})))
    controller.reconcile_all()
    found = conditions(console.release())
    assert (found["Released"]["reason"], found["Ready"]["status"]) == ("InstallFailed", "False")
    assert kube_api.get("Deployment", "hub", "hub-a") is None


@needs_reference
def test_a_deleted_values_secret_is_a_values_error(installed, controller):
    installed.core.delete_namespaced_secret("hub-values", "hub-a")
    installed.request_reconcile("2026-11-01T10:00:00Z")
    assert installed.release()["metadata"]["generation"] == 1
    assert controller.reconcile_all() == ["hub-a/hub"]
    release = installed.release()
    ready = conditions(release)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ValuesError")
    assert ready["message"].startswith("could not resolve Secret chart values reference 'hub-a/hub-values'")
    assert release["status"]["lastHandledReconcileAt"] == "2026-11-01T10:00:00Z"
    assert controller.reconcile_all() == []


@needs_reference
def test_a_failed_upgrade_with_rollback_remediation_rolls_back(kube_api, installed, controller):
    remediation = {"upgrade": {"remediation": {"retries": 3, "strategy": "rollback"}}}
    installed.apply_release(helmrelease(chart_values(), **remediation))
    controller.reconcile_all()
    before = kube_api.get("Secret", "hub", "hub-a")
    installed.apply_release(helmrelease(chart_values(storage={"capacity": 5}), **remediation))
    controller.reconcile_all()
    release = installed.release()
    found = conditions(release)
    assert (found["Remediated"]["status"], found["Remediated"]["reason"]) == ("True", "RollbackSucceeded")
    assert (found["Ready"]["status"], found["Released"]["reason"]) == ("False", "UpgradeFailed")
    assert [(e["version"], e["status"], e["action"]) for e in release["status"]["history"]] == [
        (4, "deployed", "rollback"), (3, "failed", "upgrade"), (2, "superseded", "upgrade"),
        (1, "superseded", "install")]
    assert kube_api.get("Secret", "hub", "hub-a") == before


@needs_reference
def test_stalled_mode_reports_retries_exceeded(installed, controller):
    controller.fail_next["hub-a/hub"] = "stalled"
    installed.apply_release(helmrelease(chart_values(storage={"capacity": "10Gi"})))
    controller.reconcile_all()
    found = conditions(installed.release())
    assert (found["Stalled"]["status"], found["Stalled"]["reason"]) == ("True", "RetriesExceeded")
    assert found["Stalled"]["message"] == "Failed to upgrade after 1 attempt(s)"
    assert found["Ready"]["status"] == "False"


@needs_reference
def test_image_pull_mode_leaves_a_failing_pod_and_a_warning_event(kube_api, installed, controller):
    controller.fail_next["hub-a/hub"] = "image-pull"
    installed.request_reconcile("t1")
    controller.reconcile_all()
    (pod,) = kube_api.objects("Pod", "hub-a", labels="component=hub")
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    (event,) = kube_api.objects("Event", "hub-a")
    assert (event["type"], event["involvedObject"]["name"]) == ("Warning", pod["metadata"]["name"])
    assert kube_api.get("Deployment", "hub", "hub-a")["status"]["readyReplicas"] == 0
    installed.request_reconcile("t2")
    controller.reconcile_all()
    assert kube_api.objects("Pod", "hub-a") == []
    assert kube_api.get("Deployment", "hub", "hub-a")["status"]["readyReplicas"] == 1


@needs_reference
def test_progressing_mode_is_an_action_still_running(installed, controller):
    controller.fail_next["hub-a/hub"] = "progressing"
    installed.apply_release(helmrelease(chart_values(storage={"capacity": "10Gi"})))
    controller.reconcile_all()
    release = installed.release()
    found = conditions(release)
    assert (found["Reconciling"]["reason"], found["Ready"]["status"]) == ("Progressing", "Unknown")
    assert found["Ready"]["message"] == "Running 'upgrade' action with timeout of 15m0s"
    assert release["status"]["observedGeneration"] == 1 < release["metadata"]["generation"]
    controller.reconcile_all()
    assert conditions(installed.release())["Ready"]["reason"] == "UpgradeSucceeded"


@needs_reference
def test_a_values_secret_at_a_target_path_is_taken_literally(kube_api, console, controller):
    console.core.patch_namespaced_secret("oauth", "hub-a", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "oauth", "namespace": "hub-a"},
        "stringData": {"client_secret": "a,b\\c"}}, **APPLY)
    body = helmrelease(chart_values())
    body["spec"]["valuesFrom"] = [{"kind": "Secret", "name": "oauth", "valuesKey": "client_secret",
                                   "targetPath": "hub.config.GenericOAuthenticator.client_secret"}]
    console.apply_release(body)
    controller.reconcile_all()
    assert conditions(console.release())["Ready"]["status"] == "True"
    assert hub_values(kube_api)["hub"]["config"]["GenericOAuthenticator"]["client_secret"] == "a,b\\c"


@needs_reference
def test_deleting_the_release_uninstalls_but_keeps_the_database(kube_api, installed, controller):
    installed.custom.delete_namespaced_custom_object(*HR, "hub")
    assert installed.release()["metadata"]["deletionTimestamp"]
    controller.reconcile_all()
    assert kube_api.get("HelmRelease", "hub", "hub-a") is None
    assert kube_api.get("Deployment", "hub", "hub-a") is None
    assert kube_api.get("PersistentVolumeClaim", "hub-db-dir", "hub-a") is not None


@needs_reference
def test_a_cluster_older_than_the_chart_allows_fails_the_install(kube_api_factory):
    emulator = kube_api_factory(kube_version="1.30.0")
    emulator.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hub-a"}})
    console = Console(emulator)
    console.apply_secret(SECRET)
    console.apply_release(helmrelease(chart_values()))
    FakeHelmController(emulator).reconcile_all()
    released = conditions(console.release())["Released"]
    assert released["reason"] == "InstallFailed" and "kubeVersion" in released["message"]


def test_values_merge_later_wins_and_maps_merge():
    assert merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3}, "l": [2]}) == {"a": {"b": 1, "c": 3}, "l": [2]}
    assert at_path("hub.config.X.secret", "p,q") == {"hub": {"config": {"X": {"secret": "p,q"}}}}


def test_conditions_keep_their_transition_time_while_the_status_holds():
    old = [{"type": "Ready", "status": "True", "reason": "InstallSucceeded", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]
    assert condition("Ready", "True", "UpgradeSucceeded", "m", 2, old)["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert condition("Ready", "False", "UpgradeFailed", "m", 2, old)["lastTransitionTime"] != "2026-01-01T00:00:00Z"


def test_timeouts_print_as_go_durations():
    assert [format_timeout(t) for t in ("15m", "5m", "1h30m", "90s")] == ["15m0s", "5m0s", "1h30m0s", "1m30s"]
