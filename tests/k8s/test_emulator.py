"""Contract of the Kubernetes API emulator (tests/k8s/emulator.py), spoken to by the official ``kubernetes`` client.

The emulator stands in for a cluster's API server in the backend's tests; these tests pin down each behaviour the
fidelity layer adds over kmock 0.8 (the fifteen gaps of ../shared/notes/kubernetes.md §8.5, numbered below), so a
kmock release that moves the private hooks fails here first.  Schema checks come from tests/k8s/schemas.py.
"""
from __future__ import annotations

import base64
import json
import time
import urllib.request

import pytest
import yaml
from kubernetes import client, config, dynamic

from tests.k8s.emulator import Emulator, field_selector, label_selector

HR = ("helm.toolkit.fluxcd.io", "v2")
FLUX_PLURALS = {"helmreleases", "helmrepositories", "ocirepositories", "helmcharts"}


def api_client(emulator: Emulator) -> client.ApiClient:
    return config.new_client_from_config_dict(yaml.safe_load(emulator.kubeconfig()))


def helmrelease(name: str = "hub", namespace: str = "hub-a", **spec) -> dict:
    return {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "chart": {"spec": {"chart": "jupyterhub", "version": "4.4.0",
                                                           "sourceRef": {"kind": "HelmRepository",
                                                                         "name": "z2jh",
                                                                         "namespace": "hubfleet-system"}}},
                     **spec}}


def raw_get(emulator: Emulator, path: str) -> tuple[int, str, dict]:
    """GET a path without any client library: status, exact Content-Type, parsed body."""
    try:
        with urllib.request.urlopen(emulator.url + path) as response:
            return response.status, response.headers["Content-Type"], json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], json.loads(exc.read())


@pytest.fixture
def core(kube_api):
    return client.CoreV1Api(api_client(kube_api))


@pytest.fixture
def custom(kube_api):
    return client.CustomObjectsApi(api_client(kube_api))


@pytest.fixture
def namespace(core):
    core.create_namespace({"metadata": {"name": "hub-a", "labels": {"app.kubernetes.io/managed-by": "hubfleet"}}})
    return "hub-a"


def test_start_and_stop_are_fast():
    """Best of three, so a garbage-collection pause of the test process does not count."""
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        with Emulator() as emulator:
            assert emulator.get("Namespace", "default")
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.2


def test_kubeconfig_points_the_client_at_the_emulator(kube_api):
    document = yaml.safe_load(kube_api.kubeconfig(token="t0ken"))
    assert document["current-context"] == "emulator"
    assert document["clusters"][0]["cluster"]["server"] == kube_api.url
    assert document["users"][0]["user"]["token"] == "t0ken"
    names = {ns.metadata.name for ns in client.CoreV1Api(api_client(kube_api)).list_namespace().items}
    assert {"default", "kube-system", "flux-system"} <= names
    assert kube_api.requests[-1].method == "GET" and kube_api.requests[-1].path == "/api/v1/namespaces"


def test_namespaces_are_routed_to_the_namespace_resource(core):
    """Gap 1: create, get, list, patch and delete a Namespace."""
    created = core.create_namespace({"metadata": {"name": "hub-b"}})
    assert created.kind == "Namespace" and created.metadata.name == "hub-b"
    assert core.read_namespace("hub-b").metadata.uid == created.metadata.uid
    core.patch_namespace("hub-b", {"metadata": {"labels": {"hubfleet.io/hub": "b"}}})
    listed = core.list_namespace(label_selector="hubfleet.io/hub=b").items
    assert [ns.metadata.name for ns in listed] == ["hub-b"]
    core.delete_namespace("hub-b")
    with pytest.raises(client.ApiException) as caught:
        core.read_namespace("hub-b")
    assert caught.value.status == 404


