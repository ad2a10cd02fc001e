"""The Kubernetes objects one hub needs, as plain dicts: pure builders, no client, no I/O.

Each hub is one namespace holding its guardrails (ResourceQuota, LimitRange, NetworkPolicies), a Secret with its
secret chart values and a Flux ``HelmRelease`` of the Zero to JupyterHub chart; the ``HelmRepository`` it installs from
lives in :data:`SYSTEM_NAMESPACE`, one per repository URL, shared by every hub of the cluster.  The backend applies
:func:`hub_objects` in order; ``../shared/notes/kubernetes.md`` §3 explains every field, §5 the pitfalls avoided.

Secrets never leave the Secret: the HelmRelease reads them through ``valuesFrom``, its ``spec.values`` hold only the
non-secret config, and :func:`masked` gives copies fit for a page or a log.
"""
from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import yaml

from clusters.base import HubSpec, merge_secrets
from clusters.local import SERVICE_NAME, SERVICE_SCOPES
from tenants.fields import quantity_bytes
from tenants.policy import DEFAULT_POLICY
from tenants.render import MASK

MANAGED_BY = ("app.kubernetes.io/managed-by", "hubfleet")
INSTITUTION_LABEL = "hubfleet.io/institution"
HUB_LABEL = "hubfleet.io/hub"
UID_LABEL = "hubfleet.io/uid"

Z2JH_REPOSITORY = "https://hub.jupyter.org/helm-chart/"
SYSTEM_NAMESPACE = "hubfleet-system"
INGRESS_NAMESPACE = "ingress-nginx"  # where the cluster's ingress controller runs, unless the cluster says otherwise
VALUES_SECRET = "hubfleet-values"
VALUES_KEY = "values.yaml"
CHART = "jupyterhub"

RELEASE_MAX = 53  # Helm's limit on release names (the HelmRelease CRD says maxLength 53 too)
NAMESPACE_MAX = 63  # a DNS-1123 label
PREFIX = "hf"

# Flux timings: how often the release is compared with the cluster, how long one Helm action may take (the image
# puller hook and a first pull of a big image outlast Flux's 5m default: pitfall 4), how often the chart index is read.
RELEASE_INTERVAL = "10m"
RELEASE_TIMEOUT = "15m"
REPOSITORY_INTERVAL = "1h"
INSTALL_RETRIES = 3
# One more attempt after a failed upgrade (a slow image pull can outlast the timeout once), then the last failure is
# rolled back too, so the previous version runs again; never uninstall, which deletes the hub database (pitfall 1).
UPGRADE_RETRIES = 1
MAX_HISTORY = 5

# The hub's own pods counted as server-sized slots in the quota: hub, proxy, autohttps, the image pullers (one
# continuous-puller pod per node, so room for a mid-sized node pool) and user placeholders.
SYSTEM_SLOTS = 20
HUB_DB_STORAGE = "1Gi"  # the chart's default hub.db.pvc.storage
DEFAULT_REQUEST_CPU_MILLI = 100  # what a container that states no request asks for
DEFAULT_REQUEST_MEMORY = 256 * 2**20
PROXY_PORT = 8000  # configurable-http-proxy's http port in the proxy pod
# The console's read-only service on every hub, named and scoped as on local hubs (clusters/local.py): its role is a
# pin of the values, its token travels in the values Secret (:func:`values_secret`).
SERVICE_ROLE = {"description": "Hubfleet's monitoring: read-only", "scopes": list(SERVICE_SCOPES),
                "services": [SERVICE_NAME]}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_UID = re.compile(r"^[a-z0-9]+$")


@dataclass(frozen=True)
class Names:
    """Where one hub lives in the cluster.

    ``namespace`` and ``release`` (also the HelmRelease's name) embed the hub's fleet-unique uid, so a slug used
    again after a hub was deleted never meets the old hub's leftovers; the release name is unique cluster-wide
    because the chart names cluster-scoped objects after it (pitfall 2).
    """

    namespace: str
    release: str
    values_secret: str
    repository: str


