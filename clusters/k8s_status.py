"""What a hub on Kubernetes is doing, read from plain dicts: pure classifiers, no client, no I/O.

:func:`classify_helmrelease` turns a Flux HelmRelease's status into one of :data:`clusters.base.PHASES` (where the last
change stands); :func:`classify_runtime` looks at the hub namespace's Deployments, Services, PVCs, Pods and Events (is
the hub up, and if not, what an operator can do about it); :func:`hub_status` folds both into a
:class:`clusters.base.HubStatus`.  ``../shared/notes/kubernetes.md`` §4.2 and §4.4 list the signals.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusters.base import HubStatus

POLL_SOON = 5.0  # seconds: a change is under way or the hub is coming up
POLL_RETRY = 15.0  # seconds: Flux retries on its own schedule

_RELEASE_FAILURES = {"InstallFailed", "UpgradeFailed"}


@dataclass(frozen=True)
class DeployStatus:
    """Where a HelmRelease stands.

    ``phase`` is one of PHASES; ``reason`` Flux's reason of the deciding condition; ``message`` its message;
    ``chart_version`` the chart version deployed now ("" when nothing is); ``generation``/``observed_generation``
    the spec's and the controller's last seen generation; ``handled_token`` the last reconcile request handled.
    """

    phase: str
    reason: str = ""
    message: str = ""
    chart_version: str = ""
    generation: int = 0
    observed_generation: int = -1
    handled_token: str = ""


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict)}


def _is(condition: dict[str, Any] | None, status: str, *reasons: str) -> bool:
    return bool(condition) and condition.get("status") == status and (not reasons or condition.get("reason") in reasons)


def _deployed_version(status: dict[str, Any]) -> str:
    """The chart version of the newest release in the history that is deployed now."""
    for entry in status.get("history") or []:
        if entry.get("status") == "deployed":
            return str(entry.get("chartVersion") or "")
    return ""


def _retries_left(obj: dict[str, Any], reason: str) -> bool:
    """Whether Flux will try again after this install or upgrade failure (negative retries: forever)."""
    action = "install" if reason == "InstallFailed" else "upgrade"
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    retries = int(((spec.get(action) or {}).get("remediation") or {}).get("retries") or 0)
    failures = int(status.get(f"{action}Failures") or status.get("failures") or 0)
    return retries < 0 or failures <= retries


def _messages(*conditions: dict[str, Any] | None) -> str:
    """The distinct messages of the conditions, in order, joined."""
    seen: list[str] = []
    for condition in conditions:
        text = ((condition or {}).get("message") or "").strip()
        if text and text not in seen:
            seen.append(text)
    return "; ".join(seen)


def classify_helmrelease(obj: dict[str, Any], want_chart_version: str | None = None,
                         token: str | None = None) -> DeployStatus:
    """The phase of a HelmRelease (notes §4.2), first match wins.

    1. ``Reconciling=True`` for the current generation: ``retrying`` (reason ``ProgressingWithRetry``) or
       ``progressing`` — while Helm works, ``observedGeneration`` still shows the previous generation.  The brief
       ``Reconciling`` of a periodic reconcile of a settled, ready release does not count.
    2. ``pending``: no status yet, ``Ready`` about an older generation (the condition's ``observedGeneration``,
       else the status's), or ``token`` not yet handled (``status.lastHandledReconcileAt``).
    3. ``succeeded``: ``Ready=True`` with the newest deployed release at ``want_chart_version`` (when given;
       otherwise ``pending``: that version has not been applied yet).
    4. ``rolled-back``: ``Remediated=True`` reason ``RollbackSucceeded`` (the previous version runs), even when Flux
       has then stalled.
    5. ``failed``: ``Stalled=True`` (``RetriesExceeded``, ``MissingRollbackTarget``, ...).
    6. ``Ready=False``: install/upgrade failures are ``retrying`` while retries are left, else ``failed``; source,
       values and controller errors (``ArtifactFailed``, ``SourceNotReady``, ``ValuesError``, ...) are ``failed``.
    7. ``Ready=Unknown`` or anything else: ``progressing``.
    """
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    generation = int(meta.get("generation") or 0)
    observed = int(-1 if status.get("observedGeneration") is None else status["observedGeneration"])
    handled = str(status.get("lastHandledReconcileAt") or "")
    deployed = _deployed_version(status)
    conditions = _conditions(obj)
    ready, released, reconciling = conditions.get("Ready"), conditions.get("Released"), conditions.get("Reconciling")
    remediated, stalled = conditions.get("Remediated"), conditions.get("Stalled")

    def result(phase: str, condition: dict[str, Any] | None, message: str | None = None) -> DeployStatus:
        return DeployStatus(phase=phase, reason=str((condition or {}).get("reason") or ""),
                            message=message if message is not None else _messages(condition),
                            chart_version=deployed, generation=generation, observed_generation=observed,
                            handled_token=handled)

    def current(condition: dict[str, Any] | None) -> bool:
        """Whether a condition speaks of this generation.  Flux stamps each condition with the generation it saw,
        and moves ``status.observedGeneration`` only on success or a terminal error: a values error on a new
        generation leaves ``observedGeneration`` behind while ``Ready=False`` is about the new spec."""
        if not condition:
            return False
        stamped = condition.get("observedGeneration")
        return int(observed if stamped is None else stamped) >= generation

    head = ready or released or stalled
    settled = current(head) and (token is None or handled == token)
    # every periodic reconcile marks Reconciling for a moment; a settled, ready release is not under way for that
    if current(reconciling) and _is(reconciling, "True") and not (
            settled and _is(ready, "True") and reconciling.get("reason") != "ProgressingWithRetry"):
        if reconciling.get("reason") == "ProgressingWithRetry":
            failure = released if _is(released, "False") else ready
            return result("retrying", failure or reconciling, _messages(failure, reconciling))
        return result("progressing", reconciling, _messages(ready if _is(ready, "Unknown") else None, reconciling))
    if not current(head):
        return result("pending", None, "waiting for the helm-controller to pick up the change")
    if not settled:
        return result("pending", None, "waiting for the helm-controller to handle the reconcile request")
    if _is(ready, "True"):
        if want_chart_version and deployed != want_chart_version:
            return result("pending", ready, f"chart {deployed or 'nothing'} deployed, {want_chart_version} wanted")
        return result("succeeded", ready)
    if _is(remediated, "True", "RollbackSucceeded"):
        return result("rolled-back", remediated, _messages(released, remediated))
    if _is(stalled, "True"):
        return result("failed", stalled, _messages(stalled, released if _is(released, "False") else ready))
    if _is(ready, "False"):
        failure = released if _is(released, "False", *_RELEASE_FAILURES) else ready
        if failure.get("reason") in _RELEASE_FAILURES:
            return result("retrying" if _retries_left(obj, failure["reason"]) else "failed", failure)
        # the chart cannot be fetched, the values cannot be composed, the controller cannot act: Flux keeps
        # trying, but someone has to change something first
        return result("failed", ready)
    return result("progressing", ready or reconciling or released)


# --- runtime -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuntimeHealth:
    """What the hub's namespace shows (notes §4.4).

    ``address``: the proxy-public LoadBalancer's IP or host name (or the Ingress's), "" when none yet;
    ``pvc_bound``: the hub database volume is Bound (None when the hub keeps no database volume);
    ``problems``: sentences an operator can act on, most telling first, with ``reason`` the machine word of the
    first; ``hub_deployed``: the hub Deployment exists.
    """

    hub_ready: bool
    proxy_ready: bool
    address: str = ""
    pvc_bound: bool | None = None
    problems: tuple[str, ...] = ()
    user_servers: int = 0
    hub_deployed: bool = False
    reason: str = ""


_IMAGE_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName"}
_WAITING_REASONS = _IMAGE_REASONS | {"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError"}
_EVENT_REASONS = {"FailedScheduling", "FailedMount", "FailedAttachVolume", "BackOff", "FailedCreate",
                  "ProvisioningFailed"}
HUB_DB_PVC = "hub-db-dir"


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _component(obj: dict[str, Any], component: str) -> bool:
    """Whether ``obj`` is the chart's ``component`` workload (by its label, or its default name)."""
    return _labels(obj).get("component") == component or (not _labels(obj).get("component") and _name(obj) == component)


