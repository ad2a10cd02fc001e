"""The ``kubernetes`` backend: every hub is one namespace and one Flux HelmRelease of the z2jh chart.

The console never runs Helm.  It writes the hub's namespace, guardrails, values Secret, the shared HelmRepository and
the HelmRelease (built by :mod:`clusters.k8s_manifests`) with server-side apply, and Flux's helm-controller installs,
upgrades and rolls back the chart in the cluster.  What the hub looks like is read back from the HelmRelease status
and the namespace's Deployments, Services, PVCs, Pods and Warning Events, and classified by :mod:`clusters.k8s_status`.
``../shared/notes/kubernetes.md`` §3-§6 is the design.

Every call goes through :meth:`KubernetesBackend._request`, one generic HTTP request over the official client's
``ApiClient``: the kinds the backend touches are few and fixed (:data:`KINDS`), so one table of (API prefix, plural,
namespaced) serves them all, and every PATCH says its own Content-Type.  ``CustomObjectsApi.patch_*`` would send
``application/merge-patch+json`` whatever the body (pitfall 6), which is why it is not used.

The backend state, stored by the console in the clear, holds no secret:

``state_version``  1, the layout of this dict.
``namespace``      the hub's namespace.
``release``        the HelmRelease's name (in ``namespace``).
``uid``            the hub's fleet-unique id, from which the names were derived.
``generation``     the HelmRelease's ``metadata.generation`` after the last apply.
``chart_version``  the z2jh chart version the last deploy asked for ("" when the release has none).
``token``          the reconcile token last requested (``reconcile.fluxcd.io/requestedAt``), or None; the request is
                   handled when ``status.lastHandledReconcileAt`` equals it.
``url``            ``https://<host>/`` when the values name an ingress or autohttps host, else None (the address is
                   observed by :meth:`status`).

The console's read-only service token on each hub (``hubfleet``, scoped as on local hubs: what monitoring and usage
read with) is not kept anywhere: it is derived, ``HMAC-SHA256(service_key, "hubfleet:<uid>")`` in hex, from the
``service_key`` the console hands the backend (console/crypto.py ``service_key``) and the hub's uid, which the state
holds.  :meth:`deploy` writes it into the values Secret only; :meth:`api_token` derives it again for the probe.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import urllib3
import yaml
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException, new_client_from_config_dict

from clusters.base import LOG_TAIL_BYTES, ArchiveResult, BackendError, Check, HubLog, HubSpec, HubStatus, Log, register
from clusters.k8s_manifests import (ARCHIVE_IMAGE, ARCHIVE_MARK, HUB_DB_CLAIM, MANAGED_BY, SYSTEM_NAMESPACE,
                                    USER_CLAIM_PREFIX, Z2JH_REPOSITORY, archive_job, hub_objects, masked, purge_job)
from clusters.k8s_status import classify_helmrelease, classify_runtime, hub_status
from clusters.config_digest import digest
from clusters.k8s_manifests import chart_values
from clusters.local import SERVICE_NAME
from tenants.render import MASK

STATE_VERSION = 1
FIELD_MANAGER = "hubfleet"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
# The chart's kubeVersion (z2jh after 4.4.0 says ">=1.32.0-0").
MIN_KUBERNETES = (1, 32)
# z2jh labels everything it renders (and KubeSpawner the user pods) with app=jupyterhub, component, release.
CHART_SELECTOR = "app=jupyterhub"
RELEASE_SELECTOR = "=".join(MANAGED_BY)
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
FORCE_AT = "reconcile.fluxcd.io/forceAt"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
DEFAULT_CLASS = ("storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class")
FLUX_FIX = "flux install --components=source-controller,helm-controller"
NOT_CHECKED = "not checked: the API does not answer"
STORAGE_CLASS_FIX = ("mark one default: kubectl patch storageclass <name> -p "
                     "'{\"metadata\": {\"annotations\": {\"storageclass.kubernetes.io/is-default-class\": \"true\"}}}'")
# The z2jh Deployments that serve the hub: stopped by scaling them to 0 (the HelmRelease is suspended first, so
# helm-controller does not scale them back).
HUB_DEPLOYMENTS = ("hub", "proxy")
NO_KUBECONFIG = "the cluster has no kubeconfig"


@dataclass(frozen=True)
class Kind:
    """Where the API serves one kind: ``apiVersion``, plural resource name, whether it lives in a namespace."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The URL path of the collection (no ``name``) or of one object; a namespaced kind without ``namespace``
        gives the cluster-wide collection (list across namespaces)."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        scope = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{prefix}{scope}/{self.plural}" + (f"/{name}" if name else "")