def names(spec: HubSpec, repository_url: str = Z2JH_REPOSITORY) -> Names:
    """The hub's namespace, release, values Secret and HelmRepository names; raises ValueError without a usable uid.

    ``hf-<uid>-<slug>``: the uid (letters and digits only, so the first hyphen after the prefix ends it and two hubs
    never share a name) is kept whole and the slug is cut to fit 53 characters for the release and 63 for the
    namespace.
    """
    uid = (spec.uid or "").strip().lower()
    if not uid:
        raise ValueError("the hub has no uid: Kubernetes names need the fleet-unique id of the hub")
    if not _UID.match(uid):
        raise ValueError(f"the hub uid {spec.uid!r} must be lower-case letters and digits only")
    head = f"{PREFIX}-{uid}"
    if len(head) > RELEASE_MAX:
        raise ValueError(f"the hub uid {spec.uid!r} is too long for a Helm release name")
    slug = re.sub(r"[^a-z0-9-]+", "-", spec.slug.lower()).strip("-")
    return Names(namespace=_fit(head, slug, NAMESPACE_MAX), release=_fit(head, slug, RELEASE_MAX),
                 values_secret=VALUES_SECRET, repository=repository_name(repository_url))


def _fit(head: str, slug: str, limit: int) -> str:
    """``head-slug`` cut to ``limit`` characters, never ending in a hyphen (``head`` alone when no slug fits)."""
    tail = slug[:max(0, limit - len(head) - 1)].rstrip("-")
    return f"{head}-{tail}" if tail else head


def repository_name(url: str) -> str:
    """A stable HelmRepository name for a chart repository URL: one object per URL, shared by the cluster's hubs."""
    return "z2jh-" + hashlib.sha256(url.strip().encode()).hexdigest()[:10]


def labels(spec: HubSpec) -> dict[str, str]:
    """The labels on every object of one hub (not the shared HelmRepository): one selector finds them all."""
    return {MANAGED_BY[0]: MANAGED_BY[1], INSTITUTION_LABEL: _label_value(spec.institution),
            HUB_LABEL: _label_value(spec.slug), UID_LABEL: _label_value(spec.uid)}


def _label_value(value: str) -> str:
    """A valid label value: at most 63 characters of ``[A-Za-z0-9_.-]``, alphanumeric at both ends."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(value))[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


# --- chart values --------------------------------------------------------------------------------------------------

def chart_values(spec: HubSpec) -> dict[str, Any]:
    """The HelmRelease's ``spec.values``: the hub's non-secret z2jh values plus the pins every hub gets.

    Pins: ``hub.image`` from ``spec.hub_image``; the hub database PVC kept when Helm uninstalls or remediates
    (pitfall 1); no privileged iptables init container in user pods (the singleuser NetworkPolicy, pinned on, already
    blocks the cloud metadata server), which lets the namespace enforce Pod Security ``baseline``; no user-scheduler
    (it needs a ClusterRole, pitfall 5); no image-puller hook before upgrades (pitfall 4); the console's read-only
    service ``hubfleet`` and its role (``hub.services``, ``hub.loadRoles``), declared even when no token is handed
    to :func:`values_secret` (the chart then makes one up), since a role naming an undeclared service stops
    JupyterHub at start.  Any key that ``spec.secrets`` holds is dropped: ``spec.values`` wins over ``valuesFrom``,
    so a placeholder there would hide the real secret (pitfall 3).
    """
    values = _without(copy.deepcopy(spec.config), spec.secrets)
    if spec.hub_image:
        name, tag = split_image(spec.hub_image)
        _set(values, ("hub", "image", "name"), name)
        _set(values, ("hub", "image", "tag"), tag)
    _set(values, ("hub", "db", "pvc", "annotations", "helm.sh/resource-policy"), "keep")
    _set(values, ("singleuser", "cloudMetadata", "blockWithIptables"), False)
    _set(values, ("singleuser", "networkPolicy", "enabled"), True)
    _set(values, ("scheduling", "userScheduler", "enabled"), False)
    _set(values, ("prePuller", "hook", "enabled"), False)
    _set(values, ("hub", "services", SERVICE_NAME, "admin"), False)
    _set(values, ("hub", "loadRoles", SERVICE_NAME), copy.deepcopy(SERVICE_ROLE))
    return values


def split_image(image: str) -> tuple[str, str]:
    """('quay.io/jupyterhub/k8s-hub', '4.4.0') from 'quay.io/jupyterhub/k8s-hub:4.4.0'; a registry port is kept."""
    name, sep, tag = image.strip().rpartition(":")
    if not sep or not name or not tag or "/" in tag:
        raise ValueError(f"the hub image {image!r} needs a tag, such as quay.io/jupyterhub/k8s-hub:4.4.0")
    return name, tag


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``tree[path[0]][path[1]]... = value``, replacing anything on the way that is not a dict."""
    for key in path[:-1]:
        if not isinstance(tree.get(key), dict):
            tree[key] = {}
        tree = tree[key]
    tree[path[-1]] = value


