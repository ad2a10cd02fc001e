"""Reading a hub's state on Kubernetes (clusters/k8s_status.py): L1 pure tests over Flux- and Kubernetes-shaped dicts.

The fixtures are what helm-controller (v1.x, HelmRelease v2) and the API server report, written out by hand: one
HelmRelease per row of the phase table (notes §4.2) and one namespace per runtime check (notes §4.4).
"""
from __future__ import annotations

import copy

import pytest

from clusters.base import PHASES
from clusters.k8s_status import DeployStatus, RuntimeHealth, classify_helmrelease, classify_runtime, hub_status

RELEASE = "hf-42-physics-lab"
NS = RELEASE
T0 = "2026-11-03T10:00:00Z"
T1 = "2026-11-03T10:04:12Z"


def condition(kind, status, reason, message, generation=2):
    return {"type": kind, "status": status, "reason": reason, "message": message, "observedGeneration": generation,
            "lastTransitionTime": T1}


def history_entry(version, chart_version, status, action="upgrade"):
    return {"name": RELEASE, "namespace": NS, "version": version, "chartName": "jupyterhub",
            "chartVersion": chart_version, "appVersion": "5.3.0", "status": status, "action": action,
            "configDigest": "sha256:6e1f...", "digest": "sha256:9a0b...", "firstDeployed": T0, "lastDeployed": T1}


def helmrelease(generation=2, status=None, retries=1, annotations=None):
    """A HelmRelease as the backend writes it, with the status helm-controller has patched in."""
    obj = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": RELEASE, "namespace": NS, "generation": generation, "uid": "0f6c2f1e-...",
                     "resourceVersion": "84213", "annotations": annotations or {},
                     "labels": {"app.kubernetes.io/managed-by": "hubfleet"}},
        "spec": {"interval": "10m", "releaseName": RELEASE, "timeout": "15m",
                 "chart": {"spec": {"chart": "jupyterhub", "version": "4.4.0",
                                    "sourceRef": {"kind": "HelmRepository", "name": "z2jh-2c52fe56a5",
                                                  "namespace": "hubfleet-system"}}},
                 "install": {"remediation": {"retries": 3}},
                 "upgrade": {"remediation": {"retries": retries, "remediateLastFailure": True,
                                             "strategy": "rollback"}}},
    }
    if status is not None:
        obj["status"] = {"storageNamespace": NS, "helmChart": f"hubfleet-system/{NS}-{RELEASE}", **status}
    return obj


UPGRADED = {
    "observedGeneration": 2, "lastAttemptedGeneration": 2, "lastAttemptedRevision": "4.4.0",
    "lastAttemptedReleaseAction": "upgrade", "lastAttemptedConfigDigest": "sha256:6e1f...",
    "lastHandledReconcileAt": "hubfleet-7",
    "history": [history_entry(3, "4.4.0", "deployed"), history_entry(2, "4.3.0", "superseded")],
    "conditions": [
        condition("Ready", "True", "UpgradeSucceeded",
                  f"Helm upgrade succeeded for release {NS}/{RELEASE}.v3 with chart jupyterhub@4.4.0"),
        condition("Released", "True", "UpgradeSucceeded",
                  f"Helm upgrade succeeded for release {NS}/{RELEASE}.v3 with chart jupyterhub@4.4.0"),
    ],
}


# --- classify_helmrelease: one fixture per row of the phase table --------------------------------------------------

def test_no_status_yet_is_pending():
    deploy = classify_helmrelease(helmrelease(generation=1))
    assert (deploy.phase, deploy.observed_generation, deploy.generation) == ("pending", -1, 1)
    assert "helm-controller" in deploy.message


def test_a_new_generation_not_yet_observed_is_pending():
    status = copy.deepcopy(UPGRADED)
    status["observedGeneration"] = 2
    deploy = classify_helmrelease(helmrelease(generation=3, status=status))
    assert deploy.phase == "pending" and deploy.chart_version == "4.4.0"


def test_an_unhandled_reconcile_request_is_pending():
    deploy = classify_helmrelease(helmrelease(status=UPGRADED), token="hubfleet-8")
    assert (deploy.phase, deploy.handled_token) == ("pending", "hubfleet-7")
    assert classify_helmrelease(helmrelease(status=UPGRADED), token="hubfleet-7").phase == "succeeded"


