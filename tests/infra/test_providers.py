"""The wizard's own rules (infra/providers.py): defaults, ranges, cross-field checks, credentials."""
from infra.providers import PROVIDERS, validate


def test_defaults_fill_what_was_left_blank():
    values, env, errors = validate("eks", {"name": "cloud"}, {"aws_access_key_id": "id",
                                                              "aws_secret_access_key": "secret"})
    assert errors == {}
    assert values == {f.name: f.default for f in PROVIDERS["eks"].fields} | {"name": "cloud"}
    assert env == {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}


def test_cross_field_rules():
    creds = {"google_credentials": "{}"}
    base = {"name": "cloud", "project_id": "my-project-1"}
    assert validate("gke", {**base, "user_min_nodes": "5", "user_max_nodes": "2"}, creds)[2] == {
        "user_min_nodes": "The minimum cannot exceed the maximum."}
    assert validate("gke", {**base, "gpu_enabled": "on", "gpu_max_nodes": "0"}, creds)[2] == {
        "gpu_max_nodes": "A GPU pool needs at least one node at most."}
    assert validate("gke", {**base, "home_storage_gb": "70000"}, creds)[2] == {
        "home_storage_gb": "Filestore BASIC_HDD holds at most 65433 GB."}


def test_credentials_are_required_but_never_variables():
    values, env, errors = validate("aks", {"name": "cloud"}, {})
    assert set(errors) == {"arm_client_id", "arm_client_secret", "arm_tenant_id", "arm_subscription_id"}
    values, env, errors = validate("aks", {"name": "cloud"}, {}, require_credentials=False)
    assert errors == {} and env == {} and not any("secret" in k or "client" in k for k in values)