def _ready_replicas(deployment: dict[str, Any] | None) -> bool:
    return bool(deployment) and int((deployment.get("status") or {}).get("readyReplicas") or 0) >= 1


def _deployment_problems(deployment: dict[str, Any]) -> list[tuple[str, str]]:
    """Quota rejections and stuck rollouts, as Deployment conditions report them."""
    problems = []
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        kind, reason, message = condition.get("type"), condition.get("reason") or "", condition.get("message") or ""
        what = f"the Deployment {_name(deployment)}"
        if kind == "ReplicaFailure" and condition.get("status") == "True":
            text = f"{what} cannot create its pods ({reason}): {message} — check the ResourceQuota and LimitRange"
            problems.append((reason or "FailedCreate", text))
        elif kind == "Progressing" and condition.get("status") == "False" and reason == "ProgressDeadlineExceeded":
            problems.append((reason, f"{what} stopped making progress ({reason}): {message}"))
    return problems


def _pod_problems(pod: dict[str, Any]) -> list[tuple[str, str]]:
    """Containers that cannot start or keep crashing, and pods no node takes."""
    name, status = _name(pod), pod.get("status") or {}
    images = {c.get("name"): c.get("image") for key in ("initContainers", "containers")
              for c in (pod.get("spec") or {}).get(key) or []}
    problems = []
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            why = condition.get("message") or condition.get("reason") or "no node fits"
            text = f"the pod {name} cannot be scheduled: {why} — add nodes or lower the resources it asks for"
            problems.append(("Unschedulable", text))
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason not in _WAITING_REASONS:
                continue
            image = container.get("image") or images.get(container.get("name")) or "?"
            detail = waiting.get("message") or ""
            if reason in _IMAGE_REASONS:
                text = (f"the image {image} cannot be pulled ({reason}): check the image name and tag and the "
                        "registry's access")
            elif reason == "CrashLoopBackOff":
                text = (f"the container {container.get('name')} of pod {name} keeps crashing ({reason}): read its "
                        f"log (kubectl logs {name} -c {container.get('name')} --previous)")
            else:
                text = (f"the container {container.get('name')} of pod {name} cannot be created ({reason})"
                        f"{': ' + detail if detail else ''} — check the Secrets and ConfigMaps it refers to")
            problems.append((reason, text))
    return problems


