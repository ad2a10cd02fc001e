"""The objects one hub needs on Kubernetes (clusters/k8s_manifests.py): names, content, secrets kept apart.

L1 pure tests, plus L3 (every object valid for a 1.32 and a 1.37 API server with the Flux CRDs, through the real
OpenAPI schemas and CRD schemas with CEL) and one L2 check against the real z2jh chart rendered by the Helm engine.
No cluster is involved: the schemas and the chart stand in for what the API server and helm-controller would check.
"""
from __future__ import annotations

import base64
import json
import re

import pytest
import yaml

from clusters.base import HubSpec, merge_secrets
from clusters.k8s_manifests import (HUB_LABEL, INSTITUTION_LABEL, MANAGED_BY, SYSTEM_NAMESPACE, UID_LABEL,
                                    Z2JH_REPOSITORY, bytes_quantity, chart_values, cpu_quantity, hub_objects, masked,
                                    memory_bytes, names, pod_security_level, repository_name, split_image)
from tests.k8s.reference import needs_reference

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SECRET = "s3cret-oauth-value-1f2e"
KINDS = ["Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "NetworkPolicy", "Secret", "HelmRepository",
         "HelmRelease"]


def make_spec(**changes) -> HubSpec:
    """A z2jh hub as the console would describe it: GenericOAuthenticator with its client secret kept apart."""
    fields = dict(
        slug="physics-lab", institution="uni-example", uid="42", chart_version="4.4.0",
        hub_image="quay.io/jupyterhub/k8s-hub:4.4.0",
        config={"hub": {"config": {"JupyterHub": {"authenticator_class": "generic-oauth"},
                                   "GenericOAuthenticator": {"client_id": "hubfleet-42",
                                                             "authorize_url": "https://idp.example/authorize"}}},
                "singleuser": {"image": {"name": "quay.io/jupyter/scipy-notebook", "tag": "2025-01-06"},
                               "memory": {"limit": "4G", "guarantee": "1G"}}},
        secrets={"hub": {"config": {"GenericOAuthenticator": {"client_secret": SECRET}}}},
        policy={"max_cpu": 4, "max_memory": "16G", "max_storage": "50Gi", "max_users": 1000, "gpus_allowed": False,
                "allowed_registries": ["quay.io/jupyter"]})
    fields.update(changes)
    return HubSpec(**fields)


def by_kind(objects, kind, index=0):
    return [o for o in objects if o["kind"] == kind][index]


# --- names ---------------------------------------------------------------------------------------------------------

def test_names_embed_the_uid_and_are_dns_labels():
    n = names(make_spec())
    assert (n.namespace, n.release, n.values_secret) == ("hf-42-physics-lab", "hf-42-physics-lab", "hubfleet-values")
    assert n.repository == repository_name(Z2JH_REPOSITORY) and n.repository.startswith("z2jh-")


@pytest.mark.parametrize("slug,uid", [("a" * 40, "7"), ("x" + "-y" * 19 + "z", "123456789012"), ("ab-" * 13 + "c", "9"),
                                      ("hub", "1" * 48), ("Mixed_Case.Slug", "5")])
def test_long_or_odd_slugs_fit_the_limits(slug, uid):
    n = names(make_spec(slug=slug, uid=uid))
    assert len(n.release) <= 53 and len(n.namespace) <= 63
    for name in (n.release, n.namespace):
        assert DNS1123_LABEL.match(name), name
        assert name.startswith(f"hf-{uid}")


def test_the_slug_is_cut_not_the_uid():
    n = names(make_spec(slug="a" * 40, uid="1234567890"))
    assert n.release == "hf-1234567890-" + "a" * 39
    assert n.namespace == "hf-1234567890-" + "a" * 40


def test_a_slug_used_again_gets_new_names():
    """A deleted hub's slug may come back with a new uid: nothing of the old hub's may be reused."""
    first, second = names(make_spec(uid="41")), names(make_spec(uid="97"))
    assert first.namespace != second.namespace and first.release != second.release