def _without(values: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the leaves ``secrets`` holds (same shape); mutates and returns ``values``."""
    for key, secret in secrets.items():
        if isinstance(secret, dict) and isinstance(values.get(key), dict):
            _without(values[key], secret)
        else:
            values.pop(key, None)
    return values


def _get(tree: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return default
        tree = tree[key]
    return tree


def pod_security_level(values: dict[str, Any]) -> str | None:
    """The Pod Security level the namespace can enforce with these values: ``baseline``, or None (privileged).

    The chart's default adds a privileged ``NET_ADMIN`` init container to every user pod to block the metadata
    server with iptables; only when that is off do the hub's pods fit ``baseline``.
    """
    return "baseline" if _get(values, "singleuser", "cloudMetadata", "blockWithIptables") is False else None


# --- quantities ----------------------------------------------------------------------------------------------------

_BYTE_SUFFIXES = (("Ti", 2**40), ("T", 10**12), ("Gi", 2**30), ("G", 10**9), ("Mi", 2**20), ("M", 10**6),
                  ("Ki", 2**10), ("k", 10**3))


def memory_bytes(quantity: str | float) -> int:
    """Bytes from a policy size ("16G", "512M", "1.5Gi", "10K"; JupyterHub's K is Kubernetes' k)."""
    return round(quantity_bytes(str(quantity)))


def bytes_quantity(count: int) -> str:
    """A Kubernetes quantity for ``count`` bytes, in the largest unit that divides it exactly ("16T", "50000Gi")."""
    for suffix, size in _BYTE_SUFFIXES:
        if count >= size and count % size == 0:
            return f"{count // size}{suffix}"
    return str(count)


def cpu_milli(cpu: float | str) -> int:
    """Millicores from a policy CPU count (4, 0.5)."""
    return round(float(cpu) * 1000)


def cpu_quantity(milli: int) -> str:
    """A Kubernetes CPU quantity: whole cores as "4", the rest in millicores ("500m")."""
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


# --- objects -------------------------------------------------------------------------------------------------------

def hub_objects(spec: HubSpec, repository_url: str = Z2JH_REPOSITORY,
                ingress_namespace: str = INGRESS_NAMESPACE, service_token: str | None = None) -> list[dict[str, Any]]:
    """Every object of one hub, in the order to apply them.

    Namespace, ResourceQuota, LimitRange, NetworkPolicy (deny ingress), NetworkPolicy (ingress controller to proxy),
    Secret (secret values, with ``service_token`` as the console's service token when given), HelmRepository (in
    :data:`SYSTEM_NAMESPACE`), HelmRelease.  Raises ValueError when the spec has no uid or a hub image without a tag.
    """
    n = names(spec, repository_url)
    values = chart_values(spec)
    policy = {**DEFAULT_POLICY, **(spec.policy or {})}
    return [
        namespace_object(spec, n, values),
        resource_quota(spec, n, policy, values),
        limit_range(spec, n, policy, values),
        deny_ingress_policy(spec, n),
        proxy_ingress_policy(spec, n, ingress_namespace),
        values_secret(spec, n, service_token),
        helm_repository(n, repository_url),
        helm_release(spec, n, values),
    ]


def _meta(spec: HubSpec, name: str, namespace: str | None = None, **extra_labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**labels(spec), **extra_labels}}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def namespace_object(spec: HubSpec, n: Names, values: dict[str, Any]) -> dict[str, Any]:
    """The hub's namespace, enforcing Pod Security ``baseline`` when the values allow it."""
    meta = _meta(spec, n.namespace)
    level = pod_security_level(values)
    if level:
        meta["labels"]["pod-security.kubernetes.io/enforce"] = level
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _hub_db_bytes(values: dict[str, Any]) -> int:
    return memory_bytes(_get(values, "hub", "db", "pvc", "storage", default=HUB_DB_STORAGE) or HUB_DB_STORAGE)


def resource_quota(spec: HubSpec, n: Names, policy: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The namespace's ceiling, from the institution's policy.

    With ``slots = max_users + SYSTEM_SLOTS`` (user servers plus the hub's own pods, each at most one server's size
    because of the LimitRange):

    - ``requests.cpu = slots × max_cpu``; ``requests.memory = limits.memory = slots × max_memory``; ``pods = slots``;
    - ``persistentvolumeclaims = max_users + 1`` and ``requests.storage = max_users × max_storage + hub db size``
      (one home volume per user plus the hub database);
    - ``services.loadbalancers = 1`` (proxy-public);
    - ``requests.nvidia.com/gpu = 0`` when the policy allows no GPUs.
    """
    users = int(policy["max_users"])
    slots = users + SYSTEM_SLOTS
    memory = memory_bytes(policy["max_memory"])
    hard = {
        "requests.cpu": cpu_quantity(slots * cpu_milli(policy["max_cpu"])),
        "requests.memory": bytes_quantity(slots * memory),
        "limits.memory": bytes_quantity(slots * memory),
        "pods": str(slots),
        "persistentvolumeclaims": str(users + 1),
        "requests.storage": bytes_quantity(users * memory_bytes(policy["max_storage"]) + _hub_db_bytes(values)),
        "services.loadbalancers": "1",
    }
    if not policy.get("gpus_allowed"):
        hard["requests.nvidia.com/gpu"] = "0"
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": _meta(spec, "hubfleet-guardrails", n.namespace), "spec": {"hard": hard}}


def limit_range(spec: HubSpec, n: Names, policy: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Per-container bounds and defaults, and the largest volume a claim may ask for.

    A container that states no limit gets the policy's per-server maximum (so a stated request never exceeds the
    defaulted limit) and one that states no request asks for 100m CPU and 256Mi; without these defaults the quota
    would reject every pod that sets none, which is most of the chart's.
    """
    cpu, memory = cpu_milli(policy["max_cpu"]), memory_bytes(policy["max_memory"])
    storage = max(memory_bytes(policy["max_storage"]), _hub_db_bytes(values))
    limits = [
        {"type": "Container",
         "max": {"cpu": cpu_quantity(cpu), "memory": bytes_quantity(memory)},
         "default": {"cpu": cpu_quantity(cpu), "memory": bytes_quantity(memory)},
         "defaultRequest": {"cpu": cpu_quantity(min(DEFAULT_REQUEST_CPU_MILLI, cpu)),
                            "memory": bytes_quantity(min(DEFAULT_REQUEST_MEMORY, memory))}},
        {"type": "PersistentVolumeClaim", "max": {"storage": bytes_quantity(storage)}},
    ]
    return {"apiVersion": "v1", "kind": "LimitRange",
            "metadata": _meta(spec, "hubfleet-defaults", n.namespace), "spec": {"limits": limits}}


def deny_ingress_policy(spec: HubSpec, n: Names) -> dict[str, Any]:
    """Default-deny for ingress in the namespace; egress stays open (the hub needs the API server and DNS).

    NetworkPolicies add up: the chart's own policies for hub, proxy, autohttps and user servers still let through
    what they allow; every other pod of the namespace receives nothing.
    """
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(spec, "hubfleet-deny-ingress", n.namespace),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}


def proxy_ingress_policy(spec: HubSpec, n: Names, ingress_namespace: str = INGRESS_NAMESPACE) -> dict[str, Any]:
    """Let the cluster's ingress controller reach the proxy pods on the proxy's http port.

    Only from the ingress controller's namespace: traffic through the default LoadBalancer Service comes from outside
    the cluster and is let in by the chart's own proxy NetworkPolicy (``proxy.chp.networkPolicy.allowedIngressPorts``,
    http and https from anywhere by default), which this policy leaves alone.  This one keeps the ingress route open
    when an institution narrows that list for an ingress-only hub.
    """
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(spec, "hubfleet-allow-ingress-to-proxy", n.namespace),
            "spec": {
                "podSelector": {"matchLabels": {"app": "jupyterhub", "component": "proxy"}},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{"namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": ingress_namespace}}}],
                    "ports": [{"protocol": "TCP", "port": PROXY_PORT}],
                }],
            }}