def _event_problem(event: dict[str, Any]) -> tuple[str, str] | None:
    """A Warning event worth an operator's attention, as a sentence."""
    reason = event.get("reason")
    if event.get("type") != "Warning" or reason not in _EVENT_REASONS:
        return None
    involved = event.get("involvedObject") or event.get("regarding") or {}
    what = f"{involved.get('kind') or 'object'} {involved.get('name') or '?'}"
    message = (event.get("message") or event.get("note") or "").strip()
    advice = {"FailedScheduling": "add nodes or lower the resources it asks for",
              "FailedMount": "check the volume and the Secrets and ConfigMaps it mounts",
              "FailedAttachVolume": "check the storage driver",
              "ProvisioningFailed": "check the StorageClass",
              "FailedCreate": "check the namespace's ResourceQuota and LimitRange",
              "BackOff": "read the container's log"}[reason]
    return reason, f"{what}: {message} ({reason}) — {advice}"


def _address(objects: list[dict[str, Any]]) -> str:
    """The proxy-public LoadBalancer's IP or host name, else the jupyterhub Ingress's; "" while none is assigned."""
    for kind, name in (("Service", "proxy-public"), ("Ingress", "jupyterhub")):
        for obj in objects:
            if obj.get("kind") == kind and _name(obj) == name:
                ingress = (((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [{}])[0] or {}
                if ingress.get("ip") or ingress.get("hostname"):
                    return str(ingress.get("ip") or ingress.get("hostname"))
    return ""


def classify_runtime(objects: list[dict[str, Any]]) -> RuntimeHealth:
    """How the hub's namespace looks: readiness of hub and proxy, the database volume, and what is stuck.

    ``objects`` are one namespace's Deployments, Services, Ingresses, PVCs, Pods and Events as dicts (any order).  No
    ready hub replica is not a problem by itself: the hub Deployment's ``Recreate`` strategy has none during every
    upgrade; the problems are what keeps a pod from running.
    """
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(str(obj.get("kind") or ""), []).append(obj)
    deployments = by_kind.get("Deployment", [])
    hub = next((d for d in deployments if _component(d, "hub")), None)
    proxy = next((d for d in deployments if _component(d, "proxy")), None)
    problems: list[tuple[str, str]] = []

    pvc = next((p for p in by_kind.get("PersistentVolumeClaim", []) if _name(p) == HUB_DB_PVC), None)
    pvc_phase = ((pvc or {}).get("status") or {}).get("phase")
    if pvc is not None and pvc_phase != "Bound":
        storage_class = (pvc.get("spec") or {}).get("storageClassName")
        hint = (f"check the StorageClass {storage_class} and its provisioner" if storage_class else
                "no default StorageClass? Set one, or hub.db.pvc.storageClassName")
        text = f"the hub database volume {HUB_DB_PVC} is not bound ({pvc_phase or 'Pending'}): {hint}"
        problems.append(("PVCPending", text))
    for deployment in deployments:
        problems.extend(_deployment_problems(deployment))

    pods = by_kind.get("Pod", [])
    troubled = set()
    for pod in pods:
        found = _pod_problems(pod)
        if found:
            troubled.add(_name(pod))
        problems.extend(found)
    live_pods = {_name(p) for p in pods}
    for event in by_kind.get("Event", []):
        involved = event.get("involvedObject") or event.get("regarding") or {}
        # a pod's own state already says it; an event about a pod that is gone is history
        if involved.get("kind") == "Pod" and (involved.get("name") in troubled or
                                              (pods and involved.get("name") not in live_pods)):
            continue
        found = _event_problem(event)
        if found:
            problems.append(found)

    unique: dict[str, str] = {}
    for reason, text in problems:
        unique.setdefault(text, reason)
    servers = sum(1 for p in pods if _labels(p).get("component") == "singleuser-server"
                  and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
    return RuntimeHealth(hub_ready=_ready_replicas(hub), proxy_ready=_ready_replicas(proxy), address=_address(objects),
                         pvc_bound=None if pvc is None else pvc_phase == "Bound", problems=tuple(unique),
                         user_servers=servers, hub_deployed=hub is not None, reason=next(iter(unique.values()), ""))


# --- together ------------------------------------------------------------------------------------------------------

def hub_status(deploy: DeployStatus, runtime: RuntimeHealth, url: str | None = None) -> HubStatus:
    """The backend's answer for one hub, from the HelmRelease's phase and the namespace's health.

    ``running``: the hub Deployment exists, or Flux is still bringing it (pending, progressing, retrying), or the
    previous version runs again (rolled-back); a failed change leaves ``running`` to the Deployment (a values error
    on an upgrade leaves the old hub serving).  ``ready``: the change succeeded, or was rolled back, and hub and
    proxy have ready replicas.  The message is Flux's for a failure, retry or rollback, otherwise the first runtime
    problem, else Flux's.
    """
    phase = deploy.phase
    running = runtime.hub_deployed or phase in ("pending", "progressing", "retrying", "rolled-back")
    up = runtime.hub_ready and runtime.proxy_ready
    ready = up and phase in ("succeeded", "rolled-back")
    if phase in ("failed", "retrying", "rolled-back"):
        message, reason = deploy.message or (runtime.problems[:1] or ("",))[0], deploy.reason
    else:
        message = runtime.problems[0] if runtime.problems else deploy.message
        reason = runtime.reason if runtime.problems else deploy.reason
    if phase in ("pending", "progressing") or (phase == "succeeded" and not ready):
        retry_after: float | None = POLL_SOON
    elif phase == "retrying":
        retry_after = POLL_RETRY
    else:
        retry_after = None
    address = f"http://{runtime.address}/" if runtime.address else None
    return HubStatus(running=running, ready=ready, url=url or address, message=message, retry_after=retry_after,
                     phase=phase, reason=reason)
