"""The z2jh chart, rendered by the real Helm engine from the values the console produces, gives valid objects.

What stands in for a cluster: Helm SDK v4 renders the chart offline (``helm template``; ``lookup`` finds nothing, so
generated secrets are random unless pinned), and every rendered object is checked against the Kubernetes OpenAPI
schema of the cluster version (tests/k8s/schemas.py).  The values are those a HelmRelease hands helm-controller:
the hub's secret values (its ``valuesFrom`` Secret) with ``clusters.k8s_manifests.chart_values`` merged over them,
from configs built the way the console builds them (``tenants.layering.layered`` of validated auth and environment).
"""
from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from clusters.base import HubSpec
from clusters.k8s_manifests import chart_values, hub_objects, names
from tenants.auth import CLOSED, FEDERATED, FIRST_ADMIN_CLASS, KINDS, first_admin, validate_auth
from tenants.environment import validate_environment
from tenants.layering import RELEASE_DEFAULTS, deep_merge, layered
from tenants.policy import DEFAULT_POLICY
from tenants.render import render_z2jh, split_secrets
from tests.k8s.helm import RenderError, kube_version_problem, render, satisfies
from tests.k8s.reference import needs_reference
from tests.k8s.schemas import validate

KUBE_VERSIONS = ("1.32.0", "1.37.0")
HUB_URL = "https://demo.hubs.example.edu/"
HUB_IMAGE = "quay.io/jupyterhub/k8s-hub:4.4.0"
SECRET = "a-long-client-secret"
IDP = "https://idp.example.edu"

# A valid login of every kind the console offers, as an institution admin would enter it.
AUTH = {
    "generic-oauth": {"client_id": "hub", "client_secret": SECRET, "authorize_url": f"{IDP}/authorize",
                      "token_url": f"{IDP}/token", "userdata_url": f"{IDP}/userinfo", "allowed_groups": ["staff"],
                      "admin_groups": ["hub-admins"], "manage_groups": True},
    "github": {"client_id": "hub", "client_secret": SECRET, "allowed_organizations": ["jupyterhub:team"]},
    "cilogon": {"client_id": "cilogon:/client_id/1", "client_secret": SECRET,
                "idps": {IDP: {"username_derivation": {"username_claim": "eppn", "action": "strip_idp_domain",
                                                       "domain": "example.edu"},
                               "allowed_domains": ["example.edu"], "default": True},
                         "https://github.com/login/oauth/authorize": {
                             "username_derivation": {"username_claim": "preferred_username", "action": "prefix",
                                                     "prefix": "github"}, "allow_all": True}}},
    "google": {"client_id": "hub.apps.googleusercontent.com", "client_secret": SECRET,
               "hosted_domain": ["example.edu"], "allowed_users": ["ada@example.edu"]},
    "azuread": {"client_id": "hub", "client_secret": SECRET, "tenant_id": "0000-1111", "allowed_groups": ["g1"],
                "manage_groups": True, "admin_users": ["ada"]},
    "lti13": {"client_id": ["lms-client"], "issuer": "https://lms.example.edu", "authorize_url":
              "https://lms.example.edu/auth", "jwks_endpoint": "https://lms.example.edu/jwks", "allow_all": True},
    "dummy": {"allowed_users": ["ada", "grace"]},
    "shared-password": {"user_password": "a-long-shared-password", "allowed_users": ["ada"]},
    FEDERATED: {},  # the console fills in the hub's client (FEDERATION)
}
CONSOLE = "https://hubs.example.org"
FEDERATION = ({"issuer": CONSOLE, "client_id": "hub-42", "authorization_endpoint": f"{CONSOLE}/oauth/authorize",
               "token_endpoint": f"{CONSOLE}/oauth/token", "userinfo_endpoint": f"{CONSOLE}/oauth/userinfo"},
              {"client_secret": SECRET, "crypt_key": "ab" * 32})