def test_an_upgrade_under_way_is_progressing():
    """While Helm works, observedGeneration still shows the previous generation; Reconciling says what runs."""
    status = {
        "observedGeneration": 1, "lastAttemptedGeneration": 2, "lastAttemptedRevision": "4.4.0",
        "lastAttemptedReleaseAction": "upgrade",
        "history": [history_entry(2, "4.3.0", "deployed")],
        "conditions": [
            condition("Reconciling", "True", "Progressing", "Running 'upgrade' action with timeout of 15m0s"),
            condition("Ready", "Unknown", "Progressing", "Running 'upgrade' action with timeout of 15m0s"),
            condition("Released", "True", "UpgradeSucceeded", "Helm upgrade succeeded", generation=1),
        ],
    }
    deploy = classify_helmrelease(helmrelease(status=status), want_chart_version="4.4.0")
    assert (deploy.phase, deploy.reason) == ("progressing", "Progressing")
    assert deploy.message == "Running 'upgrade' action with timeout of 15m0s"
    assert deploy.chart_version == "4.3.0"


def test_ready_unknown_without_reconciling_is_progressing():
    status = {"observedGeneration": 2, "conditions": [
        condition("Ready", "Unknown", "Progressing", "reconciliation in progress")]}
    assert classify_helmrelease(helmrelease(status=status)).phase == "progressing"


def test_a_deployed_release_at_the_wanted_version_succeeded():
    deploy = classify_helmrelease(helmrelease(status=UPGRADED), want_chart_version="4.4.0")
    assert (deploy.phase, deploy.reason, deploy.chart_version) == ("succeeded", "UpgradeSucceeded", "4.4.0")
    assert deploy.message.startswith("Helm upgrade succeeded for release")
    assert (deploy.generation, deploy.observed_generation) == (2, 2)


def test_ready_at_another_version_is_not_yet_success():
    deploy = classify_helmrelease(helmrelease(status=UPGRADED), want_chart_version="4.5.0")
    assert deploy.phase == "pending" and "4.5.0" in deploy.message


def test_a_periodic_reconcile_of_a_ready_release_stays_succeeded():
    """helm-controller marks Reconciling at the start of every interval's reconcile; the hub must not flicker."""
    status = copy.deepcopy(UPGRADED)
    status["conditions"].append(condition("Reconciling", "True", "Progressing", "Fulfilling prerequisites"))
    assert classify_helmrelease(helmrelease(status=status), want_chart_version="4.4.0").phase == "succeeded"


def test_an_upgrade_failure_with_a_retry_left_is_retrying():
    status = {
        "observedGeneration": 1, "lastAttemptedGeneration": 2, "failures": 1, "upgradeFailures": 1,
        "history": [history_entry(4, "4.3.0", "deployed", "rollback"), history_entry(3, "4.4.0", "failed")],
        "conditions": [
            condition("Reconciling", "True", "ProgressingWithRetry",
                      "Detected failure for release, retrying upgrade (attempt 2)"),
            condition("Ready", "False", "RollbackSucceeded",
                      f"Helm rollback to previous release {NS}/{RELEASE}.v2 with chart jupyterhub@4.3.0 succeeded"),
            condition("Released", "False", "UpgradeFailed",
                      f"Helm upgrade failed for release {NS}/{RELEASE} with chart jupyterhub@4.4.0: "
                      "context deadline exceeded"),
            condition("Remediated", "True", "RollbackSucceeded",
                      f"Helm rollback to previous release {NS}/{RELEASE}.v2 with chart jupyterhub@4.3.0 succeeded"),
        ],
    }
    deploy = classify_helmrelease(helmrelease(status=status), want_chart_version="4.4.0")
    assert (deploy.phase, deploy.reason) == ("retrying", "UpgradeFailed")
    assert "context deadline exceeded" in deploy.message
    assert deploy.chart_version == "4.3.0"


