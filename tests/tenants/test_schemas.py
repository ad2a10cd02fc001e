"""tenants/ validation: field-level errors that name the rule, and nothing admitted by accident."""
import pytest

from tenants.auth import GROUPS_NEED_SYNC, KINDS, NOBODY, validate_auth
from tenants.environment import validate_environment
from tenants.layering import RELEASE_DEFAULTS, deep_merge, layered
from tenants.policy import DEFAULT_POLICY, validate_policy

OIDC = {"authenticator_class": "generic-oauth", "client_id": "hub", "client_secret": "a-long-secret",
        "authorize_url": "https://idp.example.edu/auth", "token_url": "https://idp.example.edu/token",
        "userdata_url": "https://idp.example.edu/me"}


@pytest.mark.parametrize("auth", [
    {**OIDC},
    {**OIDC, "allow_all": False, "admin_users": ["root"]},
    {"authenticator_class": "github", "client_id": "x", "client_secret": "a-long-secret"},
    {"authenticator_class": "azuread", "client_id": "x", "client_secret": "a-long-secret", "tenant_id": "t"},
    {"authenticator_class": "cilogon", "client_id": "x", "client_secret": "a-long-secret",
     "idps": {"https://idp.example.edu": {"username_claim": "email"}}},
    {"authenticator_class": "dummy"},
])
def test_a_config_that_admits_nobody_is_refused_with_the_reason(auth):
    clean, secrets, errors = validate_auth(auth)
    assert errors == {"allow_all": NOBODY} and clean == {} and secrets == {}


@pytest.mark.parametrize("extra", [{"allow_all": True}, {"allowed_users": "ada\nbob"},
                                   {"allowed_groups": ["staff"], "manage_groups": "on"}])
def test_any_allow_rule_admits(extra):
    clean, secrets, errors = validate_auth({**OIDC, **extra})
    assert errors == {} and secrets == {"client_secret": "a-long-secret"}
    assert "client_secret" not in clean and clean["username_claim"] == "preferred_username"


def test_group_rules_need_group_sync():
    _, _, errors = validate_auth({**OIDC, "allowed_groups": ["staff"]})
    assert errors == {"manage_groups": GROUPS_NEED_SYNC}


def test_github_organizations_and_cilogon_domains_are_allow_rules():
    assert validate_auth({"authenticator_class": "github", "client_id": "x", "client_secret": "a-long-secret",
                          "allowed_organizations": ["jupyterhub"]})[2] == {}
    assert validate_auth({"authenticator_class": "cilogon", "client_id": "x", "client_secret": "a-long-secret",
                          "idps": {"https://idp.example.edu": {"allowed_domains": ["example.edu"]}}})[2] == {}


def test_missing_and_malformed_fields_are_named():
    _, _, errors = validate_auth({"authenticator_class": "generic-oauth", "token_url": "not a url",
                                  "allow_all": "maybe", "flavour": "x"})
    assert set(errors) == {"client_id", "client_secret", "authorize_url", "token_url", "userdata_url", "allow_all",
                           "flavour"}
    assert errors["token_url"] == "Enter a full http:// or https:// URL."
    assert validate_auth({"authenticator_class": "saml"})[2] == {
        "authenticator_class": f"Choose one of {', '.join(KINDS)}."}


def test_blank_secret_keeps_the_stored_one_and_a_new_one_replaces_it():
    without = {k: v for k, v in OIDC.items() if k != "client_secret"} | {"allow_all": True}
    assert validate_auth(without, {"client_secret": "stored-secret"})[1] == {"client_secret": "stored-secret"}
    assert validate_auth({**without, "client_secret": ""}, {"client_secret": "stored-secret"})[1] == {
        "client_secret": "stored-secret"}
    assert validate_auth({**without, "client_secret": "brand-new-secret"}, {"client_secret": "stored-secret"}
                         )[1] == {"client_secret": "brand-new-secret"}
    assert validate_auth(without)[2] == {"client_secret": "Client secret is required."}


ENV = {**RELEASE_DEFAULTS["environment"]}


def test_profile_above_policy_is_refused_naming_the_limit():
    policy = {**DEFAULT_POLICY, "max_cpu": 2, "max_memory": "4G"}
    env = {**ENV, "cpu_limit": 2, "mem_limit": "4G",
           "profiles": [{"display_name": "Big", "cpu_limit": 8, "mem_limit": "64G", "gpus": 1}]}
    clean, errors = validate_environment(env, policy)
    assert clean == {}
    assert errors == {"profiles.0.cpu_limit": "At most 2 CPUs per user (the operator's policy).",
                      "profiles.0.mem_limit": "At most 4G of memory per user (the operator's policy).",
                      "profiles.0.gpus": "GPUs are not allowed for this institution (the operator's policy)."}


@pytest.mark.parametrize("image,ok", [
    ("quay.io/jupyter/scipy-notebook:2025-01-06", True),
    ("quay.io/jupyterhub/k8s-singleuser-sample:4.0", False),
    ("docker.io/evil/miner:1.0", False),
    ("jupyter/scipy-notebook:latest", False),  # Docker Hub, implied
    ("quay.io/jupyter/scipy-notebook", False),  # no tag
])
def test_images_outside_the_allowed_registries_are_refused(image, ok):
    clean, errors = validate_environment({**ENV, "image": image}, DEFAULT_POLICY)
    assert (errors == {}) is ok
    if not ok:
        assert set(errors) == {"image"}


def test_docker_hub_short_names_match_an_allowed_docker_io_prefix():
    policy = {**DEFAULT_POLICY, "allowed_registries": ["docker.io/jupyter"]}
    assert validate_environment({**ENV, "image": "jupyter/scipy-notebook:2024-01-01"}, policy)[1] == {}


def test_guarantee_above_limit_and_duplicate_profiles():
    env = {**ENV, "cpu_guarantee": 2, "cpu_limit": 1,
           "profiles": [{"display_name": "A", "default": True}, {"display_name": "A", "default": "on"}]}
    errors = validate_environment(env, DEFAULT_POLICY)[1]
    assert errors["cpu_guarantee"] == "The guarantee cannot exceed the limit."
    assert errors["profiles.1.display_name"] == "Another profile has this name."
    assert errors["profiles"] == "Mark at most one profile as the default."


def test_policy_fields_are_checked():
    clean, errors = validate_policy({"max_cpu": "-1", "max_memory": "lots", "allowed_registries": "quay.io/x:1",
                                     "max_users": "2.5", "nope": 1})
    assert clean == {} and set(errors) == {"max_cpu", "max_memory", "allowed_registries", "max_users", "nope"}
    assert validate_policy({"max_cpu": "8", "gpus_allowed": "on"}) == (
        {**DEFAULT_POLICY, "max_cpu": 8, "gpus_allowed": True}, {})


def test_layers_apply_in_order_and_auth_is_replaced_whole():
    institution = {"auth": {**OIDC, "allow_all": True}, "environment": {"cpu_limit": 1}}
    cluster = {"environment": {"cpu_limit": 3, "mem_limit": "8G"}}
    hub = {"environment": {"default_url": "/tree"}}
    config = layered(None, cluster, institution, hub)
    assert config["auth"] == institution["auth"]
    assert (config["environment"]["cpu_limit"], config["environment"]["mem_limit"],
            config["environment"]["default_url"]) == (1, "8G", "/tree")
    assert layered(None, None, {"environment": {}}, None)["auth"] == RELEASE_DEFAULTS["auth"]
    assert deep_merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}