def test_create_answers_201_so_custom_objects_return_the_body(kube_api, custom, namespace):
    """Gap 2 (and pitfall 7: the client maps only 201 to a body)."""
    created = custom.create_namespaced_custom_object(*HR, namespace, "helmreleases", helmrelease())
    assert created["metadata"]["name"] == "hub" and created["metadata"]["generation"] == 1
    with pytest.raises(client.ApiException) as caught:
        custom.create_namespaced_custom_object(*HR, namespace, "helmreleases", helmrelease())
    assert caught.value.status == 409
    assert json.loads(caught.value.body)["reason"] == "AlreadyExists"


def test_put_replaces_and_a_stale_resource_version_conflicts(core, namespace):
    """Gap 3."""
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    replaced = core.replace_namespaced_config_map("c", namespace, {
        "metadata": {"name": "c", "resourceVersion": created.metadata.resource_version}, "data": {"b": "2"}})
    assert replaced.data == {"b": "2"}
    assert replaced.metadata.uid == created.metadata.uid
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(client.ApiException) as caught:
        core.replace_namespaced_config_map("c", namespace, {
            "metadata": {"name": "c", "resourceVersion": created.metadata.resource_version}, "data": {}})
    assert caught.value.status == 409
    assert "the object has been modified" in json.loads(caught.value.body)["message"]
    with pytest.raises(client.ApiException) as missing:
        core.replace_namespaced_config_map("nope", namespace, {"metadata": {"name": "nope"}})
    assert missing.value.status == 404


def test_server_side_apply_creates_then_updates(kube_api, custom, namespace):
    """Gap 4.  An apply that creates answers 201, for which CustomObjectsApi.patch_* returns None (as against a
    real API server); the object is there all the same."""
    apply = {"field_manager": "hubfleet", "force": True, "_content_type": "application/apply-patch+yaml"}
    first = custom.patch_namespaced_custom_object(*HR, namespace, "helmreleases", "hub", helmrelease(), **apply)
    assert first is None
    assert kube_api.get("HelmRelease", "hub", namespace)["spec"]["interval"] == "10m"
    second = custom.patch_namespaced_custom_object(*HR, namespace, "helmreleases", "hub",
                                                   helmrelease(interval="5m"), **apply)
    assert second["spec"]["interval"] == "5m" and second["metadata"]["generation"] == 2
    assert kube_api.requests[-1].params == {"fieldManager": "hubfleet", "force": "true"}
    assert kube_api.requests[-1].content_type == "application/apply-patch+yaml"
    with pytest.raises(client.ApiException) as caught:
        custom.patch_namespaced_custom_object(*HR, namespace, "helmreleases", "hub", helmrelease(),
                                              _content_type="application/apply-patch+yaml")
    assert caught.value.status == 400 and "fieldManager" in json.loads(caught.value.body)["message"]


