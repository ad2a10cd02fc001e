"""The console's read-only service on Kubernetes hubs: declared in every hub's values, its token derived per hub and
carried only by the values Secret, and what the real z2jh chart makes of it (the token the hub pod is given).

tests/e2e/test_kubernetes_usage.py takes the same token through the console, a monitoring sweep and usage.
"""
from __future__ import annotations

import base64
import json

import yaml

from clusters.k8s_manifests import VALUES_KEY, chart_values, hub_objects, names
from clusters.kubernetes import KubernetesBackend
from clusters.local import SERVICE_NAME, SERVICE_SCOPES
from tenants.render import MASK
from tenants.z2jh import schema_errors
from tests.k8s.controller import merge
from tests.k8s.helm import render
from tests.k8s.reference import needs_reference, values_defaults_path, values_schema_path
from tests.k8s.schemas import validate
from tests.k8s.test_chart_render import SECRET, hub_spec

SECRET_KEY = "d1f0" * 16


def by_kind(objects: list[dict], kind: str) -> dict:
    [found] = [obj for obj in objects if obj["kind"] == kind]
    return found


def secret_values(objects: list[dict]) -> dict:
    return yaml.safe_load(by_kind(objects, "Secret")["stringData"][VALUES_KEY])


def flux_values(objects: list[dict]) -> dict:
    """What helm-controller renders with: the values Secret, then the HelmRelease's ``spec.values`` over it."""
    return merge(secret_values(objects), by_kind(objects, "HelmRelease")["spec"]["values"])


def test_each_hub_has_its_own_token_derived_from_the_key_and_its_uid():
    backend = KubernetesBackend(service_key=SECRET_KEY)
    token = backend.service_token("42")
    assert len(token) == 64 and int(token, 16) >= 0
    assert backend.service_token("42") == KubernetesBackend(service_key=SECRET_KEY).service_token("42") == token
    assert backend.service_token("43") != token
    assert KubernetesBackend(service_key="another key").service_token("42") != token
    assert KubernetesBackend().service_token("42") is None and backend.service_token("") is None
    state = {"state_version": 1, "namespace": "hf-42-demo", "release": "hf-42-demo", "uid": "42"}
    assert backend.api_token(state) == backend.api_token(state, "probe") == token
    assert backend.api_token(state, "check") is None  # it may only read
    assert backend.api_token({}) is None  # never deployed
    assert KubernetesBackend().api_token(state) is None


def test_the_token_travels_in_the_values_secret_only_and_is_masked_in_manifests():
    spec = hub_spec("github")
    backend = KubernetesBackend(service_key=SECRET_KEY)
    token = backend.service_token(spec.uid)
    objects = hub_objects(spec, service_token=token)
    values = secret_values(objects)
    assert values["hub"]["services"][SERVICE_NAME] == {"apiToken": token}
    assert values["hub"]["config"]["GitHubOAuthenticator"]["client_secret"] == SECRET  # the spec's secrets kept
    for obj in objects:
        if obj["kind"] != "Secret":
            assert token not in json.dumps(obj), obj["kind"]
    release_values = by_kind(objects, "HelmRelease")["spec"]["values"]["hub"]
    assert release_values["services"] == {SERVICE_NAME: {"admin": False}}
    assert release_values["loadRoles"][SERVICE_NAME]["scopes"] == SERVICE_SCOPES
    assert release_values["loadRoles"][SERVICE_NAME]["services"] == [SERVICE_NAME]
    shown = backend.manifests(spec)  # what hub.manifests and a dry run show
    assert token not in json.dumps(shown) and SECRET not in json.dumps(shown)
    assert by_kind(shown, "Secret")["stringData"] == {VALUES_KEY: MASK}
    # the digest the drift check compares covers the role, not the token
    assert by_kind(objects, "HelmRelease")["spec"]["values"] == chart_values(spec)


@needs_reference
def test_the_chart_gives_the_hub_pod_that_token_and_the_read_only_role():
    spec = hub_spec("generic-oauth")
    token = KubernetesBackend(service_key=SECRET_KEY).service_token(spec.uid)
    values = flux_values(hub_objects(spec, service_token=token))
    assert schema_errors(values, yaml.safe_load(values_schema_path().read_text()),
                         yaml.safe_load(values_defaults_path().read_text())) == []
    n = names(spec)
    objects = render(values, name=n.release, namespace=n.namespace)
    for obj in objects:
        validate(obj, "1.33.0")
    [hub_secret] = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "hub"]
    # jupyterhub_config.py reads each service's token from this key of the hub's Secret
    assert base64.b64decode(hub_secret["data"][f"hub.services.{SERVICE_NAME}.apiToken"]).decode() == token
    hub = yaml.safe_load(base64.b64decode(hub_secret["data"]["values.yaml"]))["hub"]
    assert hub["loadRoles"][SERVICE_NAME]["scopes"] == SERVICE_SCOPES
    assert SERVICE_NAME in hub["services"]

    # Without a key the service is still declared (its role names it), and the chart makes a token up.
    unkeyed = render(flux_values(hub_objects(spec)), name=n.release, namespace=n.namespace)
    [hub_secret] = [o for o in unkeyed if o["kind"] == "Secret" and o["metadata"]["name"] == "hub"]
    made_up = base64.b64decode(hub_secret["data"][f"hub.services.{SERVICE_NAME}.apiToken"]).decode()
    assert len(made_up) == 64 and made_up != token


def test_the_token_is_blanked_in_the_hubs_log(kube_api):
    backend = KubernetesBackend(kubeconfig=kube_api.kubeconfig(), service_key=SECRET_KEY)
    namespace, state = "hf-7-lab", {"namespace": "hf-7-lab", "release": "hf-7-lab", "uid": "7"}
    token = backend.api_token(state)
    kube_api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
                  "status": {"phase": "Active"}})
    kube_api.put({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "hub-1", "namespace": namespace, "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"app": "jupyterhub", "component": "hub"}},
        "spec": {"containers": [{"name": "hub", "image": "quay.io/jupyterhub/k8s-hub:4.4.0"}]},
        "status": {"phase": "Running"}})
    kube_api.set_log(namespace, "hub-1", f"[I] service hubfleet token {token} loaded\n[I] ready\n")
    with backend:
        tail = backend.log_tail(state)
    assert tail.lines == [f"[I] service hubfleet token {MASK} loaded", "[I] ready"]
