"""A Kubernetes API server stand-in for tests: kmock's emulator plus a fidelity layer, served over real HTTP.

The product code speaks only HTTP to Kubernetes, through the official ``kubernetes`` client.  Tests point that
client at this emulator instead of a cluster (none can run here, see ../shared/notes/kubernetes.md §7).  Plain
kmock 0.8 gets fifteen things wrong that the backend relies on (§8.5); :class:`FidelityEmulator` puts them right:

1. ``/api/v1/namespaces[/name[/status]]`` is routed to the Namespace resource (kmock reads it as a namespace prefix);
2. create answers 201 (``CustomObjectsApi.create_*`` returns ``None`` for anything else);
3. PUT replaces, and a stale ``metadata.resourceVersion`` answers 409 Conflict;
4. server-side apply (``application/apply-patch+yaml``) creates a missing object, and requires a fieldManager;
5. the server sets ``uid``, ``resourceVersion``, ``creationTimestamp`` and ``generation``; generation grows only
   when something outside ``metadata`` and ``status`` changes (an annotation patch keeps it);
6. ``labelSelector`` (equality- and set-based) and ``fieldSelector`` on ``metadata.name``/``metadata.namespace``;
7. lists carry ``kind: <Kind>List`` and ``apiVersion``;
8. ``/version`` and ``/version/`` both answer;
9. with the configured Kubernetes version (default 1.33.0, which the z2jh chart accepts);
10. core discovery says ``groupVersion: v1``;
11. errors are ``Status`` objects typed exactly ``application/json``, with Kubernetes' reasons and messages;
12. Secret ``stringData`` is folded into base64 ``data``;
13. a namespaced write into a namespace that does not exist answers 404 (403 while it terminates);
14. ``/status`` changes only ``status``, and the main endpoint ignores ``status``;
15. create, PUT, server-side apply and patches are validated (``tests.k8s.schemas.validate``) and refused with 422.
Also: ``apiVersion``/``kind`` default from the URL; ``GET .../pods/NAME/log`` answers the text a test gave
(:meth:`Emulator.set_log`, ``previous=true`` its previous run's) as ``text/plain``, cut to ``tailLines`` (404 for a
pod that does not exist); deleting a
Namespace deletes what is in it; deleting an object with finalizers only sets ``deletionTimestamp``, and removing the
last finalizer then deletes it.

Still simplified: patches merge naively (lists replaced, no managedFields, no apply conflicts); watch ignores
``labelSelector``, ``timeoutSeconds`` and ``resourceVersion``; no admission (quota, PodSecurity); every object gets
a ``generation``.

**kmock is pinned to exactly 0.8**: this layer replaces ``kmock._internal.parsing.parse_path`` and overrides private
methods of ``KubernetesEmulator`` (``_handle``, ``_serve_*``, ``_render_error``) and uses its ``_objects``,
``_resources``, ``_buses``, ``_lock`` and ``_requests``.  ``tests/k8s/test_emulator.py`` is the contract that
fails loudly if another kmock release moves them.

:class:`Emulator` runs it on its own thread and event loop, so synchronous code (the backend, Flask, the fake
helm-controller) can call it; ``kube_api`` and ``kube_api_factory`` are the pytest fixtures.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import functools
import importlib.resources
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import aiohttp.test_utils
import aiohttp.web
import attrs
import kmock
import pytest
import yaml
from kmock._internal import dicts, enums, parsing, references, rendering

# -- routing ---------------------------------------------------------------------------------------------------------

_KMOCK_PARSE_PATH = parsing.parse_path
NAMESPACE_SUBRESOURCES = ("status", "finalize")


def parse_path(path: str) -> parsing.ParsedPath:
    """kmock's URL parser, except that ``/api/v1/namespaces[/NAME[/status|finalize]]`` addresses Namespaces.

    kmock reads ``namespaces/NAME`` as the namespace prefix of a namespaced URL, so Namespace objects themselves
    were unreachable (create and list answered 500, get/patch/delete 404)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "api" and parts[2] == "namespaces":
        rest = parts[3:]
        if len(rest) <= 1 or (len(rest) == 2 and rest[1] in NAMESPACE_SUBRESOURCES):
            return parsing.ParsedPath("", parts[1], "namespaces", None, rest[0] if rest else None,
                                      rest[1] if len(rest) == 2 else None)
    return _KMOCK_PARSE_PATH(path)


parsing.parse_path = parse_path

# -- pure helpers ----------------------------------------------------------------------------------------------------

SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp")
APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCHES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


