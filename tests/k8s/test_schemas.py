"""The offline manifest validator (tests/k8s/schemas.py) refuses what the API server refuses and accepts the rest.

No API server here: built-in kinds are checked against the Kubernetes OpenAPI schemas bundled by
kubernetes-validate, Flux kinds against the real Flux CRDs (../shared/reference/flux-crds) and their CEL rules.
"""
from __future__ import annotations

import copy

import pytest

from tests.k8s.reference import needs_reference, present
from tests.k8s.schemas import SchemaError, crd_to_json_schema, validate

KUBE_VERSIONS = ("1.32.0", "1.37.0")


def helmrelease() -> dict:
    """A HelmRelease shaped like the one the console writes for a hub."""
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "hub-demo", "namespace": "hub-demo",
                     "labels": {"app.kubernetes.io/managed-by": "hubfleet", "hubfleet.io/hub": "demo"}},
        "spec": {
            "interval": "10m", "timeout": "15m", "releaseName": "hub-demo",
            "chart": {"spec": {"chart": "jupyterhub", "version": "4.4.0", "interval": "1h",
                               "sourceRef": {"kind": "HelmRepository", "name": "jupyterhub",
                                             "namespace": "hubfleet-system"}}},
            "install": {"remediation": {"retries": 3}},
            "upgrade": {"remediation": {"retries": 3, "remediateLastFailure": True}, "cleanupOnFail": True},
            "valuesFrom": [{"kind": "Secret", "name": "hub-demo-values", "valuesKey": "values.yaml"}],
            "values": {"hub": {"config": {"anything": {"goes": ["here", 1]}}},
                       "singleuser": {"storage": {"capacity": "10Gi"}}},
        },
    }


def helmrepository() -> dict:
    return {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
            "metadata": {"name": "jupyterhub", "namespace": "hubfleet-system"},
            "spec": {"url": "https://hub.jupyter.org/helm-chart/", "interval": "1h"}}


def changed(obj: dict, change) -> dict:
    """A deep copy of ``obj`` after ``change(copy)``."""
    obj = copy.deepcopy(obj)
    change(obj)
    return obj


# --- Flux kinds ------------------------------------------------------------------------------------------------

def _parent(obj, path: str):
    """(the node holding the last key of a dotted path, that key); numeric parts index lists."""
    *parents, last = path.split(".")
    for key in parents:
        obj = obj[int(key)] if isinstance(obj, list) else obj.setdefault(key, {})
    return obj, last


def _set(path: str, value):
    def change(obj):
        node, last = _parent(obj, path)
        node[last] = value
    return change


def _drop(path: str):
    def change(obj):
        node, last = _parent(obj, path)
        del node[last]
    return change


FLUX_REJECTIONS = {
    "missing interval": (_drop("spec.interval"), "spec: 'interval' is a required property"),
    "timeout in words": (_set("spec.timeout", "15 minutes"), "spec.timeout: '15 minutes' does not match"),
    "typo intervall": (_set("spec.intervall", "5m"), "'intervall' was unexpected"),
    "strategy reinstall": (_set("spec.upgrade.strategy", {"name": "reinstall"}),
                           "spec.upgrade.strategy.name: 'reinstall' is not one of"),
    "valuesFrom kind Vault": (_set("spec.valuesFrom.0.kind", "Vault"), "spec.valuesFrom[0].kind: 'Vault'"),
    "chart and chartRef": (_set("spec.chartRef", {"kind": "OCIRepository", "name": "jupyterhub"}),
                           "spec: either chart or chartRef must be set"),
    "neither chart nor chartRef": (_drop("spec.chart"), "spec: either chart or chartRef must be set"),
    "retryInterval with RemediateOnFailure (install)": (
        _set("spec.install.strategy", {"name": "RemediateOnFailure", "retryInterval": "1m"}),
        "spec.install.strategy: .retryInterval cannot be set when .name is 'RemediateOnFailure'"),
    "retryInterval with RemediateOnFailure (upgrade)": (
        _set("spec.upgrade.strategy", {"name": "RemediateOnFailure", "retryInterval": "1m"}),
        "spec.upgrade.strategy: .retryInterval can only be set when .name is 'RetryOnFailure'"),
    "name Demo": (_set("metadata.name", "Demo"), "metadata.name: 'Demo' is not a valid name"),
    "60-character releaseName": (_set("spec.releaseName", "h" * 60), "spec.releaseName: 'hhhh"),
    "kubeConfig with no ref (CEL)": (_set("spec.kubeConfig", {}), "spec.kubeConfig: exactly one of"),
    "retries as text": (_set("spec.install.remediation.retries", "three"), "is not of type 'integer'"),
    "a label value too long": (lambda obj: obj["metadata"]["labels"].update({"hubfleet.io/hub": "x" * 64}),
                               "metadata.labels.hubfleet.io/hub: 'xxxx"),
}