def values_secret(spec: HubSpec, n: Names, service_token: str | None = None) -> dict[str, Any]:
    """The Secret the HelmRelease reads its secret values from (``valuesFrom``), as one YAML document: the spec's
    secrets and, when given, ``service_token`` as the console's service's ``hub.services.hubfleet.apiToken`` (the
    key the chart keeps it under in the hub's own Secret)."""
    secrets = spec.secrets or {}
    if service_token:
        secrets = merge_secrets(secrets, {"hub": {"services": {SERVICE_NAME: {"apiToken": service_token}}}})
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(spec, n.values_secret, n.namespace),
            "stringData": {VALUES_KEY: yaml.safe_dump(secrets, sort_keys=True)}}


def helm_repository(n: Names, repository_url: str = Z2JH_REPOSITORY) -> dict[str, Any]:
    """The chart repository, shared by every hub of the cluster that installs from ``repository_url``.

    It carries only the managed-by label, not the hub's: removing one hub by its labels must not take the
    repository from the others.
    """
    return {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
            "metadata": {"name": n.repository, "namespace": SYSTEM_NAMESPACE,
                         "labels": {MANAGED_BY[0]: MANAGED_BY[1]}},
            "spec": {"url": repository_url, "interval": REPOSITORY_INTERVAL}}