def now() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, UTC)."""
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def group_version(res: references.resource) -> str:
    """``v1`` for the core group, ``group/version`` otherwise."""
    return f"{res.group}/{res.version}" if res.group else res.version


def spec_part(obj: dict) -> dict:
    """What a change of bumps ``metadata.generation``: everything but metadata, status and the type."""
    return {key: value for key, value in obj.items() if key not in ("metadata", "status", "apiVersion", "kind")}


def fold_string_data(obj: dict) -> dict:
    """A Secret with ``stringData`` merged into base64 ``data`` (stringData wins), as the API server stores it."""
    if obj.get("kind") != "Secret" or "stringData" not in obj:
        return obj
    data = dict(obj.get("data") or {})
    for key, value in (obj.pop("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    obj["data"] = data
    return obj


def _split_requirements(selector: str) -> list[str]:
    """Split a label selector on the commas that are not inside ``in (...)`` value lists."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


_SET_RE = re.compile(r"^(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQ_RE = re.compile(r"^(?P<key>[^\s!=(),]+)\s*(?P<op>==|!=|=)\s*(?P<value>[^\s!=(),]*)$")
_EXISTS_RE = re.compile(r"^(?P<neg>!?)\s*(?P<key>[^\s!=(),]+)$")


def label_selector(selector: str) -> Callable[[dict], bool]:
    """A predicate over label dicts for a Kubernetes label selector string; ValueError if it does not parse.

    Supports ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` and ``!k``, comma-joined."""
    checks: list[Callable[[dict], bool]] = []
    for requirement in _split_requirements(selector or ""):
        if match := _SET_RE.match(requirement):
            key, values = match["key"], {v.strip() for v in match["values"].split(",") if v.strip()}
            if match["op"] == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif match := _EQ_RE.match(requirement):
            key, value = match["key"], match["value"]
            if match["op"] == "!=":
                checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                checks.append(lambda labels, k=key, v=value: k in labels and labels[k] == v)
        elif match := _EXISTS_RE.match(requirement):
            key, present = match["key"], not match["neg"]
            checks.append(lambda labels, k=key, p=present: (k in labels) == p)
        else:
            raise ValueError(f"unable to parse requirement: {requirement!r}")
    return lambda labels: all(check(labels or {}) for check in checks)


# Field selectors the API server supports for every kind, plus those of Events the backend uses.
FIELD_PATHS = {"metadata.name": ("metadata", "name"), "metadata.namespace": ("metadata", "namespace"),
               "type": ("type",), "involvedObject.kind": ("involvedObject", "kind")}


def _field(obj: dict, path: tuple[str, ...]) -> str:
    for key in path:
        obj = obj.get(key) or {} if isinstance(obj, dict) else {}
    return obj if isinstance(obj, str) else ""


def field_selector(selector: str) -> Callable[[dict], bool]:
    """A predicate over objects for a field selector on the paths of ``FIELD_PATHS``."""
    checks: list[Callable[[dict], bool]] = []
    for requirement in _split_requirements(selector or ""):
        match = _EQ_RE.match(requirement)
        if not match or match["key"] not in FIELD_PATHS:
            raise ValueError(f'field label not supported: {requirement.split("=")[0].rstrip("!")}')
        path, value, negate = FIELD_PATHS[match["key"]], match["value"], match["op"] == "!="
        checks.append(lambda obj, p=path, v=value, n=negate: (_field(obj, p) == v) != n)
    return lambda obj: all(check(obj) for check in checks)


def status_error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """A Kubernetes ``Status`` failure (rendered by :meth:`FidelityEmulator._render_error`)."""
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details or None)


def not_found(res: references.resource, name: str) -> kmock.KubernetesError:
    return status_error(404, "NotFound", f'{res.plural}{"." + res.group if res.group else ""} "{name}" not found',
                        name=name, group=res.group, kind=res.plural)


def default_validator(obj: dict, kube_version: str) -> None:
    """The schema check of every write: ``tests.k8s.schemas.validate`` (built-in kinds and the Flux CRDs)."""
    from tests.k8s.schemas import validate
    validate(obj, kube_version)


def _schema_error_types() -> tuple[type[Exception], ...]:
    from tests.k8s.schemas import SchemaError
    return (SchemaError,)


# -- Flux kinds and presets ------------------------------------------------------------------------------------------

