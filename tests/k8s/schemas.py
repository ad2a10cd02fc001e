"""Is a manifest valid for the API server that would receive it?  Offline, with the server's own schemas.

- Built-in kinds: the Kubernetes OpenAPI schemas bundled by ``kubernetes-validate`` (1.25-1.37), in their strict
  form (unknown fields refused, as ``kubectl --validate=strict`` and server-side field validation do).  The
  package's own ``validate`` reloads 1.4 MB of definitions per object; here one registry per version and one
  validator per kind are kept for the process.
- Flux kinds: each CRD's ``openAPIV3Schema`` turned into JSON Schema Draft 7 (:func:`crd_to_json_schema`) plus
  its ``x-kubernetes-validations`` CEL rules, evaluated with cel-python with ``self`` bound to the node they sit
  on, as the API server does.

Not covered (only a cluster shows them): defaulting, admission (PodSecurity, quota), immutability on update,
CEL cost limits, ``format`` checks, RE2 versus Python ``re`` (the CRDs' patterns are simple).
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import yaml
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from tests.k8s.reference import flux_crds_dir

BUNDLED = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
FLUX_GROUPS = ("helm.toolkit.fluxcd.io", "source.toolkit.fluxcd.io")
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
RFC1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
QUALIFIED_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# kind -> (name pattern, maximum length); None for every other kind
NAME_RULES = {"Namespace": (DNS1123_LABEL, 63), "Service": (RFC1035_LABEL, 63), None: (DNS1123_SUBDOMAIN, 253)}
CEL_KEYWORD = "x-kubernetes-validations"


class SchemaError(Exception):
    """A manifest the API server would refuse; the message names the object and the path of the error."""


def validate(obj: dict[str, Any], kube_version: str = "1.33.0") -> None:
    """Raise :class:`SchemaError` unless ``obj`` is valid for a Kubernetes ``kube_version`` API server with the
    Flux CRDs installed.  The first error found is reported (the most relevant one, by jsonschema's ranking)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("apiVersion"), str) or not isinstance(
            obj.get("kind"), str):
        raise SchemaError(f"{_describe(obj)}: a manifest needs apiVersion and kind")
    group = obj["apiVersion"].rpartition("/")[0]
    try:
        if group in FLUX_GROUPS:
            validator = flux_validator(obj["apiVersion"], obj["kind"])
        else:
            validator = builtin_validator(_schema_version(kube_version), obj["apiVersion"], obj["kind"])
    except SchemaError as exc:
        raise SchemaError(f"{_describe(obj)}: {exc}") from None
    error = best_match(validator.iter_errors(obj))
    if error is not None:
        raise SchemaError(f"{_describe(obj)}: {error_path(error)}: {error.message}")
    problem = metadata_problem(obj)
    if problem:
        raise SchemaError(f"{_describe(obj)}: {problem}")


def metadata_problem(obj: dict[str, Any]) -> str | None:
    """What the API server's object-meta validation refuses, which the OpenAPI schemas do not express: the
    name rule of the kind (DNS-1123 label for a Namespace, RFC 1035 label for a Service, DNS-1123 subdomain
    otherwise), the namespace, label keys and values, annotation keys.  None when all is well; pure."""
    meta = obj.get("metadata") or {}
    name, rule = meta.get("name"), NAME_RULES.get(obj["kind"], NAME_RULES[None])
    if not meta.get("generateName") and not isinstance(name, str):
        return "metadata.name: a name is required"
    if isinstance(name, str) and not (len(name) <= rule[1] and re.match(rule[0], name)):
        return f"metadata.name: {name!r} is not a valid name (at most {rule[1]} characters matching {rule[0]})"
    namespace = meta.get("namespace")
    if namespace is not None and not (len(namespace) <= 63 and re.match(DNS1123_LABEL, namespace)):
        return f"metadata.namespace: {namespace!r} is not a DNS-1123 label"
    for key, value in (meta.get("labels") or {}).items():
        if not _qualified_name(key):
            return f"metadata.labels: {key!r} is not a valid label key"
        if not isinstance(value, str) or not (len(value) <= 63 and re.match(LABEL_VALUE, value)):
            return f"metadata.labels.{key}: {value!r} is not a valid label value (at most 63 characters)"
    for key in meta.get("annotations") or {}:
        if not _qualified_name(key):
            return f"metadata.annotations: {key!r} is not a valid annotation key"
    return None


def _qualified_name(key: str) -> bool:
    """A label or annotation key: an optional DNS-1123 subdomain prefix and '/', then a name of at most 63."""
    prefix, _, name = key.rpartition("/")
    if prefix and not (len(prefix) <= 253 and re.match(DNS1123_SUBDOMAIN, prefix)):
        return False
    return 0 < len(name) <= 63 and bool(re.match(QUALIFIED_NAME, name))


def _describe(obj: Any) -> str:
    """'HelmRelease hub-demo (helm.toolkit.fluxcd.io/v2)', as far as ``obj`` says."""
    if not isinstance(obj, dict):
        return f"not a manifest ({type(obj).__name__})"
    name = (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), dict) else None
    return f"{obj.get('kind', '?')} {name or '(no name)'} ({obj.get('apiVersion', '?')})"


def error_path(error: jsonschema.ValidationError) -> str:
    """'spec.template.spec.containers[0].image' for an error; '(root)' at the top."""
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(root)"