def test_uids_never_collide_through_the_hyphen():
    """uid "1" with slug "2-x" and uid "12" with slug "x" must differ; a uid with a hyphen is refused."""
    assert names(make_spec(uid="1", slug="2-x")).release != names(make_spec(uid="12", slug="x")).release
    with pytest.raises(ValueError, match="letters and digits"):
        names(make_spec(uid="1-2"))


@pytest.mark.parametrize("uid", ["", "  "])
def test_names_need_a_uid(uid):
    with pytest.raises(ValueError, match="uid"):
        names(make_spec(uid=uid))


def test_a_uid_too_long_for_a_release_is_refused():
    with pytest.raises(ValueError, match="too long"):
        names(make_spec(uid="9" * 51))


def test_repository_names_differ_per_url():
    assert repository_name("https://hub.jupyter.org/helm-chart/") != repository_name("https://charts.example/")
    assert DNS1123_LABEL.match(repository_name("https://charts.example/"))


# --- chart values --------------------------------------------------------------------------------------------------

def test_chart_values_add_the_pins_and_keep_the_config():
    spec = make_spec()
    values = chart_values(spec)
    assert values["hub"]["image"] == {"name": "quay.io/jupyterhub/k8s-hub", "tag": "4.4.0"}
    assert values["hub"]["db"]["pvc"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert values["singleuser"]["cloudMetadata"]["blockWithIptables"] is False
    assert values["singleuser"]["networkPolicy"]["enabled"] is True
    assert values["scheduling"]["userScheduler"]["enabled"] is False
    assert values["prePuller"]["hook"]["enabled"] is False
    assert values["singleuser"]["memory"] == {"limit": "4G", "guarantee": "1G"}
    assert values["hub"]["config"]["GenericOAuthenticator"]["client_id"] == "hubfleet-42"
    assert "image" not in spec.config["hub"], "the spec's config must not be changed"


def test_chart_values_without_hub_image_leave_the_chart_default():
    assert "image" not in chart_values(make_spec(hub_image=""))["hub"]


def test_a_placeholder_at_a_secret_path_is_dropped():
    """spec.values win over valuesFrom: an empty client_secret there would hide the real one (pitfall 3)."""
    spec = make_spec()
    config = merge_secrets(spec.config, {"hub": {"config": {"GenericOAuthenticator": {"client_secret": ""}}}})
    values = chart_values(make_spec(config=config))
    assert "client_secret" not in values["hub"]["config"]["GenericOAuthenticator"]
    assert values["hub"]["config"]["GenericOAuthenticator"]["client_id"] == "hubfleet-42"


@pytest.mark.parametrize("image,expected", [
    ("quay.io/jupyterhub/k8s-hub:4.4.0", ("quay.io/jupyterhub/k8s-hub", "4.4.0")),
    ("registry.local:5000/hub:v1", ("registry.local:5000/hub", "v1")),
])
def test_split_image(image, expected):
    assert split_image(image) == expected


@pytest.mark.parametrize("image", ["quay.io/jupyterhub/k8s-hub", "registry.local:5000/hub", ":tag"])
def test_a_hub_image_needs_a_tag(image):
    with pytest.raises(ValueError, match="needs a tag"):
        hub_objects(make_spec(hub_image=image))


def test_pod_security_follows_the_iptables_setting():
    assert pod_security_level({"singleuser": {"cloudMetadata": {"blockWithIptables": False}}}) == "baseline"
    assert pod_security_level({}) is None
    assert pod_security_level({"singleuser": {"cloudMetadata": {"blockWithIptables": True}}}) is None


# --- quantities ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy_size,expected", [("16G", "16G"), ("50Gi", "50Gi"), ("512M", "512M"), ("10K", "10k"),
                                                  ("1.5G", "1500M"), ("1.5Gi", "1536Mi"), ("1024Gi", "1Ti")])