FLUX_RESOURCES = {
    "helm.toolkit.fluxcd.io/v2/helmreleases": ("HelmRelease", "helmrelease", {"hr"}),
    "source.toolkit.fluxcd.io/v1/helmrepositories": ("HelmRepository", "helmrepository", {"helmrepo"}),
    "source.toolkit.fluxcd.io/v1/ocirepositories": ("OCIRepository", "ocirepository", {"ocirepo"}),
    "source.toolkit.fluxcd.io/v1/helmcharts": ("HelmChart", "helmchart", {"hc"}),
}
VERBS = {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
FLUX_CONTROLLERS = ("source-controller", "helm-controller")


def flux_resources() -> dict[str, references.ResourceInfo]:
    """Discovery entries for the Flux kinds the backend uses, each with a ``status`` subresource."""
    return {path: references.ResourceInfo(namespaced=True, kind=kind, singular=singular, shortnames=short,
                                          verbs=VERBS, subresources={"status"}, categories={"all"})
            for path, (kind, singular, short) in FLUX_RESOURCES.items()}


@functools.lru_cache(maxsize=1)
def _bundled_resources() -> dict[references.resource, references.ResourceInfo]:
    """kmock's bundled discovery of the built-in kinds, parsed once per process (it is a gzip of JSON)."""
    array = kmock.ResourcesArray()
    # load_bundled() itself calls the deprecated importlib.resources.read_binary (an error under filterwarnings)
    array.load_path(str(importlib.resources.files("kmock._internal") / "resources.json.gz"))
    return {res: array[res] for res in array}


def preset_objects(flux: bool, storage_class: bool) -> list[dict]:
    """What a fresh cluster already holds: the system namespaces, Flux's namespace and controllers, a default
    StorageClass."""
    objects: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                            "status": {"phase": "Active"}} for name in SYSTEM_NAMESPACES]
    if flux:
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"},
                        "status": {"phase": "Active"}})
        for name in FLUX_CONTROLLERS:
            labels = {"app": name, "app.kubernetes.io/component": name, "app.kubernetes.io/part-of": "flux"}
            objects.append({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "flux-system", "labels": labels},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [{"name": "manager",
                                                               "image": f"ghcr.io/fluxcd/{name}"}]}}},
                "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1},
            })
    if storage_class:
        objects.append({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard",
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        })
    return objects


# -- the kmock subclass ----------------------------------------------------------------------------------------------

Key = tuple[references.resource, str | None, str]