@needs_reference
@pytest.mark.parametrize("case", sorted(FLUX_REJECTIONS))
def test_a_helmrelease_the_api_server_refuses_is_refused(case):
    change, expected = FLUX_REJECTIONS[case]
    with pytest.raises(SchemaError) as caught:
        validate(changed(helmrelease(), change))
    message = str(caught.value)
    assert expected in message
    assert message.startswith("HelmRelease ") and "(helm.toolkit.fluxcd.io/v2)" in message


@needs_reference
def test_a_console_style_helmrelease_and_helmrepository_pass_at_every_version():
    for version in KUBE_VERSIONS:
        validate(helmrelease(), version)
        validate(helmrepository(), version)
    # A chartRef instead of a chart, the retry strategy with its interval: both allowed.
    validate(changed(helmrelease(), lambda o: (o["spec"].pop("chart"), o["spec"].update(
        chartRef={"kind": "OCIRepository", "name": "jupyterhub", "namespace": "hubfleet-system"},
        upgrade={"strategy": {"name": "RetryOnFailure", "retryInterval": "5m"}}))))


@needs_reference
def test_spec_values_stay_free_form_but_the_spec_around_them_does_not():
    validate(changed(helmrelease(), _set("spec.values.whatever", {"deeply": {"nested": [1, "two", None]}})))
    with pytest.raises(SchemaError, match="'valuez' was unexpected"):
        validate(changed(helmrelease(), _set("spec.valuez", {})))


@needs_reference
def test_other_flux_kinds_are_checked_too():
    with pytest.raises(SchemaError, match=r"HelmRepository jupyterhub .*spec.type: 'git' is not one of"):
        validate(changed(helmrepository(), _set("spec.type", "git")))
    helmchart = {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
                 "metadata": {"name": "hub-demo", "namespace": "hubfleet-system"},
                 "spec": {"chart": "jupyterhub", "interval": "1h",
                          "sourceRef": {"kind": "GitRepository", "name": "charts"}}}
    validate(helmchart)
    with pytest.raises(SchemaError, match="spec.verify is only supported when spec.sourceRef.kind is 'HelmRepository'"):
        validate(changed(helmchart, _set("spec.verify", {"provider": "cosign"})))
    with pytest.raises(SchemaError, match="no Flux CRD serves kind HelmRelease in helm.toolkit.fluxcd.io/v2beta1"):
        validate(changed(helmrelease(), _set("apiVersion", "helm.toolkit.fluxcd.io/v2beta1")))