def test_an_install_failure_between_attempts_is_retrying_until_retries_run_out():
    status = {
        "observedGeneration": 1, "installFailures": 2, "failures": 2,
        "conditions": [
            condition("Ready", "False", "InstallFailed",
                      f"Helm install failed for release {NS}/{RELEASE} with chart jupyterhub@4.4.0: "
                      "execution error at (jupyterhub/templates/NOTES.txt): chart values failed", generation=1),
            condition("Released", "False", "InstallFailed",
                      f"Helm install failed for release {NS}/{RELEASE} with chart jupyterhub@4.4.0: "
                      "execution error at (jupyterhub/templates/NOTES.txt): chart values failed", generation=1),
        ],
    }
    retrying = classify_helmrelease(helmrelease(generation=1, status=status))
    assert (retrying.phase, retrying.reason) == ("retrying", "InstallFailed")
    status = {**status, "installFailures": 4, "failures": 4}
    assert classify_helmrelease(helmrelease(generation=1, status=status)).phase == "failed"


def test_a_rolled_back_upgrade_is_rolled_back():
    """Retries used up, the last failure rolled back: the previous chart version runs again."""
    status = {
        "observedGeneration": 2, "lastAttemptedGeneration": 2, "failures": 2, "upgradeFailures": 2,
        "history": [history_entry(6, "4.3.0", "deployed", "rollback"), history_entry(5, "4.4.0", "failed")],
        "conditions": [
            condition("Stalled", "True", "RetriesExceeded", "Failed to upgrade after 2 attempt(s)"),
            condition("Ready", "False", "RollbackSucceeded",
                      f"Helm rollback to previous release {NS}/{RELEASE}.v4 with chart jupyterhub@4.3.0 succeeded"),
            condition("Released", "False", "UpgradeFailed",
                      f"Helm upgrade failed for release {NS}/{RELEASE} with chart jupyterhub@4.4.0: pre-upgrade "
                      "hooks failed: timed out waiting for the condition"),
            condition("Remediated", "True", "RollbackSucceeded",
                      f"Helm rollback to previous release {NS}/{RELEASE}.v4 with chart jupyterhub@4.3.0 succeeded"),
        ],
    }
    deploy = classify_helmrelease(helmrelease(status=status), want_chart_version="4.4.0")
    assert (deploy.phase, deploy.reason, deploy.chart_version) == ("rolled-back", "RollbackSucceeded", "4.3.0")
    assert "pre-upgrade hooks failed" in deploy.message and "rollback" in deploy.message


INSTALL_TIMED_OUT = f"Helm install failed for release {NS}/{RELEASE}: timed out waiting for the condition"


@pytest.mark.parametrize("reason,message", [
    ("RetriesExceeded", "Failed to install after 4 attempt(s)"),
    ("MissingRollbackTarget", ("Failed to perform remediation: missing target release for rollback: "
                               "cannot remediate failed release")),
])
def test_stalled_is_failed(reason, message):
    status = {
        "observedGeneration": 2, "installFailures": 4,
        "history": [history_entry(1, "4.4.0", "failed", "install")],
        "conditions": [
            condition("Stalled", "True", reason, message),
            condition("Ready", "False", "InstallFailed", INSTALL_TIMED_OUT),
            condition("Released", "False", "InstallFailed", INSTALL_TIMED_OUT),
            condition("Remediated", "True", "UninstallSucceeded", "Helm uninstall succeeded"),
        ],
    }
    deploy = classify_helmrelease(helmrelease(status=status))
    assert (deploy.phase, deploy.reason, deploy.chart_version) == ("failed", reason, "")
    assert message in deploy.message and "timed out" in deploy.message


@pytest.mark.parametrize("reason,message", [
    ("ArtifactFailed", (f'could not get Source object: HelmChart.source.toolkit.fluxcd.io "{NS}-{RELEASE}" '
                        "not found")),
    ("SourceNotReady", (f"HelmChart 'hubfleet-system/{NS}-{RELEASE}' is not ready: invalid chart reference: failed "
                        "to get chart version for remote reference: no 'jupyterhub' chart with version matching "
                        "'9.9.9' found")),
    ("ValuesError", (f"could not resolve Secret chart values reference '{NS}/hubfleet-values' with key "
                     "'values.yaml': secrets \"hubfleet-values\" not found")),
])
def test_source_and_values_errors_are_failed(reason, message):
    status = {"observedGeneration": 2, "history": [history_entry(3, "4.3.0", "deployed")],
              "conditions": [condition("Ready", "False", reason, message)]}
    deploy = classify_helmrelease(helmrelease(status=status))
    assert (deploy.phase, deploy.reason, deploy.message) == ("failed", reason, message)
    assert deploy.chart_version == "4.3.0", "the previous release still runs"


