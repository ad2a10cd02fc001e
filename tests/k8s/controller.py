"""A fake Flux helm-controller for tests: renders the real z2jh chart for every HelmRelease in the API emulator.

No cluster can run here (../shared/notes/kubernetes.md §7), so this stands in for helm-controller in the L5 tests
(§8.6): one :meth:`FakeHelmController.reconcile_all` pass reads each HelmRelease from the emulator, resolves its
``valuesFrom`` Secrets/ConfigMaps as Flux does, renders the chart with the real Helm engine (tests/k8s/helm.py) at
the emulator's Kubernetes version, checks the output against the API schemas, writes the objects into the target
namespace and reports a Flux-shaped status (conditions, history, observedGeneration, lastHandledReconcileAt).

What it does not do: hooks, waiting, drift detection, Helm's release storage, retries over time.  Failures never
stall on their own; a test asks for the outcomes that need time or a broken cluster through ``fail_next``:
``"stalled"`` (retries exhausted: ``Stalled=True`` ``RetriesExceeded``), ``"progressing"`` (an action still
running) and ``"image-pull"`` (installed, but the hub's pod cannot pull its image: a ``Pod`` waiting in
``ImagePullBackOff`` and a ``Warning`` Event).
"""
from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
import re
from typing import Any

import helm_python
import kmock
import yaml

from tests.k8s import helm
from tests.k8s.emulator import Emulator
from tests.k8s.schemas import SchemaError, validate

FINALIZER = "finalizers.fluxcd.io"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
RELEASE_NAME = "meta.helm.sh/release-name"
RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"
KEEP = ("helm.sh/resource-policy", "keep")
MAX_HISTORY = 5
LOAD_BALANCER_IP = "203.0.113.10"
MODES = ("stalled", "progressing", "image-pull")


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ValuesError(Exception):
    """A ``valuesFrom`` reference that cannot be resolved; the message is Flux's."""