def test_the_crd_converter_maps_kubernetes_extensions_to_json_schema():
    node = {"type": "object", "description": "x", "properties": {
        "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "note": {"type": "string", "nullable": True},
        "values": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "items": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
        "x-kubernetes-validations": [{"rule": "true"}]}
    out = crd_to_json_schema(node)
    assert out["additionalProperties"] is False and "description" not in out
    assert out["properties"]["port"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert out["properties"]["note"]["type"] == ["string", "null"]
    assert "additionalProperties" not in out["properties"]["values"]
    assert out["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert out["properties"]["items"]["items"]["additionalProperties"] is False
    assert out["x-kubernetes-validations"] == [{"rule": "true"}]


# --- built-in kinds --------------------------------------------------------------------------------------------

def deployment() -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hub"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "hub"}},
                     "template": {"metadata": {"labels": {"app": "hub"}}, "spec": {"containers": [
                         {"name": "hub", "image": "quay.io/jupyterhub/k8s-hub:4.4.0"}]}}}}


def pvc() -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "hub-db-dir", "annotations": {"helm.sh/resource-policy": "keep"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}


BUILTIN_REJECTIONS = {
    "replicas one": (deployment, _set("spec.replicas", "one"), "Deployment hub (apps/v1): spec.replicas: 'one'"),
    "accessModes as a string": (pvc, _set("spec.accessModes", "ReadWriteOnce"),
                                "spec.accessModes: 'ReadWriteOnce' is not of type 'array'"),
    "unknown field (strict)": (deployment, _set("spec.template.spec.containers.0.imagePullPolicyy", "Always"),
                               "spec.template.spec.containers[0]: Additional properties are not allowed"),
    "container without a name": (deployment, _drop("spec.template.spec.containers.0.name"),
                                     "'name' is a required property"),
    "Namespace name with a dot": (lambda: {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hub.demo"}},
                                  lambda o: None, "metadata.name: 'hub.demo' is not a valid name"),
}


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", sorted(BUILTIN_REJECTIONS))
def test_a_builtin_object_the_api_server_refuses_is_refused(case, version):
    build, change, expected = BUILTIN_REJECTIONS[case]
    with pytest.raises(SchemaError) as caught:
        validate(changed(build(), change), version)
    assert expected in str(caught.value)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_removed_api_versions_and_unknown_kinds_are_refused(version):
    netpol = {"apiVersion": "extensions/v1beta1", "kind": "NetworkPolicy", "metadata": {"name": "deny"},
              "spec": {"podSelector": {}}}
    with pytest.raises(SchemaError, match=r"NetworkPolicy deny \(extensions/v1beta1\): Kubernetes 1\.3\d serves no "
                                          r"kind NetworkPolicy in extensions/v1beta1"):
        validate(netpol, version)
    validate({**netpol, "apiVersion": "networking.k8s.io/v1"}, version)
    for obj in ({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
                {"apiVersion": "v1", "kind": "NamespaceSpec", "metadata": {"name": "w"}},
                {"kind": "Namespace", "metadata": {"name": "w"}}):
        with pytest.raises(SchemaError):
            validate(obj, version)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_the_objects_the_console_writes_pass(version):
    labels = {"app.kubernetes.io/managed-by": "hubfleet", "hubfleet.io/institution": "uni", "hubfleet.io/hub": "demo"}
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hub-demo", "labels": labels}},
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "hub", "namespace": "hub-demo"},
         "spec": {"hard": {"requests.cpu": "8", "limits.memory": "64Gi", "persistentvolumeclaims": "100"}}},
        {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "hub", "namespace": "hub-demo"},
         "spec": {"limits": [{"type": "Container", "max": {"cpu": "4", "memory": "16G"}}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "deny-ingress", "namespace": "hub-demo"},
         "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hub-demo-values", "namespace": "hub-demo"},
         "type": "Opaque", "stringData": {"values.yaml": "hub: {}\n"}},
        deployment(), pvc(), helmrelease(), helmrepository(),
    ]
    for obj in objects:
        if obj["kind"] in ("HelmRelease", "HelmRepository") and not present():
            continue  # the Flux CRDs are reference data; the built-in kinds are still checked
        validate(obj, version)


def test_an_unbundled_kubernetes_version_is_refused_by_name():
    with pytest.raises(SchemaError, match="no bundled Kubernetes schemas for version '2.0.0'"):
        validate(deployment(), "2.0.0")