KINDS = {kind.kind: kind for kind in (
    Kind("v1", "Namespace", "namespaces", False),
    Kind("v1", "ResourceQuota", "resourcequotas", True),
    Kind("v1", "LimitRange", "limitranges", True),
    Kind("v1", "Secret", "secrets", True),
    Kind("v1", "Service", "services", True),
    Kind("v1", "Pod", "pods", True),
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims", True),
    Kind("v1", "Event", "events", True),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
    Kind("apps/v1", "Deployment", "deployments", True),
    Kind("storage.k8s.io/v1", "StorageClass", "storageclasses", False),
    Kind("source.toolkit.fluxcd.io/v1", "HelmRepository", "helmrepositories", True),
    Kind("helm.toolkit.fluxcd.io/v2", "HelmRelease", "helmreleases", True),
    Kind("batch/v1", "Job", "jobs", True),
)}
HELMRELEASE = KINDS["HelmRelease"]
POD = KINDS["Pod"]
# The chart's labels on the hub's pod (KubeSpawner's user pods say component=singleuser-server).
HUB_POD_SELECTOR = "app=jupyterhub,component=hub"
DEPLOYMENT = KINDS["Deployment"]
NAMESPACE = KINDS["Namespace"]
# What status() reads in a hub's namespace besides its HelmRelease, with the selector that picks the chart's objects.
RUNTIME_LISTS = (
    (KINDS["Deployment"], {"labelSelector": CHART_SELECTOR}),
    (KINDS["Service"], {"labelSelector": CHART_SELECTOR}),
    (KINDS["PersistentVolumeClaim"], {"labelSelector": CHART_SELECTOR}),
    (KINDS["Pod"], {"labelSelector": CHART_SELECTOR}),
    (KINDS["Event"], {"fieldSelector": "type=Warning"}),
)


class NotFound(BackendError):
    """The API answered 404 for an object (callers that expect it, such as delete, ignore it)."""


class Unreachable(BackendError):
    """The API did not answer at all (connection refused, timeout, TLS failure)."""


class NoClient(BackendError):
    """The backend has no usable kubeconfig, so it cannot ask the API anything."""


def kind_of(obj: dict) -> Kind:
    """The :class:`Kind` of a manifest, checked against its ``apiVersion``."""
    kind = KINDS.get(obj.get("kind", ""))
    if kind is None or kind.api_version != obj.get("apiVersion"):
        raise BackendError(f"the backend cannot write {obj.get('apiVersion')} {obj.get('kind')}")
    return kind


def reconcile_token() -> str:
    """A fresh token for ``reconcile.fluxcd.io/requestedAt``: the time, as ``flux reconcile`` writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ingress_url(values: dict) -> str | None:
    """``https://<host>/`` for the first host the chart values publish the hub on (Ingress or autohttps), else None."""
    ingress = values.get("ingress") or {}
    https = (values.get("proxy") or {}).get("https") or {}
    for enabled, hosts in ((ingress.get("enabled"), ingress.get("hosts")), (https.get("enabled"), https.get("hosts"))):
        if enabled and hosts:
            return f"https://{hosts[0]}/"
    return None


def api_message(body: str, reason: str | None) -> str:
    """The API's own message from an error response (a Status object), cut short; never headers."""
    try:
        message = json.loads(body or "{}").get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return (message or reason or "").strip()[:300]


def describe(kind: Kind, namespace: str | None, name: str) -> str:
    """How error messages and logs name one object: "HelmRelease hub-42/hub-42", "Namespace hub-42"."""
    return f"{kind.kind} {namespace}/{name}" if namespace and kind.namespaced else f"{kind.kind} {name}"


def parse_version(git_version: str) -> tuple[int, int] | None:
    """(major, minor) of a server's ``gitVersion`` such as ``v1.33.2`` or ``v1.32.4-gke.100``."""
    parts = git_version.lstrip("v").split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()))
    except (IndexError, ValueError):
        return None


def with_kind(items: list[dict], kind: Kind) -> list[dict]:
    """List items with ``kind``/``apiVersion`` set: a list response's items carry neither."""
    return [{**item, "kind": kind.kind, "apiVersion": kind.api_version} for item in items]