def test_server_sets_metadata_and_generation_follows_spec_only(custom, namespace):
    """Gap 5: annotation patches keep generation 1, a spec patch makes it 2, status never bumps it."""
    created = custom.create_namespaced_custom_object(*HR, namespace, "helmreleases", helmrelease())
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["resourceVersion"].isdigit()
    annotated = custom.patch_namespaced_custom_object(*HR, namespace, "helmreleases", "hub", {
        "metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "t1"}}})
    assert annotated["metadata"]["generation"] == 1
    assert int(annotated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    changed = custom.patch_namespaced_custom_object(*HR, namespace, "helmreleases", "hub",
                                                    {"spec": {"timeout": "15m"}})
    assert changed["metadata"]["generation"] == 2
    status = custom.patch_namespaced_custom_object_status(*HR, namespace, "helmreleases", "hub",
                                                          {"status": {"observedGeneration": 2}})
    assert status["metadata"]["generation"] == 2 and status["metadata"]["uid"] == meta["uid"]


@pytest.mark.parametrize(("selector", "expected"), [
    ("tier=hub", {"a", "b"}),
    ("tier==hub,hubfleet.io/hub=a", {"a"}),
    ("tier!=hub", {"c", "d"}),
    ("tier in (hub, proxy)", {"a", "b", "c"}),
    ("tier notin (hub)", {"c", "d"}),
    ("tier", {"a", "b", "c"}),
    ("!tier", {"d"}),
    ("tier in (hub,proxy),!hubfleet.io/hub", {"c"}),
])
def test_label_selectors_filter_lists(core, namespace, selector, expected):
    """Gap 6, equality- and set-based."""
    labels = {"a": {"tier": "hub", "hubfleet.io/hub": "a"}, "b": {"tier": "hub", "hubfleet.io/hub": "b"},
              "c": {"tier": "proxy"}, "d": {}}
    for name, pod_labels in labels.items():
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": pod_labels}})
    listed = core.list_namespaced_config_map(namespace, label_selector=selector).items
    assert {item.metadata.name for item in listed} == expected
    everywhere = core.list_config_map_for_all_namespaces(label_selector=selector).items
    assert {item.metadata.name for item in everywhere} == expected


def test_field_selector_and_bad_selectors(core, namespace):
    for name in ("a", "b"):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    listed = core.list_namespaced_config_map(namespace, field_selector="metadata.name=b").items
    assert [item.metadata.name for item in listed] == ["b"]
    assert len(core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace!={namespace}").items) == 0
    for kwargs in ({"label_selector": "tier in hub"}, {"field_selector": "spec.x=1"}):
        with pytest.raises(client.ApiException) as caught:
            core.list_namespaced_config_map(namespace, **kwargs)
        assert caught.value.status == 400


def test_selector_parsers_directly():
    assert label_selector("a in (1,2), b")({"a": "2", "b": ""})
    assert not label_selector("a in (1,2), b")({"a": "3", "b": ""})
    assert field_selector("metadata.name==x")({"metadata": {"name": "x"}})
    with pytest.raises(ValueError):
        label_selector("a in (1")


def test_lists_carry_kind_and_api_version(kube_api, custom, namespace, tmp_path):
    """Gap 7, also through DynamicClient, which needs them."""
    custom.create_namespaced_custom_object(*HR, namespace, "helmreleases", helmrelease())
    listed = custom.list_namespaced_custom_object(*HR, namespace, "helmreleases")
    assert listed["kind"] == "HelmReleaseList" and listed["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    dyn = dynamic.DynamicClient(api_client(kube_api), cache_file=str(tmp_path / "discovery.json"))
    releases = dyn.resources.get(api_version="helm.toolkit.fluxcd.io/v2", kind="HelmRelease")
    assert [item.metadata.name for item in releases.get(namespace=namespace).items] == ["hub"]
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment").get()
    assert deployments.kind == "DeploymentList"
    assert {item.metadata.name for item in deployments.items} == {"source-controller", "helm-controller"}


def test_version_with_and_without_slash_reports_the_configured_version(kube_api_factory):
    """Gaps 8 and 9."""
    emulator = kube_api_factory(kube_version="1.32.4")
    info = client.VersionApi(api_client(emulator)).get_code()
    assert (info.major, info.minor, info.git_version) == ("1", "32", "v1.32.4")
    assert raw_get(emulator, "/version")[2]["gitVersion"] == "v1.32.4"
    assert emulator.requests[0].path == "/version/"


def test_default_version_is_1_33(kube_api):
    assert client.VersionApi(api_client(kube_api)).get_code().git_version.startswith("v1.33.")


def test_core_discovery_says_v1_and_dynamic_client_finds_core_kinds(kube_api, namespace, tmp_path):
    """Gap 10, and server-side apply of a new Secret through DynamicClient."""
    status, _, document = raw_get(kube_api, "/api/v1")
    assert status == 200 and document["groupVersion"] == "v1"
    assert {"name": "namespaces/status"}.items() <= next(r for r in document["resources"]
                                                         if r["name"] == "namespaces/status").items()
    dyn = dynamic.DynamicClient(api_client(kube_api), cache_file=str(tmp_path / "discovery.json"))
    secrets = dyn.resources.get(api_version="v1", kind="Secret")
    applied = secrets.server_side_apply(body={"apiVersion": "v1", "kind": "Secret",
                                              "metadata": {"name": "values", "namespace": namespace},
                                              "stringData": {"values.yaml": "a: 1"}},
                                        name="values", namespace=namespace, field_manager="hubfleet")
    assert applied.data["values.yaml"] == base64.b64encode(b"a: 1").decode()


def test_errors_are_status_objects_typed_exactly_json(core, namespace):
    """Gap 11."""
    with pytest.raises(client.ApiException) as caught:
        core.read_namespaced_secret("missing", namespace)
    assert caught.value.headers["Content-Type"] == "application/json"
    assert json.loads(caught.value.body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'secrets "missing" not found', "reason": "NotFound", "code": 404,
        "details": {"name": "missing", "group": "", "kind": "secrets"}}


def test_unknown_endpoints_answer_status_404(kube_api):
    status, content_type, document = raw_get(kube_api, "/apis/example.com/v1/widgets")
    assert (status, content_type, document["kind"], document["reason"]) == (404, "application/json", "Status",
                                                                          "NotFound")


def test_string_data_becomes_base64_data(core, namespace):
    """Gap 12, on create and on patch."""
    created = core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "data": {"a": "eA=="},
                                                        "stringData": {"b": "s3cret"}})
    assert created.data == {"a": "eA==", "b": base64.b64encode(b"s3cret").decode()}
    assert created.string_data is None
    patched = core.patch_namespaced_secret("s", namespace, {"stringData": {"a": "y"}})
    assert patched.data["a"] == base64.b64encode(b"y").decode() and patched.string_data is None


def test_writes_into_a_missing_or_terminating_namespace_fail(kube_api, core, custom, namespace):
    """Gap 13, including the apply that would create."""
    with pytest.raises(client.ApiException) as caught:
        core.create_namespaced_secret("nowhere", {"metadata": {"name": "s"}})
    assert caught.value.status == 404 and json.loads(caught.value.body)["message"] == 'namespaces "nowhere" not found'
    with pytest.raises(client.ApiException) as applied:
        custom.patch_namespaced_custom_object(*HR, "nowhere", "helmreleases", "hub", helmrelease(namespace="nowhere"),
                                              field_manager="hubfleet", _content_type="application/apply-patch+yaml")
    assert applied.value.status == 404
    core.create_namespaced_secret(namespace, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    core.delete_namespace(namespace)
    assert kube_api.get("Namespace", namespace)["status"]["phase"] == "Terminating"
    with pytest.raises(client.ApiException) as terminating:
        core.create_namespaced_secret(namespace, {"metadata": {"name": "late"}})
    assert terminating.value.status == 403


def test_status_and_main_endpoint_change_only_their_part(custom, namespace):
    """Gap 14."""
    custom.create_namespaced_custom_object(*HR, namespace, "helmreleases", {**helmrelease(), "status": {"x": 1}})
    stored = custom.get_namespaced_custom_object(*HR, namespace, "helmreleases", "hub")
    assert "status" not in stored
    after_status = custom.patch_namespaced_custom_object_status(*HR, namespace, "helmreleases", "hub", {
        "spec": {"interval": "1m"}, "status": {"observedGeneration": 1}})
    assert after_status["spec"]["interval"] == "10m" and after_status["status"] == {"observedGeneration": 1}
    after_main = custom.patch_namespaced_custom_object(*HR, namespace, "helmreleases", "hub", {
        "spec": {"interval": "2m"}, "status": {"observedGeneration": 9}})
    assert after_main["spec"]["interval"] == "2m" and after_main["status"] == {"observedGeneration": 1}


def test_invalid_writes_answer_422(core, custom, namespace):
    """Gap 15: create, PUT and patch are checked against the schemas of the cluster's version.  (The typed client
    itself refuses unknown fields in dicts before sending, so the built-in cases use what only the server checks.)"""
    with pytest.raises(client.ApiException) as bad_release:
        custom.create_namespaced_custom_object(*HR, namespace, "helmreleases", helmrelease(timeout="15 minutes"))
    status = json.loads(bad_release.value.body)
    assert (bad_release.value.status, status["reason"]) == (422, "Invalid")
    assert "15 minutes" in status["message"] and status["details"]["causes"]
    with pytest.raises(client.ApiException) as bad_quota:
        core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "Quota_1"}, "spec": {}})
    assert bad_quota.value.status == 422
    custom.create_namespaced_custom_object(*HR, namespace, "helmreleases", helmrelease())
    with pytest.raises(client.ApiException) as bad_put:
        custom.replace_namespaced_custom_object(*HR, namespace, "helmreleases", "hub",
                                                helmrelease(upgrade={"remediation": {"strategy": "reinstall"}}))
    assert bad_put.value.status == 422 and "reinstall" in json.loads(bad_put.value.body)["message"]
    with pytest.raises(client.ApiException) as bad_patch:
        custom.patch_namespaced_custom_object(*HR, namespace, "helmreleases", "hub", {"spec": {"intervall": "1m"}})
    assert bad_patch.value.status == 422


def test_validation_can_be_switched_off(kube_api_factory):
    emulator = kube_api_factory(validate=False)
    custom = client.CustomObjectsApi(api_client(emulator))
    client.CoreV1Api(api_client(emulator)).create_namespace({"metadata": {"name": "n"}})
    created = custom.create_namespaced_custom_object(*HR, "n", "helmreleases", helmrelease(namespace="n",
                                                                                          timeout="soon"))
    assert created["spec"]["timeout"] == "soon"


def test_api_version_and_kind_default_from_the_url(core, namespace):
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    assert (created.api_version, created.kind) == ("v1", "ConfigMap")
    with pytest.raises(client.ApiException) as caught:
        core.create_namespaced_config_map(namespace, {"apiVersion": "v1", "kind": "Secret",
                                                      "metadata": {"name": "d"}})
    assert caught.value.status == 400


def test_patch_content_types(kube_api, custom, namespace):
    """JSON-Patch is applied only as JSON-Patch; a list sent as a merge patch (pitfall 6) is refused."""
    custom.create_namespaced_custom_object(*HR, namespace, "helmreleases", helmrelease())
    operations = [{"op": "add", "path": "/spec/suspend", "value": True}]
    with pytest.raises(client.ApiException) as caught:
        custom.patch_namespaced_custom_object(*HR, namespace, "helmreleases", "hub", operations)
    assert caught.value.status == 400
    assert kube_api.requests[-1].content_type == "application/merge-patch+json"
    patched = custom.patch_namespaced_custom_object(*HR, namespace, "helmreleases", "hub", operations,
                                                    _content_type="application/json-patch+json")
    assert patched["spec"]["suspend"] is True
    recorded = kube_api.requests[-1]
    assert (recorded.method, recorded.content_type, recorded.body) == ("PATCH", "application/json-patch+json",
                                                                       operations)


def test_delete_with_finalizers_waits_for_them(kube_api, custom, namespace):
    body = helmrelease()
    body["metadata"]["finalizers"] = ["finalizers.fluxcd.io"]
    custom.create_namespaced_custom_object(*HR, namespace, "helmreleases", body)
    kept = custom.delete_namespaced_custom_object(*HR, namespace, "helmreleases", "hub")
    assert kept["metadata"]["deletionTimestamp"]
    assert kube_api.get("HelmRelease", "hub", namespace)["metadata"]["deletionTimestamp"]
    custom.patch_namespaced_custom_object(*HR, namespace, "helmreleases", "hub", {"metadata": {"finalizers": None}})
    assert kube_api.get("HelmRelease", "hub", namespace) is None


def test_deleting_a_namespace_deletes_its_content(kube_api, core, namespace):
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}})
    kube_api.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "default"}})
    core.delete_namespace(namespace)
    assert kube_api.get("Namespace", namespace) is None
    assert kube_api.objects("Secret", namespace) == []
    assert kube_api.get("ConfigMap", "other", "default") is not None