@attrs.define(kw_only=True)
class FidelityEmulator(kmock.KubernetesEmulator):
    """kmock's in-memory Kubernetes API with the behaviour the backend depends on made faithful (module docstring).

    All state lives in kmock's ``_objects`` and is changed only on the event loop of the server, so the write
    functions below run without awaiting in between and need no further locking."""

    kube_version: str = "1.33.0"
    validator: Callable[[dict, str], None] | None = default_validator
    latency: float = 0.0  # seconds every request waits before it is served
    _counter: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _outcomes: dict[int, rendering.Response] = attrs.field(factory=dict, init=False)
    # (namespace, pod, previous run) -> log text
    pod_logs: dict[tuple[str, str, bool], str] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for res, info in _bundled_resources().items():
            self.resources[res] = attrs.evolve(info)
        self.fallback["get /version/"] << self._serve_server_version
        self.fallback[enums.method.PUT] << self._serve_outcome

    # --- registry ---------------------------------------------------------------------------------------------------

    def info(self, res: references.resource) -> references.ResourceInfo | None:
        """The discovery entry of a fully named resource, or None when this server does not serve it."""
        return self.resources[res] if res in self.resources else None

    def resource_for(self, api_version: str, kind: str) -> references.resource:
        """The resource serving ``kind`` in ``api_version``; KeyError if none."""
        group, _, version = api_version.rpartition("/")
        for res in self.resources:
            if res.group == group and res.version == version and self.resources[res].kind == kind:
                return res
        raise KeyError(f"no resource for {api_version} {kind}")

    def resource_named(self, name: str) -> references.resource:
        """A resource from ``group/version/plural``, ``v1/plural`` or a Kind (``HelmRelease``; core wins)."""
        if "/" in name or "." in name:
            res = references.resource(name)
            if self.info(res) is None:
                raise KeyError(f"unknown resource {name}")
            return res
        matches = sorted((res for res in self.resources if self.resources[res].kind == name),
                         key=lambda res: (res.group != "", res.group))
        if not matches:
            raise KeyError(f"unknown kind {name}")
        return matches[0]

    def live(self, key: Key) -> dict | None:
        """The current state of an object (not a copy), or None."""
        obj = self._objects._objects.get(key)
        return None if obj is None or obj.deleted else obj.last.raw

    def live_items(self) -> Iterator[tuple[Key, dict]]:
        for key, obj in list(self._objects.items()):
            if not obj.deleted:
                yield key, obj.last.raw

    # --- state changes (synchronous, on the server's loop) ----------------------------------------------------------

    def _next_version(self) -> str:
        return str(next(self._counter))

    def _event(self, res: references.resource, kind: str, obj: dict) -> tuple:
        return res, {"type": kind, "object": copy.deepcopy(obj)}

    def store(self, key: Key, obj: dict, events: list) -> dict:
        """Save a new version of an object and queue its watch event."""
        existed = self.live(key) is not None
        if key in self._objects._objects:
            self._objects._objects[key].history.append(obj)
        else:
            self._objects[key] = obj
        events.append(self._event(key[0], "MODIFIED" if existed else "ADDED", obj))
        return obj

    def remove(self, key: Key, events: list) -> None:
        obj = self.live(key)
        if obj is not None:
            self._objects._objects[key].delete()
            events.append(self._event(key[0], "DELETED", obj))

    def stamp(self, res: references.resource, obj: dict, namespace: str | None) -> dict:
        """The object as first stored: type from the URL, server-set metadata, stringData folded."""
        info = self.info(res)
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", group_version(res))
        obj.setdefault("kind", info.kind)
        obj = fold_string_data(obj)
        meta = obj.setdefault("metadata", {})
        for field in SERVER_FIELDS:
            meta.pop(field, None)
        if info.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_version(), creationTimestamp=now(),
                    generation=1)
        return obj

    def check_type(self, res: references.resource, obj: dict) -> None:
        info = self.info(res)
        if obj.get("apiVersion", group_version(res)) != group_version(res) or obj.get("kind", info.kind) != info.kind:
            raise status_error(400, "BadRequest", f"the API version in the data ({obj.get('apiVersion')}) "
                               f"does not match the expected API version ({group_version(res)}) "
                               f"or kind {obj.get('kind')} is not {info.kind}")

    def check_namespace(self, res: references.resource, namespace: str | None) -> None:
        """404 if a namespaced object's namespace does not exist, 403 while it terminates."""
        if not self.info(res).namespaced:
            return
        ns = self.live((references.resource("", "v1", "namespaces"), None, namespace))
        if ns is None:
            raise status_error(404, "NotFound", f'namespaces "{namespace}" not found', name=namespace,
                               kind="namespaces")
        if ns["metadata"].get("deletionTimestamp"):
            raise status_error(403, "Forbidden", f"{res.plural} is forbidden: unable to create new content in "
                               f"namespace {namespace} because it is being terminated", kind=res.plural)

    def check_valid(self, res: references.resource, obj: dict) -> None:
        """422 Invalid with the schema's message when the stored object would not pass the API server."""
        if self.validator is None:
            return
        try:
            self.validator(obj, self.kube_version)
        except _schema_error_types() as exc:
            name = (obj.get("metadata") or {}).get("name", "")
            raise status_error(422, "Invalid", f'{obj.get("kind")} "{name}" is invalid: {exc}', name=name,
                               group=res.group, kind=obj.get("kind"), causes=[{"message": str(exc)}]) from None

    def check_version(self, current: dict, body: dict) -> None:
        """409 Conflict when the body names a resourceVersion other than the stored one."""
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            meta = current["metadata"]
            raise status_error(409, "Conflict", f'Operation cannot be fulfilled on {self.info_plural(current)} '
                               f'"{meta["name"]}": the object has been modified; please apply your changes to '
                               f"the latest version and try again", name=meta["name"])

    def info_plural(self, obj: dict) -> str:
        try:
            return self.resource_for(obj["apiVersion"], obj["kind"]).plural
        except KeyError:
            return obj.get("kind", "")

    def create(self, res: references.resource, namespace: str | None, body: dict, events: list,
               validate: bool = True) -> dict:
        """POST (and an apply that creates): 409 if present, 404/403 for the namespace, 422 if invalid."""
        self.check_type(res, body)
        meta = body.get("metadata") or {}
        if namespace and meta.get("namespace") not in (None, namespace):
            raise status_error(400, "BadRequest", "the namespace of the provided object does not match the "
                               "namespace sent on the request")
        name = meta.get("name") or (meta.get("generateName") and meta["generateName"] + uuid.uuid4().hex[:5])
        if not name:
            raise status_error(422, "Invalid", f"{self.info(res).kind} is invalid: metadata.name: Required value: "
                               "name or generateName is required", kind=self.info(res).kind)
        key = (res, namespace if self.info(res).namespaced else None, name)
        if self.live(key) is not None:
            raise status_error(409, "AlreadyExists", f'{res.plural}{"." + res.group if res.group else ""} '
                               f'"{name}" already exists', name=name, group=res.group, kind=res.plural)
        self.check_namespace(res, namespace)
        obj = self.stamp(res, body, namespace)
        obj["metadata"]["name"] = name
        if "status" in self.info(res).subresources:
            obj.pop("status", None)
        if validate:
            self.check_valid(res, obj)
        return self.store(key, obj, events)

    def update(self, key: Key, new: dict, events: list, subresource: str | None, validate: bool = True) -> dict:
        """Store ``new`` as the next version of an existing object, keeping what the endpoint may not change."""
        res, current = key[0], self.live(key)
        new = copy.deepcopy(new)
        new.setdefault("apiVersion", current["apiVersion"])
        new.setdefault("kind", current["kind"])
        new = fold_string_data(new)
        has_status = "status" in self.info(res).subresources
        if subresource == "status":
            merged = copy.deepcopy(current)
            merged["status"] = new.get("status")
            if merged["status"] is None:
                merged.pop("status")
            new = merged
        elif has_status:
            new.pop("status", None)
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
        meta = new.setdefault("metadata", {})
        for field in SERVER_FIELDS + ("name", "namespace"):
            if field in current["metadata"]:
                meta[field] = current["metadata"][field]
            else:
                meta.pop(field, None)
        if spec_part(new) != spec_part(current):
            meta["generation"] = current["metadata"].get("generation", 0) + 1
        meta["resourceVersion"] = self._next_version()
        if validate:
            self.check_valid(res, new)
        self.store(key, new, events)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.remove(key, events)
        return new

    def delete(self, key: Key, events: list) -> dict | None:
        """Delete now, or only mark it when finalizers hold it (then return it); a Namespace takes its content."""
        obj = self.live(key)
        if obj is None:
            raise not_found(key[0], key[2])
        if key[0] == references.resource("", "v1", "namespaces"):
            self.mark_deleted(key, events, phase="Terminating")
            for other_key, _ in list(self.live_items()):
                if other_key[1] == key[2] and self.info(other_key[0]) and self.info(other_key[0]).namespaced:
                    self.delete(other_key, events)
            return self.live(key)
        if (obj.get("metadata") or {}).get("finalizers"):
            return self.mark_deleted(key, events)
        self.remove(key, events)
        return None

    def mark_deleted(self, key: Key, events: list, phase: str | None = None) -> dict:
        obj = copy.deepcopy(self.live(key))
        if not obj["metadata"].get("deletionTimestamp"):
            obj["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0,
                                   resourceVersion=self._next_version())
            if phase:
                obj.setdefault("status", {})["phase"] = phase
            self.store(key, obj, events)
        return obj

    def sweep_namespaces(self, events: list) -> None:
        """Remove terminating Namespaces once nothing is left in them (objects held by finalizers keep them)."""
        namespaces = references.resource("", "v1", "namespaces")
        occupied = {key[1] for key, _ in self.live_items() if key[1] is not None}
        for key, obj in list(self.live_items()):
            meta = obj["metadata"]
            if key[0] == namespaces and meta.get("deletionTimestamp") and not meta.get("finalizers") \
                    and key[2] not in occupied:
                self.remove(key, events)

    def write(self, request: rendering.Request, events: list) -> rendering.Response | None:
        """Apply one write request to the state, queueing watch events; the response, or None for reads."""
        res, method = request.resource, request.method
        info = self.info(res)
        if method in (enums.method.GET, enums.method.HEAD) or request.action == enums.action.WATCH:
            return None
        if request.subresource not in (None, "status") or (request.subresource == "status"
                                                           and "status" not in info.subresources):
            raise status_error(404, "NotFound", "the server could not find the requested resource")
        if info.namespaced and request.namespace is None and method != enums.method.GET:
            raise status_error(405, "MethodNotAllowed", "the server does not allow this method on the "
                               "requested resource")
        key = (res, request.namespace if info.namespaced else None, request.name)
        body = self.body(request)
        if method == enums.method.POST and request.name is None:
            result, code = self.create(res, request.namespace, self.object_body(body), events), 201
        elif method == enums.method.PUT and request.name:
            body = self.object_body(body)
            self.check_type(res, body)
            current = self.live(key)
            if current is None:
                raise not_found(res, request.name)
            self.check_version(current, body)
            result, code = self.update(key, body, events, request.subresource), 200
        elif method == enums.method.PATCH and request.name:
            result, code = self.patch(request, key, body, events)
        elif method == enums.method.DELETE and request.name:
            kept = self.delete(key, events)
            result, code = kept or {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success",
                                    "details": {"name": request.name, "group": res.group, "kind": res.plural}}, 200
        else:
            raise status_error(405, "MethodNotAllowed", "the server does not allow this method on the "
                               "requested resource")
        self.sweep_namespaces(events)
        return rendering.Response(status=code, payload=copy.deepcopy(result))

    def patch(self, request: rendering.Request, key: Key, body: Any, events: list) -> tuple[dict, int]:
        """PATCH by content type: apply (creating if missing), JSON-Patch, or merge/strategic-merge."""
        res, current = key[0], self.live(key)
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type == APPLY:
            if not request.params.get("fieldManager"):
                raise status_error(400, "BadRequest", "PATCH requests with apply content type must specify a "
                                   "fieldManager")
            body = self.object_body(body)
            self.check_type(res, body)
            if (body.get("metadata") or {}).get("name", request.name) != request.name:
                raise status_error(400, "BadRequest", "the name of the object does not match the name on the URL")
            if current is None:
                if request.subresource == "status":
                    raise not_found(res, request.name)
                body.setdefault("metadata", {})["name"] = request.name
                return self.create(res, request.namespace, body, events), 201
            new = dicts.merge_patch_dict(current, body)
        elif current is None:
            raise not_found(res, request.name)
        elif content_type == JSON_PATCH:
            if not isinstance(body, list):
                raise status_error(400, "BadRequest", "json patch must be a list of operations")
            try:
                new = dicts.json_patch_dict(current, body)
            except Exception as exc:  # jsonpatch's conflict and pointer errors alike
                raise status_error(422, "Invalid", f"the server rejected our request due to an error in our "
                                   f"request: {exc}") from None
        elif content_type in MERGE_PATCHES:
            if not isinstance(body, dict):
                raise status_error(400, "BadRequest", f"{content_type} body must be a JSON object, got "
                                   f"{type(body).__name__}")
            new = dicts.merge_patch_dict(current, body)
        else:
            raise status_error(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                               f"accepted media types include: {JSON_PATCH}, {', '.join(MERGE_PATCHES)}, {APPLY}")
        if isinstance(body, dict):
            self.check_version(current, body)
        return self.update(key, dict(new), events, request.subresource), 200

    @staticmethod
    def body(request: rendering.Request) -> Any:
        """The parsed request body: JSON, or YAML for a hand-written apply."""
        if request.data is not None and not (isinstance(request.data, dict) and not request.data and request.text):
            return request.data
        return yaml.safe_load(request.text) if request.text else None

    @staticmethod
    def object_body(body: Any) -> dict:
        if not isinstance(body, dict):
            raise status_error(400, "BadRequest", "the body of the request must be a JSON object")
        return body

    # --- serving ----------------------------------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """Change the state for writes first (so user reactions see it too), then let kmock pick the response."""
        if self.latency:  # a slow API server: a test may stop a client half-way through its writes
            await asyncio.sleep(self.latency)
        res = request.resource
        if res is not None and res.plural is not None:
            if self.info(res) is None:
                raise status_error(404, "NotFound", "the server could not find the requested resource")
            async with self._lock:
                events: list = []
                outcome = self.write(request, events)
                await self.publish(events)
            if outcome is not None:
                self._outcomes[request.id] = outcome
        try:
            return await super(kmock.KubernetesEmulator, self)._handle(request)
        finally:
            self._outcomes.pop(request.id, None)

    async def publish(self, events: list) -> None:
        """Hand queued ``(resource, event)`` pairs to the watch streams."""
        for res, event in events:
            await self._buses[res].put(event)

    async def _serve_outcome(self, request: rendering.Request) -> rendering.Payload:
        """The response computed by :meth:`write` for this request."""
        return self._outcomes[request.id]

    _serve_create = _serve_update = _serve_delete = _serve_outcome

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        async with self._lock:
            info = self.info(request.resource)
            obj = self.live((request.resource, request.namespace if info.namespaced else None, request.name))
        if obj is not None and request.subresource == "log" and info.kind == "Pod":
            return self._serve_log(request)
        if obj is None or request.subresource not in (None, "status"):
            raise not_found(request.resource, request.name)
        return copy.deepcopy(obj)

    def _serve_log(self, request: rendering.Request) -> rendering.Response:
        """A pod's log as the kubelet gives it: plain text, its last ``tailLines`` lines."""
        previous = request.params.get("previous") == "true"
        lines = self.pod_logs.get((request.namespace, request.name, previous), "").splitlines(keepends=True)
        tail = request.params.get("tailLines")
        if tail is not None:
            lines = lines[-int(tail):] if int(tail) > 0 else []
        return rendering.Response(payload="".join(lines).encode(), headers={"Content-Type": "text/plain"})

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        """A ``<Kind>List`` filtered by namespace, labelSelector and fieldSelector."""
        res = request.resource
        try:
            labels = label_selector(request.params.get("labelSelector", ""))
            fields = field_selector(request.params.get("fieldSelector", ""))
        except ValueError as exc:
            raise status_error(400, "BadRequest", f"unable to parse requirement: {exc}") from None
        async with self._lock:
            items = [copy.deepcopy(obj) for key, obj in self.live_items()
                     if key[0] == res and (request.namespace is None or key[1] == request.namespace)
                     and labels((obj.get("metadata") or {}).get("labels") or {}) and fields(obj)]
            version = str(next(self._counter))
        return {"apiVersion": group_version(res), "kind": f"{self.info(res).kind}List",
                "metadata": {"resourceVersion": version}, "items": items}

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        """Group-version discovery; the core group's is ``v1``, not ``/v1``."""
        document = await super()._serve_version(request)
        document["groupVersion"] = group_version(request.resource)
        return document

    async def _serve_server_version(self, request: rendering.Request) -> rendering.Payload:
        major, minor, *_ = self.kube_version.lstrip("v").split(".")
        return {"major": major, "minor": minor, "gitVersion": f"v{self.kube_version.lstrip('v')}",
                "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64"}

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        """A Kubernetes ``Status``, typed exactly ``application/json`` as the API server types it."""
        if isinstance(exc, kmock.KubernetesError):
            code = exc.status
            reason = "NotFound" if isinstance(exc, kmock.KubernetesNotFoundError) else exc.reason
            message = exc.message or repr(exc)
        else:
            code, reason, message = 500, "InternalError", f"Internal error occurred: {exc!r}"
        document = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                    "reason": reason, "code": code}
        if isinstance(exc, kmock.KubernetesError) and isinstance(exc.details, dict):
            document["details"] = {key: value for key, value in exc.details.items() if value is not None}
        return aiohttp.web.Response(body=json.dumps(document).encode(), status=code,
                                    headers={"Content-Type": "application/json"})