def merge(base: dict, top: dict) -> dict:
    """``top`` deep-merged over ``base`` (maps merge, everything else is replaced), as Flux merges values."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def at_path(target_path: str, value: str) -> dict:
    """``value`` placed at a Helm ``--set`` path, as a string (commas and backslashes in it kept literally)."""
    escaped = value.replace("\\", "\\\\").replace(",", "\\,")
    return helm_python.parse_set_string(f"{target_path}={escaped}")


def resolve_values(emulator: Emulator, release: dict) -> dict:
    """``valuesFrom`` merged in order, then ``spec.values`` on top; :class:`ValuesError` for a missing reference."""
    namespace, spec = release["metadata"]["namespace"], release["spec"]
    values: dict = {}
    for ref in spec.get("valuesFrom") or []:
        kind, name, key = ref["kind"], ref["name"], ref.get("valuesKey") or "values.yaml"
        source = emulator.get(kind, name, namespace)
        data = (source or {}).get("data") or {}
        if source is None or key not in data:
            if ref.get("optional"):
                continue
            problem = f'{kind.lower()}s "{name}" not found' if source is None else f"missing key '{key}'"
            raise ValuesError(f"could not resolve {kind} chart values reference '{namespace}/{name}' with key "
                              f"'{key}': {problem}")
        text = base64.b64decode(data[key]).decode() if kind == "Secret" else data[key]
        if ref.get("targetPath"):
            values = merge(values, at_path(ref["targetPath"], text))
        else:
            values = merge(values, yaml.safe_load(text) or {})
    return merge(values, spec.get("values") or {})


def condition(type_: str, status: str, reason: str, message: str, generation: int, previous: list[dict]) -> dict:
    """A Flux-shaped condition; ``lastTransitionTime`` moves only when ``status`` changes."""
    old = next((c for c in previous if c["type"] == type_), None)
    since = old["lastTransitionTime"] if old and old["status"] == status else now()
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since,
            "observedGeneration": generation}


def readied(obj: dict) -> dict:
    """A rendered object as it looks once its controllers have acted: workloads ready, PVCs bound, LBs addressed."""
    obj, kind, spec = copy.deepcopy(obj), obj["kind"], obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet"):
        replicas = spec.get("replicas", 1)
        obj["status"] = {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas,
                         "availableReplicas": replicas, "updatedReplicas": replicas}
    elif kind == "DaemonSet":
        obj["status"] = {"desiredNumberScheduled": 1, "currentNumberScheduled": 1, "numberReady": 1,
                         "numberAvailable": 1, "updatedNumberScheduled": 1, "numberMisscheduled": 0}
    elif kind == "PersistentVolumeClaim":
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        obj["status"] = {"phase": "Bound", "accessModes": spec.get("accessModes", []),
                         "capacity": {"storage": storage}}
    elif kind == "Service" and spec.get("type") == "LoadBalancer":
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER_IP}]}}
    return obj


class FakeHelmController:
    """One reconcile pass at a time over the HelmReleases in an :class:`Emulator` (module docstring).

    ``fail_next["<namespace>/<name>"] = mode`` makes the next reconcile of that release end in ``mode``."""

    def __init__(self, emulator: Emulator):
        self.emulator = emulator
        self.fail_next: dict[str, str] = {}

    def reconcile_all(self) -> list[str]:
        """Reconcile every HelmRelease once; the ``namespace/name`` of those acted on."""
        acted = []
        for release in self.emulator.objects("HelmRelease"):
            meta = release["metadata"]
            if self.reconcile(release):
                acted.append(f'{meta["namespace"]}/{meta["name"]}')
        return acted

    # --- one release ---

    def reconcile(self, release: dict) -> bool:
        """Act on one HelmRelease if it is deleted, new, changed or asked to reconcile; whether it acted."""
        meta, spec = release["metadata"], release["spec"]
        if meta.get("deletionTimestamp"):
            self.uninstall(release)
            return True
        if FINALIZER not in (meta.get("finalizers") or []):
            release = self.emulator.patch("HelmRelease", meta["name"], meta["namespace"],
                                          {"metadata": {"finalizers": [*(meta.get("finalizers") or []), FINALIZER]}})
        status = release.get("status") or {}
        token = (meta.get("annotations") or {}).get(REQUESTED_AT)
        due = meta["generation"] > status.get("observedGeneration", -1) or (
            token is not None and token != status.get("lastHandledReconcileAt")) or retrying(status)
        if spec.get("suspend") or not due:
            return False
        mode = self.fail_next.pop(f'{meta["namespace"]}/{meta["name"]}', None)
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        self.act(release, mode, token)
        return True

    def act(self, release: dict, mode: str | None, token: str | None) -> None:
        meta, spec = release["metadata"], release["spec"]
        status = copy.deepcopy(release.get("status") or {})
        history = status.get("history") or []
        action = "upgrade" if any(entry["status"] == "deployed" for entry in history) else "install"
        namespace = spec.get("targetNamespace") or meta["namespace"]
        name = spec.get("releaseName") or (f'{spec["targetNamespace"]}-{meta["name"]}'
                                           if spec.get("targetNamespace") else meta["name"])
        chart_version = ((spec.get("chart") or {}).get("spec") or {}).get("version") or \
            helm.chart().metadata.get("version")
        status.update(lastAttemptedGeneration=meta["generation"], lastAttemptedRevision=chart_version,
                      lastAttemptedReleaseAction=action)
        if token is not None:
            status["lastHandledReconcileAt"] = token
        if mode == "progressing":
            return self.progressing(release, status, action, spec.get("timeout", "5m"))
        try:
            values = resolve_values(self.emulator, release)
        except ValuesError as exc:
            status["observedGeneration"] = meta["generation"]
            status["conditions"] = [condition("Ready", "False", "ValuesError", str(exc), meta["generation"],
                                              status.get("conditions") or [])]
            return self.write_status(release, status)
        status["lastAttemptedConfigDigest"] = digest(values)
        chart_ref = f"jupyterhub@{chart_version}"
        if action == "install" and self.emulator.get("Namespace", namespace) is None and not (
                spec.get("install") or {}).get("createNamespace"):
            return self.failed(release, status, action, name, namespace, chart_ref,
                               f'create: failed to create: namespaces "{namespace}" not found', mode)
        try:
            objects = self.render(values, name, namespace) if mode != "stalled" else None
        except (helm.RenderError, SchemaError) as exc:
            return self.failed(release, status, action, name, namespace, chart_ref, str(exc), mode)
        if objects is None:
            return self.failed(release, status, action, name, namespace, chart_ref,
                               "context deadline exceeded", mode)
        self.apply(objects, name, namespace, broken=mode == "image-pull")
        self.succeeded(release, status, action, name, namespace, chart_version, digest(objects))

    def render(self, values: dict, name: str, namespace: str) -> list[dict]:
        """The chart's objects for these values at the cluster's version, each checked as the API server would."""
        objects = helm.render(values, name=name, namespace=namespace, kube_version=self.emulator.kube_version)
        for obj in objects:
            validate({**obj, "metadata": {**obj["metadata"], "namespace": namespace}}, self.emulator.kube_version)
        return objects

    def apply(self, objects: list[dict], name: str, namespace: str, broken: bool = False) -> None:
        """Write the release's namespaced, non-hook objects into ``namespace``; drop the ones no longer rendered."""
        if self.emulator.get("Namespace", namespace) is None:
            self.emulator.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
                               "status": {"phase": "Active"}})
        wanted = set()
        for obj in objects:
            annotations = obj["metadata"].get("annotations") or {}
            if "helm.sh/hook" in annotations or not self.namespaced(obj):
                continue
            obj = readied(obj)
            obj["metadata"].update(namespace=namespace, annotations={
                **annotations, RELEASE_NAME: name, RELEASE_NAMESPACE: namespace})
            obj["metadata"]["labels"] = {**(obj["metadata"].get("labels") or {}),
                                         "app.kubernetes.io/managed-by": "Helm"}
            wanted.add((obj["kind"], obj["metadata"]["name"]))
            self.emulator.put(obj)
        for kind, obj in self.owned(name, namespace):
            if (obj["kind"], obj["metadata"]["name"]) not in wanted:
                self.gone(kind, obj["metadata"]["name"], namespace)
        for pod in self.emulator.objects("Pod", namespace, labels="hubfleet.io/fake-failure"):
            self.gone("Pod", pod["metadata"]["name"], namespace)
        if broken:
            self.fail_pods(namespace)

    def gone(self, kind: str, name: str, namespace: str) -> None:
        """Delete an object; one already deleted meanwhile (its namespace going away, say) is as good."""
        try:
            self.emulator.delete(kind, name, namespace)
        except kmock.KubernetesError as exc:
            if exc.status != 404:
                raise

    def namespaced(self, obj: dict) -> bool:
        try:
            res = self.emulator.api.resource_for(obj["apiVersion"], obj["kind"])
        except KeyError:
            return False
        return bool(self.emulator.api.info(res).namespaced)

    def owned(self, name: str, namespace: str) -> list[tuple[str, dict]]:
        """Every object in ``namespace`` annotated as belonging to release ``name``."""
        kinds = {self.emulator.api.resources[res].kind for res in self.emulator.api.resources
                 if self.emulator.api.resources[res].namespaced}
        return [(kind, obj) for kind in sorted(kinds) for obj in self.emulator.objects(kind, namespace)
                if (obj["metadata"].get("annotations") or {}).get(RELEASE_NAME) == name]

    def fail_pods(self, namespace: str, reason: str = "ImagePullBackOff", component: str = "hub") -> None:
        """Make ``component``'s pod fail to start: a waiting Pod, its Deployment not ready, a Warning Event."""
        deployment = self.emulator.get("Deployment", component, namespace)
        image = "quay.io/jupyterhub/k8s-hub:0.0.0"
        if deployment is not None:
            image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
            self.emulator.patch("Deployment", component, namespace,
                                {"status": {"readyReplicas": 0, "availableReplicas": 0,
                                            "unavailableReplicas": 1}}, subresource="status")
        pod = f"{component}-7f9c6d5b8-x2x7q"
        self.emulator.put({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": namespace,
                         "labels": {"component": component, "app": "jupyterhub", "hubfleet.io/fake-failure": "1"}},
            "spec": {"containers": [{"name": component, "image": image}]},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": component, "image": image, "imageID": "", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": reason,
                                      "message": f'Back-off pulling image "{image}"'}}}]},
        })
        self.emulator.put({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{pod}.18a2b3c4d5e6f708", "namespace": namespace},
            "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace},
            "type": "Warning", "reason": "Failed", "message": f'Error: {reason}', "count": 3,
            "firstTimestamp": now(), "lastTimestamp": now(), "source": {"component": "kubelet"},
        })

    # --- outcomes ---

    def succeeded(self, release: dict, status: dict, action: str, name: str, namespace: str,
                  chart_version: str, manifest_digest: str) -> None:
        history = status.get("history") or []
        previous = [{**entry, "status": "superseded"} if entry["status"] == "deployed" else entry
                    for entry in history]
        version = history[0]["version"] + 1 if history else 1
        entry = snapshot(version, "deployed", action, name, namespace, chart_version,
                         status["lastAttemptedConfigDigest"], manifest_digest)
        reason = "InstallSucceeded" if action == "install" else "UpgradeSucceeded"
        message = (f"Helm {action} succeeded for release {namespace}/{name}.v{version} with chart "
                   f"jupyterhub@{chart_version}")
        generation = release["metadata"]["generation"]
        old = status.get("conditions") or []
        status.update(observedGeneration=generation, history=[entry, *previous][:MAX_HISTORY],
                      conditions=[condition("Ready", "True", reason, message, generation, old),
                                  condition("Released", "True", reason, message, generation, old)])
        for counter in ("failures", "installFailures", "upgradeFailures"):
            status.pop(counter, None)
        self.write_status(release, status)

    def failed(self, release: dict, status: dict, action: str, name: str, namespace: str, chart_ref: str,
               error: str, mode: str | None) -> None:
        """A failed install/upgrade; rolled back when upgrade remediation says so and something was deployed."""
        generation, old = release["metadata"]["generation"], status.get("conditions") or []
        history = status.get("history") or []
        reason = "InstallFailed" if action == "install" else "UpgradeFailed"
        message = f"Helm {action} failed for release {namespace}/{name} with chart {chart_ref}: {error}"
        version = history[0]["version"] + 1 if history else 1
        config_digest = status.get("lastAttemptedConfigDigest") or digest({})
        failed_entry = snapshot(version, "failed", action, name, namespace, status["lastAttemptedRevision"],
                                config_digest, digest([error]))
        status["failures"] = status.get("failures", 0) + 1
        status[f"{action}Failures"] = status.get(f"{action}Failures", 0) + 1
        status["observedGeneration"] = generation
        conditions = [condition("Released", "False", reason, message, generation, old)]
        deployed = next((entry for entry in history if entry["status"] == "deployed"), None)
        remediation = (release["spec"].get("upgrade") or {}).get("remediation") or {}
        retries = remediation.get("retries", 0)
        rollback = action == "upgrade" and deployed is not None and remediation.get("strategy", "rollback") == \
            "rollback" and (retries != 0 or remediation.get("remediateLastFailure"))
        if rollback and mode != "stalled":
            restored = {**deployed, "version": version + 1, "status": "deployed", "action": "rollback",
                        "lastDeployed": now()}
            rest = [{**entry, "status": "superseded"} if entry is deployed else entry for entry in history]
            history = [restored, failed_entry, *rest]
            remediated = (f"Helm rollback to previous release {namespace}/{name}.v{deployed['version']} with chart "
                          f"jupyterhub@{deployed['chartVersion']} succeeded")
            conditions += [condition("Remediated", "True", "RollbackSucceeded", remediated, generation, old),
                           condition("Ready", "False", "RollbackSucceeded", remediated, generation, old)]
        else:
            history = [failed_entry, *history]
            conditions.append(condition("Ready", "False", reason, message, generation, old))
        retries = ((release["spec"].get(action) or {}).get("remediation") or {}).get("retries", 0)
        attempts = status[f"{action}Failures"]
        if mode == "stalled" or (not rollback and 0 <= retries < attempts):
            conditions.append(condition("Stalled", "True", "RetriesExceeded",
                                        f"Failed to {action} after {attempts} attempt(s)", generation, old))
        elif not rollback:  # Flux tries again, up to the remediation's retries
            conditions.append(condition("Reconciling", "True", "ProgressingWithRetry", message, generation, old))
        status.update(history=history[:MAX_HISTORY], conditions=conditions)
        self.write_status(release, status)

    def progressing(self, release: dict, status: dict, action: str, timeout: str) -> None:
        generation, old = release["metadata"]["generation"], status.get("conditions") or []
        message = f"Running '{action}' action with timeout of {format_timeout(timeout)}"
        status["conditions"] = [condition("Reconciling", "True", "Progressing", message, generation, old),
                                condition("Ready", "Unknown", "Progressing", message, generation, old)]
        self.write_status(release, status)

    def uninstall(self, release: dict) -> None:
        """Delete the release's objects (keeping those annotated ``helm.sh/resource-policy: keep``), then let the
        HelmRelease go by removing the finalizer."""
        meta, history = release["metadata"], (release.get("status") or {}).get("history")
        if history:
            namespace, name = history[0]["namespace"], history[0]["name"]
            for kind, obj in self.owned(name, namespace):
                if (obj["metadata"].get("annotations") or {}).get(KEEP[0]) != KEEP[1]:
                    self.gone(kind, obj["metadata"]["name"], namespace)
        remaining = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        self.emulator.patch("HelmRelease", meta["name"], meta["namespace"], {"metadata": {"finalizers": remaining}})

    def write_status(self, release: dict, status: dict) -> None:
        """Replace the status through the status subresource (a merge patch that also drops the removed keys)."""
        meta, old = release["metadata"], release.get("status") or {}
        changes = {**{key: None for key in old if key not in status}, **status}
        self.emulator.patch("HelmRelease", meta["name"], meta["namespace"], {"status": changes},
                            subresource="status", validate=True)