def test_flux_kinds_are_discoverable_with_status(kube_api):
    for group in ("helm.toolkit.fluxcd.io/v2", "source.toolkit.fluxcd.io/v1"):
        status, _, document = raw_get(kube_api, f"/apis/{group}")
        assert status == 200
        names = {resource["name"] for resource in document["resources"]}
        assert {name for name in names if "/" not in name} <= FLUX_PLURALS
        assert all(f"{name}/status" in names for name in names if "/" not in name)


def test_without_flux_the_kinds_are_absent(kube_api_factory, tmp_path):
    emulator = kube_api_factory(flux=False)
    groups = {group["name"] for group in raw_get(emulator, "/apis")[2]["groups"]}
    assert not groups & {"helm.toolkit.fluxcd.io", "source.toolkit.fluxcd.io"}
    assert emulator.get("Namespace", "flux-system") is None
    custom = client.CustomObjectsApi(api_client(emulator))
    with pytest.raises(client.ApiException) as caught:
        custom.create_namespaced_custom_object(*HR, "default", "helmreleases", helmrelease(namespace="default"))
    assert caught.value.status == 404
    dyn = dynamic.DynamicClient(api_client(emulator), cache_file=str(tmp_path / "discovery.json"))
    with pytest.raises(dynamic.exceptions.ResourceNotFoundError):
        dyn.resources.get(api_version="helm.toolkit.fluxcd.io/v2", kind="HelmRelease")