def test_a_values_error_on_a_new_generation_is_failed_not_pending():
    """helm-controller moves observedGeneration only on success or a terminal error; the Ready condition carries
    the generation it speaks of."""
    status = {"observedGeneration": 2, "history": [history_entry(3, "4.3.0", "deployed")],
              "conditions": [condition("Ready", "False", "ValuesError", 'secrets "hubfleet-values" not found', 3),
                             condition("Released", "True", "UpgradeSucceeded", "Helm upgrade succeeded", 2)]}
    deploy = classify_helmrelease(helmrelease(generation=3, status=status))
    assert (deploy.phase, deploy.reason, deploy.observed_generation) == ("failed", "ValuesError", 2)


def test_an_upgrade_failure_of_a_new_generation_between_attempts_is_retrying():
    status = {"observedGeneration": 2, "upgradeFailures": 1,
              "history": [history_entry(4, "4.3.0", "deployed", "rollback"), history_entry(3, "4.4.0", "failed")],
              "conditions": [condition("Ready", "False", "UpgradeFailed", "Helm upgrade failed: timed out", 3),
                             condition("Released", "False", "UpgradeFailed", "Helm upgrade failed: timed out", 3)]}
    deploy = classify_helmrelease(helmrelease(generation=3, status=status))
    assert (deploy.phase, deploy.reason, deploy.message) == ("retrying", "UpgradeFailed",
                                                             "Helm upgrade failed: timed out")
    exhausted = {**status, "upgradeFailures": 2}
    assert classify_helmrelease(helmrelease(generation=3, status=exhausted)).phase == "failed"


def test_every_phase_is_a_known_one():
    assert {classify_helmrelease(helmrelease(status=s)).phase for s in (None, UPGRADED)} <= set(PHASES)


# --- classify_runtime: one namespace per check ---------------------------------------------------------------------

def deployment(name, ready, replicas=1, conditions=()):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": "jupyterhub", "component": name,
                                                                   "release": RELEASE}},
            "spec": {"replicas": replicas, "strategy": {"type": "Recreate"}},
            "status": {"replicas": replicas, "readyReplicas": ready, "conditions": list(conditions)}
            if ready else {"replicas": replicas, "unavailableReplicas": replicas, "conditions": list(conditions)}}


def service(ip=None, hostname=None):
    ingress = [{k: v for k, v in (("ip", ip), ("hostname", hostname)) if v}] if (ip or hostname) else []
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "proxy-public", "namespace": NS},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            "status": {"loadBalancer": {"ingress": ingress} if ingress else {}}}


def pvc(phase, storage_class=None):
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "hub-db-dir", "namespace": NS,
                         "annotations": {"helm.sh/resource-policy": "keep"}},
            "spec": spec, "status": {"phase": phase}}


def pod(name, component, image="quay.io/jupyterhub/k8s-hub:4.4.0", waiting=None, phase="Running",
        scheduled=True, message=""):
    container = {"name": component if component != "singleuser-server" else "notebook", "image": image}
    status = {"phase": phase, "conditions": [{"type": "PodScheduled", "status": "True"}]}
    if not scheduled:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": message}]
    else:
        state = {"waiting": {"reason": waiting, "message": message}} if waiting else {"running": {"startedAt": T1}}
        status["containerStatuses"] = [{"name": container["name"], "image": image, "ready": not waiting,
                                        "restartCount": 4 if waiting == "CrashLoopBackOff" else 0, "state": state}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": "jupyterhub", "component": component}},
            "spec": {"containers": [container]}, "status": status}


def event(reason, message, kind="Pod", name="hub-7d9f8c6b5-x2x9z", type_="Warning"):
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{name}.17a3b", "namespace": NS},
            "type": type_, "reason": reason, "message": message, "count": 3, "lastTimestamp": T1,
            "involvedObject": {"kind": kind, "name": name, "namespace": NS}}


HEALTHY = [deployment("hub", 1), deployment("proxy", 1), service(ip="203.0.113.10"), pvc("Bound"),
           pod("hub-7d9f8c6b5-x2x9z", "hub"), pod("proxy-5f6d7c8b9-abcde", "proxy"),
           pod("jupyter-alice", "singleuser-server", "quay.io/jupyter/scipy-notebook:2025-01-06"),
           pod("jupyter-bob", "singleuser-server", "quay.io/jupyter/scipy-notebook:2025-01-06"),
           pod("jupyter-carol", "singleuser-server", phase="Succeeded")]