def helm_release(spec: HubSpec, n: Names, values: dict[str, Any]) -> dict[str, Any]:
    """The Flux HelmRelease of the z2jh chart (notes §3.2).

    Remediation: install failures are retried (a failed first install has nothing to lose); a failed upgrade is
    retried once and then rolled back (``remediateLastFailure``), never uninstalled.
    """
    chart: dict[str, Any] = {"chart": CHART,
                             "sourceRef": {"kind": "HelmRepository", "name": n.repository,
                                           "namespace": SYSTEM_NAMESPACE}}
    if spec.chart_version:
        chart["version"] = spec.chart_version
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": _meta(spec, n.release, n.namespace),
        "spec": {
            "interval": RELEASE_INTERVAL,
            "releaseName": n.release,
            "targetNamespace": n.namespace,
            "storageNamespace": n.namespace,
            "chart": {"spec": chart},
            "timeout": RELEASE_TIMEOUT,
            "maxHistory": MAX_HISTORY,
            "install": {"remediation": {"retries": INSTALL_RETRIES}},
            "upgrade": {"cleanupOnFail": True,
                        "remediation": {"retries": UPGRADE_RETRIES, "remediateLastFailure": True,
                                        "strategy": "rollback"}},
            "rollback": {"cleanupOnFail": True},
            "uninstall": {"keepHistory": False},
            "valuesFrom": [{"kind": "Secret", "name": n.values_secret, "valuesKey": VALUES_KEY}],
            "values": values,
        },
    }