def test_policy_sizes_become_kubernetes_quantities(policy_size, expected):
    assert bytes_quantity(memory_bytes(policy_size)) == expected


@pytest.mark.parametrize("milli,expected", [(4000, "4"), (500, "500m"), (4080000, "4080"), (1500, "1500m")])
def test_cpu_quantities(milli, expected):
    assert cpu_quantity(milli) == expected


# Kubernetes' quantity grammar (apimachinery resource.Quantity); the OpenAPI schemas only say int-or-string.
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")


def quantities(obj):
    """Every quantity string in a ResourceQuota's or LimitRange's spec."""
    if obj["kind"] == "ResourceQuota":
        return list(obj["spec"]["hard"].values())
    return [v for limit in obj["spec"]["limits"] for key in ("max", "default", "defaultRequest")
            for v in limit.get(key, {}).values()]


@pytest.mark.parametrize("policy", [{}, {"max_cpu": 0.1, "max_memory": "1.5K", "max_storage": "0.5Gi"},
                                    {"max_cpu": 1.25, "max_memory": "3.3G", "max_users": 7}])
def test_quantities_follow_the_kubernetes_grammar(policy):
    objects = hub_objects(make_spec(policy=policy))
    found = quantities(by_kind(objects, "ResourceQuota")) + quantities(by_kind(objects, "LimitRange"))
    assert found and all(isinstance(q, str) and QUANTITY.match(q) for q in found), found


# --- the objects ---------------------------------------------------------------------------------------------------

def test_objects_come_in_apply_order_with_identity():
    objects = hub_objects(make_spec())
    assert [o["kind"] for o in objects] == KINDS
    n = names(make_spec())
    for obj in objects:
        assert obj["apiVersion"] and obj["metadata"]["name"]
        if obj["kind"] == "Namespace":
            assert "namespace" not in obj["metadata"]
        elif obj["kind"] == "HelmRepository":
            assert obj["metadata"]["namespace"] == SYSTEM_NAMESPACE
        else:
            assert obj["metadata"]["namespace"] == n.namespace


def test_every_hub_object_carries_the_hub_labels():
    for obj in hub_objects(make_spec()):
        labels = obj["metadata"]["labels"]
        assert labels[MANAGED_BY[0]] == MANAGED_BY[1]
        if obj["kind"] == "HelmRepository":  # shared by the cluster's hubs: removing one hub must not find it
            assert set(labels) == {MANAGED_BY[0]}
            continue
        assert (labels[INSTITUTION_LABEL], labels[HUB_LABEL], labels[UID_LABEL]) == ("uni-example", "physics-lab",
                                                                                     "42")


def test_namespace_enforces_baseline():
    namespace = hub_objects(make_spec())[0]
    assert namespace["metadata"]["name"] == "hf-42-physics-lab"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"


def test_quota_follows_the_policy():
    """slots = max_users + 20; cpu/memory per slot; one volume per user plus the 1Gi hub database."""
    quota = by_kind(hub_objects(make_spec(policy={"max_cpu": 2, "max_memory": "4G", "max_storage": "10Gi",
                                                   "max_users": 30, "gpus_allowed": False})), "ResourceQuota")
    assert quota["spec"]["hard"] == {
        "requests.cpu": "100", "requests.memory": "200G", "limits.memory": "200G", "pods": "50",
        "persistentvolumeclaims": "31", "requests.storage": "301Gi", "services.loadbalancers": "1",
        "requests.nvidia.com/gpu": "0"}


def test_gpus_allowed_lifts_the_gpu_quota_and_policy_defaults_fill_gaps():
    quota = by_kind(hub_objects(make_spec(policy={"gpus_allowed": True})), "ResourceQuota")["spec"]["hard"]
    assert "requests.nvidia.com/gpu" not in quota
    assert quota["pods"] == "1020" and quota["requests.memory"] == "16320G"  # DEFAULT_POLICY's 1000 × 16G


