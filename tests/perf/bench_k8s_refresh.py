"""Benchmark: one refresh of the Kubernetes state of 1,000 hubs on 10 clusters.

Each cluster is an HTTP Kubernetes API emulator (``tests/k8s/emulator.py``: kmock and our fidelity layer, on its own
thread) holding 100 hubs as a cluster with Flux would: per hub its namespace, the objects the console applies, and
what helm-controller and the chart leave behind (a Ready HelmRelease, the hub and proxy Deployments, the hub-db-dir
claim, the proxy-public Service with an address, a user server Pod); a few hubs are unwell (an upgrade rolled back,
an image that cannot be pulled).  The refresh is what monitoring does: ``statuses()`` of every hub, one backend per
cluster, with the real ``kubernetes`` client over HTTP.

Prints the wall time of one refresh of all 1,000 hubs, the API requests it made (aim: a handful per cluster, not one
per hub), and how the hubs were classified.  Run with `make bench` or
`python -m tests.perf.bench_k8s_refresh [--clusters N] [--hubs N] [--rounds N]`.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter

from clusters.base import HubSpec, statuses
from clusters.k8s_manifests import hub_objects, names
from clusters.kubernetes import KubernetesBackend
from tests.k8s.emulator import Emulator

CHART = "4.4.0"


def hub_spec(cluster: int, n: int) -> HubSpec:
    return HubSpec(slug=f"hub-{n}", institution=f"college-{n % 37}", uid=f"{cluster}x{n}", chart_version=CHART,
                   config={"hub": {"config": {"JupyterHub": {"admin_access": False}}}},
                   secrets={"hub": {"config": {"GenericOAuthenticator": {"client_secret": "s"}}}})


def condition(type_: str, status: str, reason: str, message: str = "") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message, "observedGeneration": 1,
            "lastTransitionTime": "2026-11-29T00:00:00Z"}


def installed(namespace: str, release: str, unwell: str | None) -> list[dict]:
    """What helm-controller and the chart leave in a hub's namespace."""
    labels = {"app": "jupyterhub", "release": release}
    ready = 0 if unwell == "image" else 1
    objects = [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": component, "namespace": namespace, "labels": {**labels, "component": component}},
         "spec": {"selector": {"matchLabels": {"component": component}},
                  "template": {"metadata": {"labels": {"component": component}},
                               "spec": {"containers": [{"name": component, "image": "quay.io/jupyterhub/k8s-hub:4.4.0"}]}}},
         "status": {"replicas": 1, "readyReplicas": ready if component == "hub" else 1}}
        for component in ("hub", "proxy")]
    objects.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "hub-db-dir", "namespace": namespace, "labels": {**labels, "component": "hub"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                    "status": {"phase": "Bound"}})
    objects.append({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "proxy-public", "namespace": namespace,
                                 "labels": {**labels, "component": "proxy-public"}},
                    "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8000}]},
                    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}})
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "jupyter-ada", "namespace": namespace,
                        "labels": {**labels, "component": "singleuser-server"}},
           "spec": {"containers": [{"name": "notebook", "image": "quay.io/jupyter/scipy-notebook:2025-01-06"}]},
           "status": {"phase": "Running"}}
    if unwell == "image":
        pod = {**pod, "metadata": {**pod["metadata"], "name": "hub-7d9f", "labels": {**labels, "component": "hub"}},
               "status": {"phase": "Pending", "containerStatuses": [{
                   "name": "hub", "ready": False, "restartCount": 0, "image": "quay.io/jupyterhub/k8s-hub:4.4.0",
                   "imageID": "", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                        "message": "Back-off pulling image"}}}]}}
    objects.append(pod)
    return objects


def release_status(unwell: str | None) -> dict:
    deployed = {"version": 1, "status": "deployed", "chartName": "jupyterhub", "chartVersion": CHART,
                "appVersion": "5.5.0", "action": "install", "digest": "sha256:" + "0" * 64,
                "configDigest": "sha256:" + "1" * 64, "firstDeployed": "2026-11-29T00:00:00Z",
                "lastDeployed": "2026-11-29T00:00:00Z", "name": "hub", "namespace": "hub"}
    if unwell == "rolled-back":
        message = "Helm rollback to previous release succeeded"
        return {"observedGeneration": 1, "history": [deployed],
                "conditions": [condition("Released", "False", "UpgradeFailed", "upgrade failed"),
                               condition("Remediated", "True", "RollbackSucceeded", message),
                               condition("Ready", "False", "RollbackSucceeded", message)]}
    return {"observedGeneration": 1, "history": [deployed],
            "conditions": [condition("Ready", "True", "InstallSucceeded", "Helm install succeeded"),
                           condition("Released", "True", "InstallSucceeded", "Helm install succeeded")]}


def fill(emulator: Emulator, cluster: int, hubs: int) -> list[dict]:
    """Store ``hubs`` hubs in the emulator (no HTTP); their backend states."""
    states = []
    for n in range(hubs):
        spec = hub_spec(cluster, n)
        hub_names = names(spec)
        unwell = "rolled-back" if n % 50 == 7 else "image" if n % 50 == 13 else None
        for obj in hub_objects(spec):
            if obj["kind"] == "HelmRelease":
                obj = {**obj, "metadata": {**obj["metadata"], "generation": 1}, "status": release_status(unwell)}
            emulator.put(obj)
        for obj in installed(hub_names.namespace, hub_names.release, unwell):
            emulator.put(obj)
        states.append({"state_version": 1, "namespace": hub_names.namespace, "release": hub_names.release,
                       "uid": spec.uid, "generation": 1, "chart_version": CHART, "token": None, "url": None})
    return states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--hubs", type=int, default=100, help="hubs per cluster")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        emulators = [stack.enter_context(Emulator(validate=False)) for _ in range(args.clusters)]
        started = time.perf_counter()
        states = [fill(emulator, c, args.hubs) for c, emulator in enumerate(emulators)]
        print(f"{args.clusters} emulated clusters with {args.hubs} hubs each: filled in "
              f"{time.perf_counter() - started:.1f}s")
        backends = [stack.enter_context(KubernetesBackend(kubeconfig=e.kubeconfig())) for e in emulators]
        for round_ in range(1, args.rounds + 1):
            before = [len(e.requests) for e in emulators]
            started = time.perf_counter()
            seen = [statuses(backend, cluster_states) for backend, cluster_states in zip(backends, states)]
            took = time.perf_counter() - started
            calls = [len(e.requests) - b for e, b in zip(emulators, before)]
            phases = Counter((s.phase, s.ready) for cluster in seen for s in cluster)
            print(f"refresh {round_}: {sum(map(len, seen))} hubs in {took:.2f}s "
                  f"({took / max(1, sum(map(len, seen))) * 1000:.2f} ms per hub); API requests: {sum(calls)} "
                  f"({max(calls)} per cluster at most, {sum(calls) / sum(map(len, seen)):.3f} per hub)")
        print("classified: " + ", ".join(f"{phase or '?'}{' ready' if ready else ''}: {count}"
                                         for (phase, ready), count in sorted(phases.items())))
        reasons = Counter(s.reason for cluster in seen for s in cluster if s.reason)
        print("reasons: " + (", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items())) or "none"))


if __name__ == "__main__":
    main()