# -- the threaded wrapper --------------------------------------------------------------------------------------------

class Recorded(NamedTuple):
    """One request as the emulator received it."""
    method: str
    path: str
    params: dict
    content_type: str
    body: Any


class Emulator:
    """A :class:`FidelityEmulator` served on 127.0.0.1 from its own thread and event loop.

    Use as a context manager; ``url`` and ``kubeconfig()`` point a client at it, ``requests`` lists what it
    received, and ``get``/``objects``/``put``/``patch``/``delete`` read and change its state directly (no HTTP, no
    validation, not recorded), e.g. to preset objects or to act as a controller would."""

    def __init__(self, kube_version: str = "1.33.0", flux: bool = True, storage_class: bool = True,
                 validate: bool = True):
        self.kube_version = kube_version
        self.flux = flux
        self.storage_class = storage_class
        self.api = FidelityEmulator(kube_version=kube_version, validator=default_validator if validate else None)
        if flux:
            for path, info in flux_resources().items():
                self.api.resources[path] = info
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: aiohttp.test_utils.RawTestServer | None = None

    # --- lifecycle ---

    def __enter__(self) -> Emulator:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-api-emulator", daemon=True)
        self._thread.start()
        self._run(self._start())
        for obj in preset_objects(self.flux, self.storage_class):
            self.put(obj)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    async def _start(self) -> None:
        # aiohttp's bare test server rather than kmock.Server: the latter also swaps aiohttp's resolver process-wide
        await self.api.__aenter__()
        self._server = aiohttp.test_utils.RawTestServer(self.api, host="127.0.0.1", port=0)
        await self._server.start_server()

    async def _stop(self) -> None:
        await self._server.close()
        await self.api.__aexit__(None, None, None)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def _locked(self, fn: Callable[[list], Any]) -> Any:
        """Run ``fn(events)`` on the server's loop under its lock, then publish the watch events it queued."""
        async def call() -> Any:
            async with self.api._lock:
                events: list = []
                result = fn(events)
                await self.api.publish(events)
                return result
        return self._run(call())

    # --- addresses ---

    @property
    def url(self) -> str:
        return str(self._server.make_url("")).rstrip("/")

    def kubeconfig(self, token: str = "x") -> str:
        """Kubeconfig text whose current context reaches this emulator over plain HTTP with a bearer token."""
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": token}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}],
            "current-context": "emulator",
        }, sort_keys=False)

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far, oldest first."""
        return [Recorded(str(r.method.value if hasattr(r.method, "value") else r.method).upper(), r.url.path,
                         dict(r.params), (r.headers.get("Content-Type") or "").split(";")[0].strip(),
                         FidelityEmulator.body(r) if r.body else None)
                for r in list(self.api._requests)]

    # --- direct state access ---

    def _key(self, kind: str, name: str, namespace: str | None) -> Key:
        res = self.api.resource_named(kind)
        return res, namespace if self.api.info(res).namespaced else None, name

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """A copy of one object (``kind`` as a Kind or a ``group/version/plural`` path), or None."""
        key = self._key(kind, name, namespace)
        return self._locked(lambda events: copy.deepcopy(self.api.live(key)))

    def objects(self, kind: str, namespace: str | None = None, labels: str = "") -> list[dict]:
        """Copies of the objects of ``kind`` (in ``namespace`` if given) matching the label selector ``labels``."""
        res, match = self.api.resource_named(kind), label_selector(labels)
        return self._locked(lambda events: [copy.deepcopy(obj) for key, obj in self.api.live_items()
                                     if key[0] == res and namespace in (None, key[1])
                                     and match((obj.get("metadata") or {}).get("labels") or {})])

    def history(self, kind: str, name: str, namespace: str | None = None) -> list[dict | None]:
        """Every stored version of an object, oldest first; None marks a deletion."""
        key = self._key(kind, name, namespace)
        return self._locked(lambda events: [None if v is None else copy.deepcopy(v.raw)
                                     for v in self.api._objects._objects[key].history]
                            if key in self.api._objects._objects else [])

    def put(self, obj: dict) -> dict:
        """Store ``obj`` as given (status included), creating or replacing it, with server-set metadata."""
        res = self.api.resource_for(obj["apiVersion"], obj["kind"])
        namespace = obj["metadata"].get("namespace") if self.api.info(res).namespaced else None
        key = (res, namespace, obj["metadata"]["name"])

        def put(events: list) -> dict:
            current = self.api.live(key)
            stored = self.api.stamp(res, obj, namespace)
            stored["metadata"]["name"] = key[2]
            if current is not None:
                for field in ("uid", "creationTimestamp"):
                    stored["metadata"][field] = current["metadata"][field]
                generation = current["metadata"].get("generation", 1)
                stored["metadata"]["generation"] = generation + (spec_part(stored) != spec_part(current))
            stored["metadata"].setdefault("generation", obj["metadata"].get("generation", 1))
            return copy.deepcopy(self.api.store(key, stored, events))
        return self._locked(put)

    def patch(self, kind: str, name: str, namespace: str | None, changes: dict,
              subresource: str | None = None, validate: bool = False) -> dict:
        """Merge-patch an object as the API would (``subresource="status"`` changes only its status); with
        ``validate``, refuse a result the schemas reject (:class:`kmock.KubernetesError`, status 422)."""
        key = self._key(kind, name, namespace)

        def patch(events: list) -> dict:
            current = self.api.live(key)
            if current is None:
                raise KeyError(f"{kind} {namespace}/{name} not found")
            new = dict(dicts.merge_patch_dict(current, changes))
            updated = copy.deepcopy(self.api.update(key, new, events, subresource, validate=validate))
            self.api.sweep_namespaces(events)  # the last finalizer gone may end a Terminating namespace
            return updated
        return self._locked(patch)

    def set_log(self, namespace: str, pod: str, text: str, previous: bool = False) -> None:
        """What ``GET /api/v1/namespaces/NAMESPACE/pods/POD/log`` answers from now on (with ``previous``: for
        ``previous=true``, the container's run before the last restart); the pod itself is not made."""
        self._locked(lambda events: self.api.pod_logs.__setitem__((namespace, pod, previous), text))

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        """Delete an object as the API would (finalizers and Namespace content included)."""
        key = self._key(kind, name, namespace)

        def delete(events: list) -> None:
            self.api.delete(key, events)
            self.api.sweep_namespaces(events)
        self._locked(delete)


# -- pytest fixtures -------------------------------------------------------------------------------------------------

@pytest.fixture
def kube_api_factory() -> Iterator[Callable[..., Emulator]]:
    """Start emulators with options (``kube_version``, ``flux``, ``storage_class``, ``validate``); all are stopped
    when the test ends."""
    started: list[Emulator] = []

    def start(**options: Any) -> Emulator:
        emulator = Emulator(**options).__enter__()
        started.append(emulator)
        return emulator
    yield start
    for emulator in reversed(started):
        emulator.__exit__(None, None, None)


@pytest.fixture
def kube_api(kube_api_factory: Callable[..., Emulator]) -> Emulator:
    """A running emulator of a Kubernetes 1.33 cluster with Flux and a default StorageClass."""
    return kube_api_factory()