def test_quota_counts_a_bigger_hub_database():
    config = {"hub": {"db": {"pvc": {"storage": "5Gi"}}}}
    quota = by_kind(hub_objects(make_spec(config=config, policy={"max_users": 2, "max_storage": "1Gi"})),
                    "ResourceQuota")
    assert quota["spec"]["hard"]["requests.storage"] == "7Gi"


def test_limit_range_defaults_stay_within_the_maximum():
    limits = by_kind(hub_objects(make_spec(policy={"max_cpu": 0.5, "max_memory": "128M"})), "LimitRange")
    container, claim = limits["spec"]["limits"]
    assert container["max"] == container["default"] == {"cpu": "500m", "memory": "128M"}
    assert container["defaultRequest"] == {"cpu": "100m", "memory": "128M"}
    assert claim == {"type": "PersistentVolumeClaim", "max": {"storage": "50Gi"}}


def test_network_policies_deny_ingress_and_let_the_ingress_controller_reach_the_proxy():
    objects = hub_objects(make_spec(), ingress_namespace="traefik")
    deny, allow = by_kind(objects, "NetworkPolicy", 0), by_kind(objects, "NetworkPolicy", 1)
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert allow["spec"]["podSelector"]["matchLabels"] == {"app": "jupyterhub", "component": "proxy"}
    assert allow["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = allow["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert "Egress" not in json.dumps([deny, allow])


def test_values_secret_holds_the_secrets_as_yaml():
    secret = by_kind(hub_objects(make_spec()), "Secret")
    assert secret["metadata"]["name"] == "hubfleet-values" and secret["type"] == "Opaque"
    assert yaml.safe_load(secret["stringData"]["values.yaml"]) == make_spec().secrets
    empty = by_kind(hub_objects(make_spec(secrets={})), "Secret")
    assert yaml.safe_load(empty["stringData"]["values.yaml"]) == {}


def test_no_secret_outside_the_secret():
    objects = hub_objects(make_spec())
    for obj in objects:
        if obj["kind"] != "Secret":
            assert SECRET not in json.dumps(obj), obj["kind"]
    assert SECRET in json.dumps(by_kind(objects, "Secret"))


def test_helm_repository():
    repository = by_kind(hub_objects(make_spec(), repository_url="https://charts.example/z2jh/"), "HelmRepository")
    assert repository["apiVersion"] == "source.toolkit.fluxcd.io/v1"
    assert repository["spec"] == {"url": "https://charts.example/z2jh/", "interval": "1h"}
    assert repository["metadata"]["name"] == repository_name("https://charts.example/z2jh/")


def test_helm_release_never_uninstalls_and_reads_secrets_from_the_secret():
    spec = make_spec()
    n = names(spec)
    release = by_kind(hub_objects(spec), "HelmRelease")
    assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    body = release["spec"]
    assert release["metadata"]["name"] == body["releaseName"] == n.release
    assert body["targetNamespace"] == body["storageNamespace"] == n.namespace
    assert body["chart"]["spec"] == {"chart": "jupyterhub", "version": "4.4.0",
                                     "sourceRef": {"kind": "HelmRepository", "name": n.repository,
                                                   "namespace": SYSTEM_NAMESPACE}}
    assert body["timeout"] == "15m" and body["interval"]
    assert body["install"]["remediation"]["retries"] == 3
    assert body["upgrade"]["remediation"]["strategy"] == "rollback"
    assert body["upgrade"]["remediation"]["remediateLastFailure"] is True
    assert "uninstall" not in json.dumps(body["upgrade"]) and "uninstall" not in json.dumps(body["install"])
    assert body["upgrade"]["cleanupOnFail"] is True and body["rollback"]["cleanupOnFail"] is True
    assert body["uninstall"] == {"keepHistory": False} and body["maxHistory"] == 5
    assert body["valuesFrom"] == [{"kind": "Secret", "name": "hubfleet-values", "valuesKey": "values.yaml"}]
    assert body["values"] == chart_values(spec)
    assert body["values"]["hub"]["db"]["pvc"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_helm_release_without_chart_version_takes_the_latest():
    assert "version" not in by_kind(hub_objects(make_spec(chart_version="")), "HelmRelease")["spec"]["chart"]["spec"]


def test_masked_hides_secret_values_only():
    objects = hub_objects(make_spec())
    objects[5]["data"] = {"extra": "c2VjcmV0"}
    shown = masked(objects)
    assert shown[5]["stringData"] == {"values.yaml": "********"} and shown[5]["data"] == {"extra": "********"}
    assert SECRET not in json.dumps(shown)
    assert shown[7] == objects[7]
    assert SECRET in objects[5]["stringData"]["values.yaml"], "masked must copy, not change its input"


# --- L3: the API server would take them ----------------------------------------------------------------------------

SPECS = [
    make_spec(),
    make_spec(slug="z" * 40, uid="123456789012345", secrets={}, chart_version="", hub_image="",
              policy={"max_cpu": 0.5, "max_memory": "512M", "max_storage": "1Gi", "max_users": 1}),
    make_spec(slug="gpu-hub", uid="7", policy={"max_cpu": 64, "max_memory": "1.5Ti", "max_storage": "1T",
                                                "max_users": 5000, "gpus_allowed": True}),
    make_spec(institution="x" * 40, policy={"max_memory": "10K", "max_cpu": 0.1}),
]


@needs_reference
@pytest.mark.parametrize("kube_version", ["1.32.0", "1.37.0"])
@pytest.mark.parametrize("spec", SPECS, ids=["default", "small", "gpu", "tiny"])
def test_every_object_is_valid_for_the_api_server(spec, kube_version):
    from tests.k8s.schemas import validate

    for obj in hub_objects(spec):
        validate(obj, kube_version)


# --- L2: the chart agrees with the pins ----------------------------------------------------------------------------

@needs_reference
def test_the_chart_rendered_with_these_values_matches_the_policies():
    """The real chart, rendered by Helm's engine with what helm-controller would pass (valuesFrom, then values on
    top): no cluster-scoped RBAC (userScheduler off), no image-awaiter hook, the hub database PVC kept, and the proxy
    pods carry the labels the allow-proxy NetworkPolicy selects, with the port it opens."""
    from tests.k8s.helm import render

    spec = make_spec()
    release, secret = by_kind(hub_objects(spec), "HelmRelease"), by_kind(hub_objects(spec), "Secret")
    values = merge_secrets(yaml.safe_load(secret["stringData"]["values.yaml"]), release["spec"]["values"])
    rendered = render(values, name=release["spec"]["releaseName"], namespace=release["spec"]["targetNamespace"])
    kinds = {o["kind"] for o in rendered}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    assert not [o for o in rendered if o["kind"] == "Job"]
    pvc = next(o for o in rendered if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == "hub-db-dir")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    proxy = next(o for o in rendered if o["kind"] == "Deployment" and o["metadata"]["name"] == "proxy")
    selector = by_kind(hub_objects(spec), "NetworkPolicy", 1)["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= proxy["spec"]["template"]["metadata"]["labels"].items()
    ports = [p["containerPort"] for c in proxy["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
             if p.get("name") == "http"]
    assert ports == [8000]
    hub_secret = next(o for o in rendered if o["kind"] == "Secret" and o["metadata"]["name"] == "hub")
    hub_values = yaml.safe_load(base64.b64decode(hub_secret["data"]["values.yaml"]))
    assert hub_values["hub"]["config"]["GenericOAuthenticator"]["client_secret"] == SECRET
    assert hub_values["singleuser"]["cloudMetadata"]["blockWithIptables"] is False