def retrying(status: dict) -> bool:
    """Whether the last attempt failed and Flux will try again (``Reconciling=True``, ``ProgressingWithRetry``)."""
    return any(c["type"] == "Reconciling" and c["status"] == "True" and c["reason"] == "ProgressingWithRetry"
               for c in status.get("conditions") or [])


def digest(document: Any) -> str:
    """A Flux-style ``sha256:<hex>`` digest of a JSON-able document."""
    return "sha256:" + hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def snapshot(version: int, status: str, action: str, name: str, namespace: str, chart_version: str,
             config_digest: str, manifest_digest: str) -> dict:
    """One ``status.history`` entry with every field the HelmRelease CRD requires."""
    return {"version": version, "status": status, "action": action, "name": name, "namespace": namespace,
            "chartName": "jupyterhub", "chartVersion": chart_version, "appVersion": "5.5.0",
            "configDigest": config_digest, "digest": manifest_digest, "firstDeployed": now(), "lastDeployed": now()}


def format_timeout(timeout: str) -> str:
    """A Flux duration as Go prints it in Flux's messages: ``15m`` → ``15m0s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    total = sum(float(number) * units[unit] for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", timeout))
    hours, rest = divmod(int(total), 3600)
    minutes, seconds = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + f"{seconds}s"
