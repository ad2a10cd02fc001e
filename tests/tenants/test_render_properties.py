"""Property: every config the validator accepts renders z2jh values that pass the real chart schema."""
import pytest
import yaml
from hypothesis import given, settings

from tenants.auth import validate_auth
from tenants.environment import validate_environment
from tenants.layering import RELEASE_DEFAULTS, layered
from tenants.policy import DEFAULT_POLICY
from tenants.render import MASK, mask_secrets, render_local, render_z2jh
from tenants.z2jh import schema_errors
from tests.k8s.reference import MISSING, values_defaults_path, values_schema_path
from tests.tenants.strategies import auth_configs, environments, policies

if not (values_schema_path().is_file() and values_defaults_path().is_file()):
    pytest.skip(MISSING, allow_module_level=True)

SCHEMA = yaml.safe_load(values_schema_path().read_text())
DEFAULTS = yaml.safe_load(values_defaults_path().read_text())


@settings(max_examples=300, deadline=None)
@given(auth=auth_configs(), environment=environments, policy=policies)
def test_accepted_configs_render_valid_chart_values(auth, environment, policy):
    policy = {**DEFAULT_POLICY, **policy}
    clean_auth, secrets, auth_errors = validate_auth(auth)
    clean_env, env_errors = validate_environment({**RELEASE_DEFAULTS["environment"], **environment}, policy)
    if auth_errors or env_errors:
        assert not clean_auth or not clean_env  # refused: nothing clean comes back for the refused part
        return
    config = layered(None, None, {"auth": clean_auth, "environment": clean_env}, None)
    values = render_z2jh(config, secrets, "https://hub.example.edu/")
    assert schema_errors(values, SCHEMA, DEFAULTS) == []
    local = render_local(config, secrets)
    assert local["JupyterHub"]["authenticator_class"]
    # Masking hides every secret value, whatever the kind.
    for value in secrets.values():
        assert value not in yaml.safe_dump(mask_secrets(values)) and value not in str(mask_secrets(local))


def test_the_release_defaults_render_valid_values():
    config = layered(None, None, None, None)
    assert schema_errors(render_z2jh(config, {}), SCHEMA, DEFAULTS) == []


def test_a_broken_value_is_caught_by_the_schema_check():
    values = render_z2jh(layered(None, None, None, None), {})
    values["singleuser"]["cpu"]["limit"] = "two"
    values["cull"]["timeout"] = "soon"
    errors = schema_errors(values, SCHEMA, DEFAULTS)
    assert any(e.startswith("singleuser.cpu.limit") for e in errors) and any(e.startswith("cull.timeout")
                                                                                for e in errors)


def test_profiles_gpus_and_secrets_render_where_kubespawner_expects_them():
    env = {**RELEASE_DEFAULTS["environment"], "gpus": 1, "profiles": [
        {"display_name": "GPU", "image": "quay.io/jupyter/pytorch-notebook:cuda12-2025-01-06", "gpus": 1,
         "cpu_limit": 4, "default": True}]}
    clean_env, errors = validate_environment(env, {**DEFAULT_POLICY, "gpus_allowed": True})
    assert errors == {}
    auth = {"authenticator_class": "github", "client_id": "x", "client_secret": "a-long-secret",
            "allowed_organizations": ["jupyterhub"]}
    clean_auth, secrets, _ = validate_auth(auth)
    values = render_z2jh(layered(None, None, {"auth": clean_auth, "environment": clean_env}, None), secrets)
    assert values["singleuser"]["extraResource"] == {"limits": {"nvidia.com/gpu": "1"}}
    [profile] = values["singleuser"]["profileList"]
    assert profile["kubespawner_override"]["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert profile["default"] is True
    assert values["hub"]["config"]["GitHubOAuthenticator"]["client_secret"] == "a-long-secret"
    assert mask_secrets(values)["hub"]["config"]["GitHubOAuthenticator"]["client_secret"] == MASK
    assert schema_errors(values, SCHEMA, DEFAULTS) == []