# --- built-in kinds ---------------------------------------------------------------------------------------------

def _schema_version(kube_version: str) -> str:
    """The bundled schema directory's version for a cluster version: '1.33.0' for 'v1.33.2'."""
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?$", kube_version)
    version = f"{match.group(1)}.{match.group(2)}.0" if match else kube_version
    if not (BUNDLED / f"v{version}-local-strict").is_dir():
        raise SchemaError(f"no bundled Kubernetes schemas for version {kube_version!r}")
    return version


@functools.cache
def _definitions(version: str) -> Registry:
    """The registry holding one version's shared definitions, loaded once."""
    path = BUNDLED / f"v{version}-local-strict" / "_definitions.json"
    return Resource.from_contents(json.loads(path.read_text())) @ Registry()


@functools.cache
def builtin_validator(version: str, api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """The strict validator of one built-in kind at one bundled Kubernetes version.

    The schema must declare that very group/version/kind: files for embedded types ('NamespaceSpec') or
    removed API versions ('extensions/v1beta1' NetworkPolicy) do not count as a kind the server serves.
    """
    group, _, gv = api_version.rpartition("/")
    short_group = group.split(".")[0]
    path = BUNDLED / f"v{version}-local-strict" / f"{kind.lower()}-{short_group + '-' if group else ''}{gv}.json"
    schema = json.loads(path.read_text()) if path.is_file() else {}
    served = {(g.get("group", ""), g.get("version"), g.get("kind"))
              for g in schema.get("x-kubernetes-group-version-kind", [])}
    if (group, gv, kind) not in served:
        raise SchemaError(f"Kubernetes {version.rsplit('.', 1)[0]} serves no kind {kind} in {api_version}")
    return jsonschema.Draft202012Validator(schema, registry=_definitions(version))


# --- Flux kinds: CRD openAPIV3Schema -> JSON Schema Draft 7, plus CEL ----------------------------------------------

_DROPPED = {"description", "default", "format", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
            "nullable", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
            "x-kubernetes-embedded-resource"}


def crd_to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """One openAPIV3Schema node as JSON Schema Draft 7; pure.

    - ``x-kubernetes-int-or-string`` -> integer or string; ``nullable`` -> the type or null;
    - objects with ``properties`` refuse other keys unless ``x-kubernetes-preserve-unknown-fields`` (the server
      prunes or, with strict field validation, refuses them), so ``spec.values`` stays free-form;
    - ``x-kubernetes-validations`` kept as is, for the CEL keyword of :func:`flux_validator`.
    """
    out = {key: value for key, value in node.items() if key not in _DROPPED}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    elif "type" in node and node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if "properties" in node:
        out["properties"] = {name: crd_to_json_schema(child) for name, child in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
            out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = crd_to_json_schema(node["additionalProperties"])
    if isinstance(node.get("items"), dict):
        out["items"] = crd_to_json_schema(node["items"])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            out[key] = [crd_to_json_schema(child) for child in node[key]]
    if "not" in node:
        out["not"] = crd_to_json_schema(node["not"])
    return out


def _metadata_schema() -> dict[str, Any]:
    """The shape of a custom object's metadata (its values are checked by :func:`metadata_problem`)."""
    strings = {"type": "object", "additionalProperties": {"type": "string"}}
    return {"type": "object", "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                                             "labels": strings, "annotations": strings}}


@functools.cache
def flux_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """{(apiVersion, kind): JSON Schema} for every served version of every Flux CRD in the reference data."""
    schemas = {}
    for path in sorted(flux_crds_dir().glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = crd_to_json_schema(version["schema"]["openAPIV3Schema"])
                schema["properties"]["metadata"] = _metadata_schema()
                schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


@functools.cache
def _cel_program(rule: str) -> celpy.Runner:
    """A compiled CEL rule; each distinct rule is compiled once per process."""
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_rules(validator: Any, rules: list[dict[str, Any]], instance: Any, schema: dict[str, Any]
               ) -> Iterator[jsonschema.ValidationError]:
    """The ``x-kubernetes-validations`` keyword: every rule must evaluate to true with ``self`` = this node."""
    for rule in rules:
        try:
            result = _cel_program(rule["rule"]).evaluate({"self": celpy.json_to_cel(instance)})
        except celpy.CELEvalError as exc:  # the server reports a rule it cannot evaluate as invalid too
            yield jsonschema.ValidationError(f"rule {rule['rule']!r} could not be evaluated: {exc}")
            continue
        if isinstance(result, celpy.CELEvalError):
            yield jsonschema.ValidationError(f"rule {rule['rule']!r} could not be evaluated: {result}")
        elif not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            yield jsonschema.ValidationError(rule.get("message") or f"failed rule: {rule['rule']}")


_FluxValidator = jsonschema.validators.extend(jsonschema.Draft7Validator, {CEL_KEYWORD: _cel_rules})


@functools.cache
def flux_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """The validator (schema + CEL) of one Flux kind and version, built once."""
    schema = flux_schemas().get((api_version, kind))
    if schema is None:
        known = ", ".join(f"{k} {v}" for v, k in sorted(flux_schemas()))
        raise SchemaError(f"no Flux CRD serves kind {kind} in {api_version} (known: {known})")
    return _FluxValidator(schema)