def masked(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deep copies of ``objects`` with every Secret's ``data`` and ``stringData`` values replaced by the mask."""
    copies = copy.deepcopy(objects)
    for obj in copies:
        if obj.get("kind") == "Secret":
            for field in ("data", "stringData"):
                if isinstance(obj.get(field), dict):
                    obj[field] = {key: MASK for key in obj[field]}
    return copies


# --- archives (decommission) ----------------------------------------------------------------------------------------

ARCHIVE_IMAGE = "python:3.12-alpine"  # the archive Job's image: Python's standard library is all it needs
ARCHIVE_DEADLINE = 3600  # seconds an archive Job may run before Kubernetes stops it
ARCHIVE_TTL = 86400  # a finished Job (and its pod, whose log the backend reads) is kept a day
HUB_DB_CLAIM = "hub-db-dir"  # the chart's PVC of the hub's database
USER_CLAIM_PREFIX = "claim-"  # KubeSpawner's users' PVCs
ARCHIVE_MARK = "HUBFLEET-ARCHIVE "  # the Job's last line: this, then the result as JSON
# The Job's program: the layout of clusters/archives.py (manifest.json first, jupyterhub.sqlite, homes/<user>/...),
# the database copied with SQLite's online backup from a read-only mount, written under a temporary name and renamed
# when complete, with <target>.sha256 and <target>.manifest.json beside it.  Its directories are the Job's mounts
# unless ARCHIVE_DIR, HOMES_DIR, HUB_DB_DIR say otherwise (a test runs it on this machine).
ARCHIVE_SCRIPT = r'''
import hashlib, io, json, os, sqlite3, tarfile, time
from datetime import datetime, timezone
hub, target = os.environ["HUB"], os.environ["TARGET"]
env = os.environ.get
out, homes = os.path.join(env("ARCHIVE_DIR", "/archive"), target), env("HOMES_DIR", "/homes")
database, copy = os.path.join(env("HUB_DB_DIR", "/hub-db"), "jupyterhub.sqlite"), env("TMPDIR", "/tmp") + "/hub.sqlite"
def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
def tree(path):
    size = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            entry = os.path.join(root, name)
            if os.path.isfile(entry) and not os.path.islink(entry):
                size, files = size + os.path.getsize(entry), files + 1
    return size, files
source = sqlite3.connect("file:" + database + "?mode=ro", uri=True)
backup = sqlite3.connect(copy)
source.backup(backup)
backup.close(), source.close()
users = sorted(os.listdir(homes)) if os.path.isdir(homes) else []
manifest = {"format": 1, "hub": hub, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "database": {"name": "jupyterhub.sqlite", "bytes": os.path.getsize(copy), "sha256": sha256(copy)},
            "users": [dict(zip(("name", "bytes", "files"), (u, *tree(os.path.join(homes, u))))) for u in users]}
with tarfile.open(out + ".partial", "w:gz") as tar:
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    info = tarfile.TarInfo("manifest.json")
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, io.BytesIO(data))
    tar.add(copy, arcname="jupyterhub.sqlite")
    for user in users:
        tar.add(os.path.join(homes, user), arcname="homes/" + user)
os.chmod(out + ".partial", 0o600)
os.replace(out + ".partial", out)
digest = sha256(out)
with open(out + ".sha256", "w") as f:
    f.write(digest + "  " + target + "\n")
with open(out + ".manifest.json", "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
print("HUBFLEET-ARCHIVE " + json.dumps({"size": os.path.getsize(out), "sha256": digest, "manifest": manifest}))
'''
PURGE_SCRIPT = r'''
import os
target = os.environ["TARGET"]
for name in (target, target + ".sha256", target + ".manifest.json", target + ".partial"):
    path = os.path.join(os.environ.get("ARCHIVE_DIR", "/archive"), name)
    if os.path.exists(path):
        os.remove(path)
print("HUBFLEET-ARCHIVE {}")
'''


def job_name(kind: str, target: str) -> str:
    """``hubfleet-<kind>-<hash of target>``: one Job per archive, a valid name whatever the target."""
    return f"hubfleet-{kind}-{hashlib.sha256(target.encode()).hexdigest()[:12]}"


def _archive_pod(script: str, env: dict[str, str], mounts: list[dict], volumes: list[dict],
                 image: str) -> dict[str, Any]:
    """The pod template of an archive Job: one container of ``image`` running ``script`` as an unprivileged user
    (the chart's uid 1000 and gid 100, which own the hub database and users' files), fit for Pod Security
    "restricted"; a scratch directory at /tmp."""
    return {"spec": {
        "restartPolicy": "Never",
        "securityContext": {"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100, "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "archive", "image": image, "command": ["python", "-c", script],
            "env": [{"name": key, "value": value} for key, value in env.items()],
            "volumeMounts": [*mounts, {"name": "scratch", "mountPath": "/tmp"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}}}],
        "volumes": [*volumes, {"name": "scratch", "emptyDir": {}}]}}