def test_a_healthy_namespace():
    health = classify_runtime(HEALTHY)
    assert health == RuntimeHealth(hub_ready=True, proxy_ready=True, address="203.0.113.10", pvc_bound=True,
                                   problems=(), user_servers=2, hub_deployed=True, reason="")


def test_a_hostname_address_and_none_yet():
    assert classify_runtime([service(hostname="a1b2.elb.example.com")]).address == "a1b2.elb.example.com"
    assert classify_runtime([service()]).address == ""


def test_an_upgrade_with_recreate_has_no_ready_hub_but_no_problem():
    health = classify_runtime([deployment("hub", 0), deployment("proxy", 1), pvc("Bound"),
                               pod("hub-7d9f8c6b5-new01", "hub", phase="Pending")])
    assert (health.hub_ready, health.proxy_ready, health.hub_deployed, health.problems) == (False, True, True, ())


def test_a_pending_database_volume_hints_at_the_storage_class():
    health = classify_runtime([deployment("hub", 0), pvc("Pending")])
    assert health.pvc_bound is False and health.reason == "PVCPending"
    assert "hub-db-dir" in health.problems[0] and "no default StorageClass" in health.problems[0]
    named = classify_runtime([pvc("Pending", storage_class="fast-ssd")])
    assert "fast-ssd" in named.problems[0]


def test_no_database_volume_is_not_a_problem():
    health = classify_runtime([deployment("hub", 1), deployment("proxy", 1)])
    assert health.pvc_bound is None and health.problems == ()


@pytest.mark.parametrize("waiting,message,expected", [
    ("ImagePullBackOff", 'Back-off pulling image "quay.io/x/hub:nope"',
     "the image quay.io/x/hub:nope cannot be pulled (ImagePullBackOff): check the image name"),
    ("ErrImagePull", "manifest unknown", "the image quay.io/x/hub:nope cannot be pulled (ErrImagePull)"),
    ("CrashLoopBackOff", "back-off 5m0s restarting failed container=hub",
     "keeps crashing (CrashLoopBackOff): read its log (kubectl logs hub-7d9f8c6b5-x2x9z -c hub --previous)"),
    ("CreateContainerConfigError", 'secret "hub" not found',
     'cannot be created (CreateContainerConfigError): secret "hub" not found'),
])
def test_containers_that_cannot_run(waiting, message, expected):
    objects = [deployment("hub", 0), pod("hub-7d9f8c6b5-x2x9z", "hub", "quay.io/x/hub:nope", waiting, "Pending",
                                         message=message),
               event("BackOff", message)]  # the pod's event says the same: reported once
    health = classify_runtime(objects)
    assert health.reason == waiting and len(health.problems) == 1
    assert expected in health.problems[0]


def test_a_pod_no_node_takes():
    message = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available"
    health = classify_runtime([pod("jupyter-alice", "singleuser-server", scheduled=False, phase="Pending",
                                   message=message),
                               event("FailedScheduling", message, name="jupyter-alice")])
    assert health.problems == (
        f"the pod jupyter-alice cannot be scheduled: {message} — add nodes or lower the resources it asks for",)
    assert health.reason == "Unschedulable"


@pytest.mark.parametrize("reason,kind,name,message,advice", [
    ("FailedCreate", "ReplicaSet", "hub-7d9f8c6b5",
     ('pods "hub-7d9f8c6b5-q" is forbidden: exceeded quota: hubfleet-guardrails, requested: pods=1, '
      "used: pods=1020, limited: pods=1020"), "ResourceQuota"),
    ("FailedMount", "Pod", "hub-7d9f8c6b5-x2x9z",
     'MountVolume.SetUp failed for volume "config" : secret "hub" not found', "check the volume"),
    ("FailedScheduling", "Pod", "hub-7d9f8c6b5-x2x9z",
     "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims", "add nodes"),
    ("BackOff", "Pod", "hub-7d9f8c6b5-x2x9z", "Back-off restarting failed container hub", "log"),
])
def test_warning_events(reason, kind, name, message, advice):
    health = classify_runtime([deployment("hub", 0), event(reason, message, kind, name)])
    assert health.reason == reason
    assert health.problems[0].startswith(f"{kind} {name}: {message} ({reason})") and advice in health.problems[0]