def namespace_of(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("namespace", "")


def hub_pod(pods: list[dict]) -> dict:
    """The pod whose log is the hub's: a running one that is not being deleted first, then the newest."""
    def rank(pod: dict) -> tuple:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        return (status.get("phase") == "Running" and not meta.get("deletionTimestamp"),
                meta.get("creationTimestamp") or "")
    return max(pods, key=rank)


def deployed(state: dict) -> bool:
    """Whether ``state`` names a HelmRelease (a hub never deployed has an empty state)."""
    return bool(state.get("namespace") and state.get("release"))


@register("kubernetes")
class KubernetesBackend:
    """Run hubs as Flux HelmReleases on one cluster.

    ``kubeconfig`` is the kubeconfig's text (its current context is used); ``server`` overrides the context's server
    URL.  ``chart_repository`` is the z2jh Helm repository the HelmRepository points at.  ``request_timeout`` bounds
    every API call, in seconds.  Without a kubeconfig only :meth:`manifests` works; everything else raises
    :class:`BackendError` (``status`` reports it instead).  ``service_key`` is the secret each hub's read-only
    service token is derived from (:meth:`service_token`); without it hubs get a token the chart makes up, which
    the console cannot know, so :meth:`api_token` gives None.
    """

    supervised = False  # Kubernetes restarts the hub's pods itself
    render_target = "z2jh"
    ready_timeout = 20 * 60  # seconds a hub may take to become healthy: Helm's timeout (15m) and a margin

    def __init__(self, kubeconfig: str | None = None, server: str | None = None,
                 chart_repository: str = Z2JH_REPOSITORY, request_timeout: float = 10,
                 archive_nfs: dict | None = None, archive_image: str = ARCHIVE_IMAGE,
                 archive_timeout: float = 3600, archive_poll: float = 2.0, service_key: str | None = None,
                 **_ignored: Any):
        self._kubeconfig = kubeconfig
        self._server = server
        self.chart_repository = chart_repository
        self.request_timeout = request_timeout
        self.archive_nfs = archive_nfs or {}  # {"server", "path"}: where archive Jobs write (a cluster setting)
        self.archive_image = archive_image
        self.archive_timeout = float(archive_timeout)
        self.archive_poll = float(archive_poll)
        self._service_key = service_key
        self._client: ApiClient | None = None

    # -- the client -----------------------------------------------------------------------------------------------

    @property
    def client(self) -> ApiClient:
        """The API client, built from the kubeconfig at first use."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> ApiClient:
        if not self._kubeconfig:
            raise NoClient(NO_KUBECONFIG)
        try:
            config = yaml.safe_load(self._kubeconfig)
        except yaml.YAMLError as exc:
            # A YAML error quotes the offending line, which may hold a token: say only where it is.
            mark = getattr(exc, "problem_mark", None)
            raise NoClient("the kubeconfig is not valid YAML"
                               + (f" (line {mark.line + 1})" if mark else "")) from None
        if not isinstance(config, dict):
            raise NoClient("the kubeconfig is not a YAML mapping")
        try:
            client = new_client_from_config_dict(config, persist_config=False)
        except (ConfigException, ValueError, KeyError, TypeError) as exc:
            raise NoClient(f"the kubeconfig cannot be used: {type(exc).__name__}") from None
        if self._server:
            client.configuration.host = self._server.rstrip("/")
        return client

    def close(self) -> None:
        """Close the client's connections (a backend that is thrown away should be closed)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> KubernetesBackend:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _request(self, method: str, path: str, what: str, query: dict | None = None, body: Any = None,
                 content_type: str | None = None, as_text: bool = False) -> Any:
        """One API request; the parsed JSON answer (with ``as_text``: the answer as text, for a pod's log).  ``what``
        names the object for error messages ("HelmRelease hub-42/hub-42").  Raises :class:`NotFound` on 404,
        :class:`Unreachable` when the API does not answer and :class:`BackendError` on any other error, with the
        API's message and never a credential."""
        client = self.client
        headers = {"Accept": "*/*" if as_text else "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = client.param_serialize(method=method, resource_path=path, query_params=list((query or {}).items()),
                                         header_params=headers, body=body, auth_settings=["BearerToken"])
        try:
            response = client.call_api(*request, _request_timeout=self.request_timeout)
            data = response.read()
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise Unreachable(f"the cluster's API does not answer: {type(reason).__name__}: {reason}"[:300]) from None
        except ApiException as exc:  # the client reports TLS failures this way, with status 0
            raise Unreachable(f"the cluster's API does not answer: {(exc.reason or '').strip()[:300]}") from None
        answer = data.decode("utf-8", "replace") if data else ""
        if not 200 <= response.status <= 299:
            message = f"{method} {what}: HTTP {response.status} {api_message(answer, response.reason)}".strip()
            raise (NotFound if response.status == 404 else BackendError)(message)
        if as_text:
            return answer
        return json.loads(answer) if answer else None

    def _apply(self, obj: dict) -> dict:
        """Server-side apply ``obj`` (created or updated), as field manager ``hubfleet`` taking every field it sets."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        # JSON is YAML, so the apply body is the object as JSON.
        return self._request("PATCH", kind.path(meta.get("namespace"), meta["name"]),
                             describe(kind, meta.get("namespace"), meta["name"]),
                             query={"fieldManager": FIELD_MANAGER, "force": True}, body=obj, content_type=APPLY)

    def _merge_patch(self, kind: Kind, namespace: str | None, name: str, patch: dict) -> dict:
        """A JSON merge patch (a dict, never a JSON-Patch list: pitfall 6)."""
        if not isinstance(patch, dict):
            raise TypeError("a merge patch is an object, not a list of operations")
        return self._request("PATCH", kind.path(namespace, name), describe(kind, namespace, name),
                             query={"fieldManager": FIELD_MANAGER}, body=patch, content_type=MERGE)

    def _get(self, kind: Kind, namespace: str | None, name: str) -> dict:
        return self._request("GET", kind.path(namespace, name), describe(kind, namespace, name))

    def _list(self, kind: Kind, namespace: str | None = None, **query: str) -> list[dict]:
        """Every object of ``kind`` in ``namespace`` (None: in all namespaces) matching the selectors in ``query``."""
        answer = self._request("GET", kind.path(namespace), f"{kind.plural} in {namespace or 'all namespaces'}",
                               query=query) or {}
        return with_kind(answer.get("items") or [], kind)

    def _delete(self, kind: Kind, namespace: str | None, name: str, log: Log) -> None:
        """Delete one object; one already gone is fine."""
        try:
            self._request("DELETE", kind.path(namespace, name), describe(kind, namespace, name))
        except NotFound:
            log(f"{describe(kind, namespace, name)} was already gone")
        else:
            log(f"deleted {describe(kind, namespace, name)}")

    # -- the interface --------------------------------------------------------------------------------------------

    def manifests(self, spec: HubSpec) -> list[dict]:
        """What :meth:`deploy` would write for ``spec``, in order, with Secret values masked; no cluster contact."""
        return masked(self._objects(spec))

    def _objects(self, spec: HubSpec) -> list[dict]:
        try:
            return hub_objects(spec, self.chart_repository, service_token=self.service_token(spec.uid))
        except ValueError as exc:  # no uid, an image without a tag
            raise BackendError(str(exc)) from None

    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict:
        """Apply the hub's objects in order and return at once; helm-controller does the install or upgrade.

        An unchanged spec leaves the HelmRelease's generation as it is (nothing to do for Flux).  A HelmRelease that
        :meth:`stop` suspended is resumed and asked to reconcile, which brings its Deployments back.
        """
        objects = self._objects(spec)
        release = next(obj for obj in objects if obj["kind"] == "HelmRelease")
        declared = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "Namespace"}
        if SYSTEM_NAMESPACE not in declared and any(namespace_of(obj) == SYSTEM_NAMESPACE for obj in objects):
            # The shared HelmRepository lives there; a fresh cluster does not have it yet.
            objects = [{"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": SYSTEM_NAMESPACE, "labels": dict([MANAGED_BY])}}, *objects]
        applied: dict = {}
        for obj in objects:
            answer = self._apply(obj)
            log(f"applied {obj['kind']} {obj['metadata']['name']}")
            if obj is release:
                applied = answer or {}
        namespace, name = namespace_of(release), release["metadata"]["name"]
        # A reconcile request made earlier (restart) still counts while the release carries it.
        token = state.get("token")
        if token and ((applied.get("metadata") or {}).get("annotations") or {}).get(REQUESTED_AT) != token:
            token = None
        if (applied.get("spec") or {}).get("suspend"):
            token = reconcile_token()
            applied = self._merge_patch(HELMRELEASE, namespace, name, {
                "metadata": {"annotations": {REQUESTED_AT: token, FORCE_AT: token}}, "spec": {"suspend": False}})
            log(f"resumed HelmRelease {name} and asked Flux to reconcile it (token {token})")
        log(f"HelmRelease {name} is at generation {(applied.get('metadata') or {}).get('generation')}; Flux "
            f"installs or upgrades the chart from here")
        return self._state(spec, release, applied, token)

    def _state(self, spec: HubSpec, release: dict, applied: dict, token: str | None) -> dict:
        chart = release["spec"].get("chart", {}).get("spec", {})
        return {"state_version": STATE_VERSION, "namespace": namespace_of(release),
                "release": release["metadata"]["name"], "uid": spec.uid,
                "generation": (applied.get("metadata") or {}).get("generation"),
                "chart_version": chart.get("version", spec.chart_version or ""), "token": token,
                "url": ingress_url(release["spec"].get("values") or {})}

    def restart(self, spec: HubSpec, state: dict, log: Log) -> dict:
        """Apply the spec, force a Helm upgrade (a reconcile request with forceAt) and roll the hub's pod."""
        state = self.deploy(spec, state, log)
        namespace, name = state["namespace"], state["release"]
        token = reconcile_token()
        self._merge_patch(HELMRELEASE, namespace, name,
                          {"metadata": {"annotations": {REQUESTED_AT: token, FORCE_AT: token}}})
        log(f"asked Flux to reconcile HelmRelease {name} (token {token})")
        try:
            self._merge_patch(DEPLOYMENT, namespace, "hub",
                              {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: token}}}}})
            log("restarting the hub's pod")
        except NotFound:
            log("the hub's Deployment does not exist yet; the reconcile will start it")
        return {**state, "token": token}

    def stop(self, state: dict, log: Log) -> None:
        """Suspend the HelmRelease (so Flux leaves the hub alone) and scale the hub and proxy to 0.

        The hub database's volume, users' volumes and the release itself stay; a later :meth:`deploy` resumes."""
        if not deployed(state):
            log("nothing to stop: the hub was never deployed")
            return
        namespace = state["namespace"]
        try:
            self._merge_patch(HELMRELEASE, namespace, state["release"], {"spec": {"suspend": True}})
            log(f"suspended HelmRelease {state['release']}")
        except NotFound:
            log(f"HelmRelease {state['release']} does not exist; nothing to suspend")
        for name in HUB_DEPLOYMENTS:
            try:
                self._merge_patch(DEPLOYMENT, namespace, name, {"spec": {"replicas": 0}})
                log(f"scaled Deployment {name} to 0")
            except NotFound:
                log(f"Deployment {name} does not exist; nothing to scale")

    def backup(self, state: dict, name: str, log: Log) -> str:
        """Nothing to copy: returns ""."""
        log("no database copy made: the hub database stays on its kept volume (hub-db-dir), and Flux rolls a failed "
            "upgrade back to the previous release")
        return ""

    def restore(self, state: dict, backup: str, log: Log) -> None:
        log("nothing to restore: the hub database stays on its kept volume, and Flux rolls a failed upgrade back")

    def remove(self, state: dict, log: Log) -> None:
        """Delete the HelmRelease (helm-controller uninstalls the chart, cluster-wide objects included), then the
        namespace with everything in it.  The shared HelmRepository stays."""
        if not deployed(state):
            log("nothing to remove: the hub was never deployed")
            return
        self._delete(HELMRELEASE, state["namespace"], state["release"], log)
        self._delete(NAMESPACE, None, state["namespace"], log)

    # -- archives -----------------------------------------------------------------------------------------------

    def _archive_location(self) -> tuple[str, str]:
        server, path = self.archive_nfs.get("server"), self.archive_nfs.get("path")
        if not server or not path:
            raise BackendError("the cluster has no archive location: set its NFS server and path first")
        return server, path

    def archive(self, state: dict, target: str, log: Log) -> ArchiveResult:
        """Run the archive Job (:func:`clusters.k8s_manifests.archive_job`) in the hub's namespace and wait until it
        ends: it mounts the hub database's PVC and every user's ``claim-<user>`` PVC read-only and writes
        ``target`` (with its ``.sha256`` and ``.manifest.json``) to the cluster's NFS archive location.  Its result
        is the last line of its pod's log.  A Job of the same target left by an earlier attempt is replaced.
        Raises BackendError when the Job fails or outlasts ``archive_timeout``."""
        if not deployed(state):
            raise BackendError("the hub was never deployed: there is nothing to archive")
        server, path = self._archive_location()
        namespace = state["namespace"]
        claims = {claim["metadata"]["name"]: claim for claim in self._list(KINDS["PersistentVolumeClaim"], namespace)}
        if HUB_DB_CLAIM not in claims:
            raise BackendError(f"the hub's database volume ({HUB_DB_CLAIM}) is not in namespace {namespace}")
        users = {}
        for name, claim in claims.items():
            if name.startswith(USER_CLAIM_PREFIX):
                annotations = claim["metadata"].get("annotations") or {}
                users[annotations.get("hub.jupyter.org/username") or name[len(USER_CLAIM_PREFIX):]] = name
        job = archive_job(namespace, state["release"], target, users, server, path,
                          self.archive_image)
        result = self._run_job(job, log, f"archiving the hub database and {len(users)} user volume(s)")
        return ArchiveResult(location=f"nfs://{server}{path.rstrip('/')}/{target}", size=int(result["size"]),
                             sha256=result["sha256"], manifest=result["manifest"])

    def purge_archive(self, location: str, log: Log) -> None:
        """Start the purge Job (:func:`clusters.k8s_manifests.purge_job`, in ``hubfleet-system``) that deletes the
        archive from the NFS archive location, and return without waiting (the retention pass that calls this must
        not stall): the deletion happens in the cluster; a Job that fails stays there with its log.  An archive
        already gone is fine."""
        server, path = self._archive_location()
        prefix = f"nfs://{server}{path.rstrip('/')}/"
        if not location.startswith(prefix):
            raise BackendError(f"the archive {location} is not in this cluster's archive location")
        self._start_job(purge_job(location[len(prefix):], server, path, self.archive_image), log,
                        "deleting the archive")

    def _start_job(self, job: dict, log: Log, what: str) -> None:
        """Apply ``job``, replacing a Job of its name left by an earlier attempt (a Job's pod template cannot change)."""
        kind, namespace, name = KINDS["Job"], job["metadata"]["namespace"], job["metadata"]["name"]
        try:
            self._request("DELETE", kind.path(namespace, name), describe(kind, namespace, name),
                          query={"propagationPolicy": "Background"})
            log(f"deleted Job {name} left by an earlier attempt")
        except NotFound:
            pass
        self._apply(job)
        log(f"started Job {name} in {namespace}: {what}")

    def _run_job(self, job: dict, log: Log, what: str) -> dict:
        """Start ``job``, wait until it succeeds or fails, and return the JSON its pod printed after
        :data:`ARCHIVE_MARK`.  BackendError with the end of the pod's log when it failed."""
        kind, namespace, name = KINDS["Job"], job["metadata"]["namespace"], job["metadata"]["name"]
        self._start_job(job, log, what)
        deadline = time.monotonic() + self.archive_timeout
        while True:
            status = self._get(kind, namespace, name).get("status") or {}
            if status.get("succeeded") or status.get("failed"):
                break
            if time.monotonic() > deadline:
                raise BackendError(f"Job {name} did not finish within {self.archive_timeout:g}s")
            time.sleep(self.archive_poll)
        lines = self._job_log(namespace, name)
        if not status.get("succeeded"):
            raise BackendError(f"Job {name} failed: " + (" / ".join(lines[-3:]) or "its pod left no log"))
        found = next((line for line in reversed(lines) if line.startswith(ARCHIVE_MARK)), None)
        if found is None:
            raise BackendError(f"Job {name} succeeded but its pod did not report a result")
        log(f"Job {name} succeeded")
        return json.loads(found[len(ARCHIVE_MARK):])

    def _job_log(self, namespace: str, name: str) -> list[str]:
        pods = self._list(POD, namespace, labelSelector=f"job-name={name}")
        if not pods:
            return []
        pod = pods[-1]["metadata"]["name"]
        text = self._request("GET", POD.path(namespace, pod) + "/log", f"log of pod {namespace}/{pod}",
                             query={"limitBytes": LOG_TAIL_BYTES}, as_text=True)
        return text.splitlines()

    def status(self, state: dict) -> HubStatus:
        """The hub as the cluster shows it; never raises."""
        if not deployed(state):
            return HubStatus(running=False, ready=False, phase="pending", message="not deployed yet")
        namespace = state["namespace"]
        try:
            release = {**self._get(HELMRELEASE, namespace, state["release"]),
                       "kind": HELMRELEASE.kind, "apiVersion": HELMRELEASE.api_version}
            objects = [obj for kind, query in RUNTIME_LISTS for obj in self._list(kind, namespace, **query)]
        except NotFound:
            return self.missing(state)
        except BackendError as exc:
            return self.unanswered(exc)
        return self.classify(state, release, objects)

    def statuses(self, states: list[dict]) -> list[HubStatus]:
        """The status of many hubs of this cluster from one list request per kind, whatever their number."""
        if not any(deployed(state) for state in states):
            return [self.status(state) for state in states]
        try:
            releases = {(namespace_of(obj), obj["metadata"]["name"]): obj
                        for obj in self._list(HELMRELEASE, labelSelector=RELEASE_SELECTOR)}
            by_namespace: dict[str, list[dict]] = {}
            for kind, query in RUNTIME_LISTS:
                for obj in self._list(kind, **query):
                    by_namespace.setdefault(namespace_of(obj), []).append(obj)
        except BackendError as exc:
            return [self.unanswered(exc) if deployed(state) else self.status(state) for state in states]
        found = []
        for state in states:
            release = releases.get((state.get("namespace"), state.get("release")))
            if not deployed(state):
                found.append(self.status(state))
            elif release is None:
                found.append(self.missing(state))
            else:
                found.append(self.classify(state, release, by_namespace.get(state["namespace"], [])))
        return found

    @staticmethod
    def classify(state: dict, release: dict, objects: list[dict]) -> HubStatus:
        """The status from a HelmRelease and its namespace's objects; pure."""
        deploy = classify_helmrelease(release, want_chart_version=state.get("chart_version") or None,
                                      token=state.get("token"))
        # the values the HelmRelease holds now: what Helm installs, whoever wrote them last
        return replace(hub_status(deploy, classify_runtime(objects), url=state.get("url")),
                       config_digest=digest((release.get("spec") or {}).get("values") or {}))

    @staticmethod
    def config_digest(spec: HubSpec) -> str | None:
        """The digest of the HelmRelease values :meth:`deploy` writes for ``spec`` (secrets stay in the values
        Secret, so they are not part of it); None when the spec cannot make them."""
        try:
            return digest(chart_values(spec))
        except ValueError:
            return None

    @staticmethod
    def missing(state: dict) -> HubStatus:
        """The status of a hub whose HelmRelease is not in the cluster."""
        where = f"{state['namespace']}/{state['release']}"
        if state.get("generation"):
            return HubStatus(running=False, ready=False, phase="failed", reason="NotFound",
                             message=f"HelmRelease {where} is gone from the cluster; deploy the hub again")
        return HubStatus(running=False, ready=False, phase="pending", reason="NotFound",
                         message=f"HelmRelease {where} does not exist yet")

    @staticmethod
    def unanswered(exc: BackendError) -> HubStatus:
        """The status when the cluster cannot be asked: whether the hub runs is unknown, so it is not called dead."""
        message = str(exc) if isinstance(exc, (Unreachable, NoClient)) else \
            f"the cluster's API refused to answer: {exc}"
        return HubStatus(running=True, ready=False, message=message, phase="", retry_after=30.0)

    def alive(self, state: dict) -> bool | None:
        return None  # the platform restarts pods; nothing cheap to look at

    def log_tail(self, state: dict, lines: int = 200) -> HubLog:
        """The end of the hub pod's log, from the API (``GET .../pods/POD/log?tailLines=N``); never raises.

        When the hub's container has restarted and is not running now (CrashLoopBackOff), the log of its previous run
        is the one that says why: that one is read (``previous=true``), and ``reason`` says so.  ``tailLines`` bounds
        what the API sends; ``limitBytes`` is not used, since it keeps the *first* bytes of the tail and would cut off
        the newest lines.  What comes is cut to its last :data:`LOG_TAIL_BYTES` here, and the hub's service token
        (:meth:`api_token`) is blanked in it."""
        if not deployed(state):
            return HubLog(reason="the hub was never deployed, so it has no log yet")
        namespace = state["namespace"]
        try:
            pods = self._list(POD, namespace, labelSelector=HUB_POD_SELECTOR)
            if not pods:
                return HubLog(reason=f"the hub has no pod in namespace {namespace} yet")
            pod = hub_pod(pods)
            name = pod["metadata"]["name"]
            query: dict[str, Any] = {"tailLines": max(lines, 1)}
            containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
            if len(containers) > 1 and "hub" in containers:  # the API wants a container named when there are more
                query["container"] = "hub"
            statuses = {c.get("name"): c for c in (pod.get("status") or {}).get("containerStatuses") or []}
            container = statuses.get("hub") or next(iter(statuses.values()), {})
            restarts = container.get("restartCount") or 0
            previous = restarts > 0 and "running" not in (container.get("state") or {})
            if previous:
                query["previous"] = "true"
            answer = self._request("GET", f"{POD.path(namespace, name)}/log", f"the log of Pod {namespace}/{name}",
                                   query=query, as_text=True)
        except BackendError as exc:
            return HubLog(reason=f"the hub's log cannot be read: {exc}")
        source = f"Pod {namespace}/{name}" + (" (previous run)" if previous else "")
        recent = answer[-LOG_TAIL_BYTES:].splitlines()[len(answer) > LOG_TAIL_BYTES:]  # a cut first line dropped
        tail = recent[-lines:] if lines > 0 else []
        token = self.api_token(state)
        if token:
            tail = [line.replace(token, MASK) for line in tail]
        if previous:
            return HubLog(lines=tail, source=source, reason=f"the hub's container is not running (restarted {restarts} "
                                                            f"times): these lines are from its last run")
        return HubLog(lines=tail, reason="" if tail else "the hub's pod has logged nothing yet", source=source)

    def api_url(self, state: dict) -> str | None:
        return f"{state['url']}hub/api/" if state.get("url") else None

    def service_token(self, uid: str | None) -> str | None:
        """The read-only service token of the hub with fleet-unique id ``uid``: the same for the hub's whole life,
        different for every hub, and useless for guessing another's (HMAC under ``service_key``); None without a
        ``service_key`` or a uid.  Pure."""
        if not self._service_key or not uid:
            return None
        return hmac.new(self._service_key.encode(), f"{SERVICE_NAME}:{uid}".encode(), hashlib.sha256).hexdigest()

    def api_token(self, state: dict, purpose: str = "probe") -> str | None:
        """The hub's read-only service token for ``purpose`` "probe" (:meth:`service_token` of the uid its state
        holds); None for "check" (no Kubernetes hub has a token that may start servers) and for a hub never
        deployed.  A hub last deployed before it had this service refuses the token until its next deploy."""
        if purpose != "probe" or not deployed(state):
            return None
        return self.service_token(state.get("uid"))

    # -- onboarding -----------------------------------------------------------------------------------------------

    def onboard(self) -> list[Check]:
        """Whether this cluster can run hubs, check by check, each with how to fix it.  Never raises."""
        try:
            info = self._request("GET", "/version/", "the server version") or {}
        except BackendError as exc:
            first = Check("API reachable", False, str(exc), "check the kubeconfig's server and credentials, and that "
                                                            "this machine can reach the server")
            later = NOT_CHECKED if isinstance(exc, (Unreachable, NoClient)) else \
                "not checked: the API refused the first request"
            return [first] + [Check(name, False, later, fix) for name, fix, _ in self._later_checks()]
        server = self.client.configuration.host
        checks = [Check("API reachable", True, f"Kubernetes {info.get('gitVersion', '?')} answers at {server}")]
        for name, fix, check in self._later_checks():
            try:
                ok, detail = check(info)
            except BackendError as exc:
                ok, detail = False, str(exc)
            checks.append(Check(name, ok, detail, "" if ok else fix))
        return checks

    def _later_checks(self) -> list[tuple[str, str, Callable[[dict], tuple[bool, str]]]]:
        minimum = ".".join(map(str, MIN_KUBERNETES))
        return [
            (f"Kubernetes {minimum} or newer",
             f"upgrade the cluster to Kubernetes {minimum} or newer (the z2jh chart's kubeVersion)",
             self._check_version),
            ("Flux HelmRelease v2 served", FLUX_FIX, self._check_helmrelease),
            ("Flux HelmRepository v1 served", FLUX_FIX, self._check_source),
            ("a default StorageClass", STORAGE_CLASS_FIX, self._check_storage_class),
        ]

    @staticmethod
    def _check_version(info: dict) -> tuple[bool, str]:
        git_version = info.get("gitVersion", "")
        found = parse_version(git_version) or parse_version(f"{info.get('major')}.{info.get('minor')}")
        if found is None:
            return False, f"cannot read the server version {git_version!r}"
        ok = found >= MIN_KUBERNETES
        return ok, f"the server runs {git_version}" + ("" if ok else f", older than {MIN_KUBERNETES[0]}."
                                                                           f"{MIN_KUBERNETES[1]}")

    def _served(self, group_version: str) -> set[str]:
        """The resource names the API serves under ``group_version`` (empty when the group is not served)."""
        try:
            answer = self._request("GET", f"/apis/{group_version}", f"discovery of {group_version}") or {}
        except NotFound:
            return set()
        return {resource.get("name", "") for resource in answer.get("resources") or []}

    def _check_helmrelease(self, _info) -> tuple[bool, str]:
        ok = "helmreleases" in self._served(HELMRELEASE.api_version)
        return ok, f"{HELMRELEASE.api_version} helmreleases is " + ("served" if ok else "not served: helm-controller "
                                                                                      "is missing or too old")

    def _check_source(self, _info) -> tuple[bool, str]:
        served = self._served(KINDS["HelmRepository"].api_version)
        if "helmrepositories" in served:
            return True, "source.toolkit.fluxcd.io/v1 helmrepositories is served"
        also = " (only ocirepositories is, and hubs use a HelmRepository)" if "ocirepositories" in served else ""
        return False, (f"source.toolkit.fluxcd.io/v1 helmrepositories is not served{also}: source-controller is "
                       f"missing or too old")

    def _check_storage_class(self, _info) -> tuple[bool, str]:
        classes = self._list(KINDS["StorageClass"])
        default = [obj["metadata"]["name"] for obj in classes
                   if any((obj["metadata"].get("annotations") or {}).get(key) == "true" for key in DEFAULT_CLASS)]
        if default:
            return True, f"default StorageClass {default[0]}"
        names = ", ".join(obj["metadata"]["name"] for obj in classes) or "none"
        return False, (f"no StorageClass is marked default (StorageClasses: {names}); the hub database's volume "
                       f"would stay Pending")