PROFILES = [
    {"display_name": "Small", "description": "2 CPUs", "cpu_limit": 2, "mem_limit": "4G", "default": True},
    {"display_name": "Large", "image": "quay.io/jupyter/pytorch-notebook:2025-01-06", "cpu_guarantee": 2,
     "cpu_limit": 4, "mem_guarantee": "8G", "mem_limit": "16G"},
]
# Environment shapes an institution may set, over the release defaults; each with the policy that admits it.
ENVIRONMENTS = {
    "defaults": ({}, {}),
    "profiles": ({"profiles": PROFILES}, {}),
    "storage": ({"storage_capacity": "25Gi", "image": "quay.io/jupyter/r-notebook:2025-01-06"}, {}),
    "gpus": ({"gpus": 1, "profiles": [{"display_name": "GPU", "gpus": 1, "cpu_limit": 4,
                                       "image": "quay.io/jupyter/pytorch-notebook:cuda12-2025-01-06"}]},
             {"gpus_allowed": True}),
    "no culling": ({"cull_timeout": 0, "storage_capacity": ""}, {}),
}


def login(kind: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(clean auth config, secrets) of a valid login of ``kind``; the closed login with its first admin."""
    if kind == CLOSED:
        return {"authenticator_class": CLOSED, "first_admin": first_admin()[0]}, {}
    clean, secrets, errors = validate_auth({"authenticator_class": kind, **AUTH[kind]})
    assert errors == {}, errors
    if kind == FEDERATED:  # as console/services/config.py adds the hub's client
        clean["federation"], secrets = FEDERATION
    return clean, secrets


def environment(shape: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(clean environment, policy) for one of :data:`ENVIRONMENTS`, validated as the console validates it."""
    overrides, policy_overrides = ENVIRONMENTS[shape]
    policy = {**DEFAULT_POLICY, **policy_overrides}
    clean, errors = validate_environment({**RELEASE_DEFAULTS["environment"], **overrides}, policy)
    assert errors == {}, errors
    return clean, policy


def hub_spec(kind: str = "github", shape: str = "defaults") -> HubSpec:
    """The HubSpec the console hands the Kubernetes backend for one hub: z2jh values split from their secrets."""
    auth, secrets = login(kind)
    env, policy = environment(shape)
    config = layered(None, None, {"auth": auth, "environment": env}, None)
    public, secret = split_secrets(render_z2jh(config, secrets, HUB_URL))
    return HubSpec(slug="demo", institution="uni", uid="42", config=public, secrets=secret,
                   chart_version="4.4.0", hub_image=HUB_IMAGE, policy=policy)


def helm_values(spec: HubSpec) -> dict[str, Any]:
    """What helm-controller renders with: the ``valuesFrom`` Secret's values, then ``spec.values`` over them."""
    return deep_merge(spec.secrets, chart_values(spec))


def render_hub(spec: HubSpec, kube_version: str) -> list[dict[str, Any]]:
    n = names(spec)
    return render(helm_values(spec), name=n.release, namespace=n.namespace, kube_version=kube_version)


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def hub_values_yaml(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The values the hub pod reads (the hub Secret's ``values.yaml``, mounted for z2jh's jupyterhub_config.py)."""
    return yaml.safe_load(base64.b64decode(one(objects, "Secret", "hub")["data"]["values.yaml"]))


def assert_all_valid(objects: list[dict[str, Any]], kube_version: str) -> None:
    for obj in objects:
        validate(obj, kube_version)


LOGINS = (*sorted(KINDS), CLOSED)


def test_every_login_kind_the_console_offers_is_rendered_here():
    assert set(AUTH) | {CLOSED} == set(KINDS) | {CLOSED} == set(LOGINS)


@needs_reference
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("kind", LOGINS)
def test_each_login_renders_valid_objects_and_reaches_the_hub(kind, kube_version):
    spec = hub_spec(kind)
    objects = render_hub(spec, kube_version)
    assert_all_valid(objects, kube_version)
    assert_all_valid(hub_objects(spec), kube_version)  # what the console itself applies beside the release
    hub_config = hub_values_yaml(objects)["hub"]["config"]
    if kind == CLOSED:
        return  # checked on its own below
    section = KINDS[kind].config_class
    if kind == FEDERATED:  # our own class: it travels as code, like the closed hub's (below)
        [code] = hub_values_yaml(objects)["hub"]["extraConfig"].values()
        compile(code, "hub.extraConfig", "exec")
        assert code.rstrip().endswith("c.JupyterHub.authenticator_class = FederatedAuthenticator")
        assert hub_config["GenericOAuthenticator"]["token_url"] == f"{CONSOLE}/oauth/token"
        assert hub_config["CryptKeeper"]["keys"] == [FEDERATION[1]["crypt_key"]]
    else:
        assert hub_config["JupyterHub"]["authenticator_class"] == KINDS[kind].authenticator_class
    # The whole section, secrets included, arrives: the Secret's values and spec.values were merged by Helm.
    assert hub_config[section] == deep_merge(spec.config["hub"]["config"][section],
                                             spec.secrets.get("hub", {}).get("config", {}).get(section, {}))
    if "client_secret" in AUTH[kind] or kind == FEDERATED:
        assert hub_config[section]["client_secret"] == SECRET
        assert SECRET not in yaml.safe_dump(chart_values(spec))  # not in the HelmRelease: only in its Secret


@needs_reference
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_the_closed_hub_brings_its_own_authenticator(kube_version):
    """A closed hub's login class exists only in Hubfleet; the chart's hub image has no ``hubfleet-first-admin``
    entry point, so the class must travel as ``hub.extraConfig`` code and not be named as a class to load."""
    spec = hub_spec(CLOSED)
    hub = hub_values_yaml(render_hub(spec, kube_version))["hub"]
    assert hub["config"]["JupyterHub"].get("authenticator_class") != FIRST_ADMIN_CLASS
    admin = hub["config"]["FirstAdminAuthenticator"]
    assert admin["admin_username"] and admin["admin_password_hash"].startswith("scrypt$")
    assert admin["admin_users"] == admin["allowed_users"] == [admin["admin_username"]]
    [code] = hub["extraConfig"].values()
    compile(code, "hub.extraConfig", "exec")  # the hub's config file runs it; a syntax error would crash the hub
    assert "class FirstAdminAuthenticator(" in code
    assert code.rstrip().endswith("c.JupyterHub.authenticator_class = FirstAdminAuthenticator")


@needs_reference
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("shape", sorted(ENVIRONMENTS))
def test_each_environment_shape_renders_valid_objects(shape, kube_version):
    spec = hub_spec("generic-oauth", shape)
    objects = render_hub(spec, kube_version)
    assert_all_valid(objects, kube_version)
    values = hub_values_yaml(objects)
    env, _ = environment(shape)
    singleuser = values["singleuser"]
    # The profiles KubeSpawner offers are the console's, image and resources included.
    assert singleuser.get("profileList", []) == spec.config["singleuser"].get("profileList", [])
    assert [p["display_name"] for p in singleuser.get("profileList", [])] == [
        p["display_name"] for p in env["profiles"]]
    if shape == "profiles":
        large = singleuser["profileList"][1]["kubespawner_override"]
        assert large == {"image": PROFILES[1]["image"], "cpu_guarantee": 2, "cpu_limit": 4, "mem_guarantee": "8G",
                         "mem_limit": "16G"}
    assert singleuser["image"] == {**singleuser["image"], "name": env["image"].rsplit(":", 1)[0],
                                   "tag": env["image"].rsplit(":", 1)[1]}
    assert singleuser["storage"]["capacity"] == (env.get("storage_capacity") or "10Gi")  # the chart's default: 10Gi
    assert (singleuser.get("extraResource", {}).get("limits") or {}).get("nvidia.com/gpu") == (
        "1" if shape == "gpus" else None)
    assert values["cull"]["enabled"] is bool(env["cull_timeout"])
    if env["cull_timeout"]:
        assert values["cull"]["timeout"] == env["cull_timeout"]


@needs_reference
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_the_pins_reach_the_rendered_objects(kube_version):
    """The backend's pins: hub database kept by Helm, hub image, no cluster-scoped RBAC, no pre-upgrade hook."""
    objects = render_hub(hub_spec(), kube_version)
    pvc = one(objects, "PersistentVolumeClaim", "hub-db-dir")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    [container] = [c for c in one(objects, "Deployment", "hub")["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "hub"]
    assert container["image"] == HUB_IMAGE
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert not [o for o in objects if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]
    user_pods = one(objects, "StatefulSet", "user-placeholder")["spec"]["template"]["spec"]
    assert not [c for c in user_pods.get("initContainers", []) if c["name"] == "block-cloud-metadata"]


@needs_reference
def test_the_chart_default_render_holds_what_the_pins_remove():
    """Counterpart of the pins test: without them the chart does render the cluster RBAC and hooks."""
    objects = render({}, kube_version="1.33.0")
    kinds = {o["kind"] for o in objects}
    assert {"ClusterRole", "ClusterRoleBinding"} <= kinds
    assert [o for o in objects if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]
    assert "keep" not in str(one(objects, "PersistentVolumeClaim", "hub-db-dir")["metadata"].get("annotations"))


@needs_reference
def test_with_its_generated_secrets_pinned_a_render_is_reproducible():
    """Offline ``lookup`` finds no stored Secret, so the chart generates cookie secret, encryption keys, proxy
    token and the token of the console's service (which the backend pins in the values Secret) per render; pinned,
    two renders are identical (what golden files need)."""
    values = helm_values(hub_spec("generic-oauth", "profiles"))
    assert render(values) != render(values)
    pinned = deep_merge(values, {"hub": {"config": {"JupyterHub": {"cookie_secret": "ab" * 32},
                                                    "CryptKeeper": {"keys": ["cd" * 32]}},
                                         "services": {"hubfleet": {"apiToken": "01" * 32}}},
                                 "proxy": {"secretToken": "ef" * 32}})
    assert render(pinned) == render(pinned)


@needs_reference
def test_a_cluster_older_than_the_chart_supports_is_refused_with_helms_message():
    with pytest.raises(RenderError) as caught:
        render_hub(hub_spec(), "1.30.0")
    assert str(caught.value) == ("chart requires kubeVersion: >=1.32.0-0 which is incompatible with "
                                 "Kubernetes v1.30.0")
    render_hub(hub_spec(), "v1.33.2-gke.1200")  # a provider's prerelease-style version is admitted, as by Helm


@needs_reference
def test_a_value_of_the_wrong_type_is_refused_with_the_schema_message():
    values = helm_values(hub_spec())
    values["singleuser"]["storage"]["capacity"] = 5
    with pytest.raises(RenderError, match=r"at '/singleuser/storage/capacity': got number, want null or string"):
        render(values)
    with pytest.raises(RenderError, match=r"additional properties 'auth' not allowed"):
        render({**values, "auth": {"type": "github"}})


@pytest.mark.parametrize("constraint, version, ok", [
    (">=1.32.0-0", "1.32.0", True), (">=1.32.0-0", "v1.31.9", False), (">=1.32.0-0", "1.33.2-gke.1200", True),
    (">=1.32.0", "1.33.2-gke.1200", False), (">= 1.20, < 1.30 || >=1.35", "1.36.1", True),
    (">=1.20 <1.30", "1.30.0", False), ("~1.33.0", "1.33.9", True), ("~1.33.0", "1.34.0", False),
    ("^1.2", "2.0.0", False), ("!=1.33.0", "1.33.0", False),
])
def test_the_kube_version_range_check_follows_helms_semver_rules(constraint, version, ok):
    assert satisfies(constraint, version) is ok
    assert (kube_version_problem(constraint, version) is None) is ok