def test_normal_events_and_events_of_gone_pods_are_not_problems():
    objects = [*HEALTHY, event("Pulled", "Successfully pulled image", type_="Normal"),
               event("BackOff", "Back-off restarting failed container", name="hub-old-gone")]
    assert classify_runtime(objects).problems == ()


def test_quota_rejection_on_the_deployment():
    failure = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
               "message": 'pods "hub-7d9f8c6b5-q" is forbidden: exceeded quota: hubfleet-guardrails'}
    health = classify_runtime([deployment("hub", 0, conditions=[failure])])
    assert health.reason == "FailedCreate" and "ResourceQuota" in health.problems[0]
    assert "exceeded quota" in health.problems[0]


# --- hub_status ----------------------------------------------------------------------------------------------------

def deploy_status(phase, reason="", message="", version="4.4.0"):
    return DeployStatus(phase=phase, reason=reason, message=message, chart_version=version, generation=2,
                        observed_generation=2, handled_token="")


UP = classify_runtime(HEALTHY)
DOWN = classify_runtime([deployment("hub", 0), pod("hub-7d9f8c6b5-x2x9z", "hub", "quay.io/x/hub:nope",
                                                   "ImagePullBackOff", "Pending")])
NOTHING = classify_runtime([])


def test_a_succeeded_and_healthy_hub_is_ready():
    status = hub_status(deploy_status("succeeded", "UpgradeSucceeded", "Helm upgrade succeeded"), UP)
    assert (status.running, status.ready, status.phase, status.reason) == (True, True, "succeeded",
                                                                           "UpgradeSucceeded")
    assert status.url == "http://203.0.113.10/" and status.retry_after is None
    assert hub_status(deploy_status("succeeded"), UP, url="https://lab.uni.example/").url == "https://lab.uni.example/"


def test_succeeded_with_a_runtime_problem_is_not_ready_and_says_why():
    status = hub_status(deploy_status("succeeded", "UpgradeSucceeded", "Helm upgrade succeeded"), DOWN)
    assert (status.running, status.ready, status.reason) == (True, False, "ImagePullBackOff")
    assert status.message.startswith("the image quay.io/x/hub:nope cannot be pulled")
    assert status.retry_after == 5.0 and status.url is None


@pytest.mark.parametrize("phase", ["pending", "progressing"])
def test_a_change_on_its_way_runs_but_is_not_ready(phase):
    status = hub_status(deploy_status(phase, "Progressing", "Running 'install' action with timeout of 15m0s"),
                        NOTHING)
    assert (status.running, status.ready, status.phase, status.retry_after) == (True, False, phase, 5.0)
    assert status.message == "Running 'install' action with timeout of 15m0s"
    assert not hub_status(deploy_status(phase), UP).ready, "the old version is up, the change is not done"


def test_retrying_keeps_flux_message():
    status = hub_status(deploy_status("retrying", "UpgradeFailed", "Helm upgrade failed: timed out"), DOWN)
    assert (status.running, status.ready, status.reason, status.retry_after) == (True, False, "UpgradeFailed", 15.0)
    assert status.message == "Helm upgrade failed: timed out"


def test_rolled_back_runs_the_previous_version():
    status = hub_status(deploy_status("rolled-back", "RollbackSucceeded", "Helm upgrade failed; rollback succeeded",
                                      version="4.3.0"), UP)
    assert (status.running, status.ready, status.phase, status.reason) == (True, True, "rolled-back",
                                                                           "RollbackSucceeded")
    assert not hub_status(deploy_status("rolled-back"), DOWN).ready


def test_failed_without_a_hub_is_not_running():
    status = hub_status(deploy_status("failed", "RetriesExceeded", "Failed to install after 4 attempt(s)", ""),
                        NOTHING)
    assert (status.running, status.ready, status.phase, status.reason) == (False, False, "failed", "RetriesExceeded")
    assert status.message == "Failed to install after 4 attempt(s)" and status.retry_after is None


def test_a_failed_change_leaves_the_old_hub_running():
    """A values error on an upgrade: no Helm action ran, the previous hub still serves."""
    status = hub_status(deploy_status("failed", "ValuesError", 'secrets "hubfleet-values" not found'), UP)
    assert (status.running, status.ready, status.reason) == (True, False, "ValuesError")
    assert status.message == 'secrets "hubfleet-values" not found'