def test_default_storage_class_preset(kube_api_factory):
    with_class = client.StorageV1Api(api_client(kube_api_factory())).list_storage_class().items
    assert [sc.metadata.annotations["storageclass.kubernetes.io/is-default-class"] for sc in with_class] == ["true"]
    without = kube_api_factory(storage_class=False)
    assert client.StorageV1Api(api_client(without)).list_storage_class().items == []


def test_typed_apps_and_networking_calls(kube_api, namespace):
    apps = client.AppsV1Api(api_client(kube_api))
    labels = {"app": "web"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "web", "labels": labels},
        "spec": {"selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})
    assert apps.read_namespaced_deployment("web", namespace).metadata.generation == 1
    assert apps.patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 2}}).metadata.generation == 2
    networking = client.NetworkingV1Api(api_client(kube_api))
    networking.create_namespaced_network_policy(namespace, {
        "metadata": {"name": "deny-ingress"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    assert [p.metadata.name for p in networking.list_namespaced_network_policy(namespace).items] == ["deny-ingress"]


def test_direct_helpers_read_and_write_state(kube_api, namespace):
    kube_api.put({"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "hub", "namespace": namespace, "labels": {"component": "hub"}},
                  "spec": {"replicas": 1}, "status": {"readyReplicas": 1}})
    assert kube_api.get("apps/v1/deployments", "hub", namespace)["status"] == {"readyReplicas": 1}
    assert [d["metadata"]["name"] for d in kube_api.objects("Deployment", labels="component=hub")] == ["hub"]
    kube_api.patch("Deployment", "hub", namespace, {"status": {"readyReplicas": 0}, "spec": {"replicas": 3}},
                   subresource="status")
    assert kube_api.get("Deployment", "hub", namespace)["spec"]["replicas"] == 1
    kube_api.delete("Deployment", "hub", namespace)
    history = kube_api.history("Deployment", "hub", namespace)
    assert [v is None for v in history] == [False, False, True]
    assert history[1]["status"] == {"readyReplicas": 0}