def _job(name: str, namespace: str, pod: dict[str, Any], extra_labels: dict[str, str]) -> dict[str, Any]:
    meta_labels = {MANAGED_BY[0]: MANAGED_BY[1], **extra_labels}
    pod.setdefault("metadata", {})["labels"] = dict(meta_labels)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": meta_labels},
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": ARCHIVE_DEADLINE,
                     "ttlSecondsAfterFinished": ARCHIVE_TTL, "template": pod}}


def archive_job(namespace: str, hub: str, target: str, user_claims: dict[str, str], nfs_server: str,
                nfs_path: str, image: str = ARCHIVE_IMAGE) -> dict[str, Any]:
    """The Job that archives one hub into ``nfs_server:nfs_path/target``: it mounts the hub database's PVC
    (:data:`HUB_DB_CLAIM`) and every user's PVC (``user_claims``: {JupyterHub name: claim}) read-only, and the
    archive location read-write; the pod runs beside the hub's pod (its database volume is ReadWriteOnce).  Pure."""
    mounts = [{"name": "hub-db", "mountPath": "/hub-db", "readOnly": True},
              {"name": "archive", "mountPath": "/archive"}]
    volumes = [{"name": "hub-db", "persistentVolumeClaim": {"claimName": HUB_DB_CLAIM, "readOnly": True}},
               {"name": "archive", "nfs": {"server": nfs_server, "path": nfs_path}}]
    for index, (user, claim) in enumerate(sorted(user_claims.items())):
        mounts.append({"name": f"home-{index}", "mountPath": f"/homes/{user}", "readOnly": True})
        volumes.append({"name": f"home-{index}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    pod = _archive_pod(ARCHIVE_SCRIPT, {"HUB": hub, "TARGET": target}, mounts, volumes, image)
    pod["spec"]["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app": "jupyterhub", "component": "hub"}},
        "topologyKey": "kubernetes.io/hostname"}]}}
    return _job(job_name("archive", target), namespace, pod, {HUB_LABEL: _label_value(hub)})


def purge_job(target: str, nfs_server: str, nfs_path: str, image: str = ARCHIVE_IMAGE) -> dict[str, Any]:
    """The Job (in :data:`SYSTEM_NAMESPACE`: the hub's namespace is gone by then) that deletes one archive and the
    files beside it from the archive location.  Pure."""
    pod = _archive_pod(PURGE_SCRIPT, {"TARGET": target}, [{"name": "archive", "mountPath": "/archive"}],
                       [{"name": "archive", "nfs": {"server": nfs_server, "path": nfs_path}}], image)
    return _job(job_name("purge", target), SYSTEM_NAMESPACE, pod, {})
