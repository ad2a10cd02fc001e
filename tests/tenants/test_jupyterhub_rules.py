"""Values are judged here as the installed JupyterHub judges them: usernames by each authenticator's own
normalize/validate pair, memory by JupyterHub's ByteSpecification."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jupyterhub.spawner import Spawner
from traitlets import TraitError

from tenants.auth import KINDS, username_problem, validate_auth
from tenants.environment import validate_environment
from tenants.policy import DEFAULT_POLICY
from tests.tenants.test_authenticators_load import authenticator_class

EDGES = ["ada", "Ada", "a/b", "/", ".", "..", "...", "%2e", "%2E%2e", "a%2Fb", " ada", "ada ", "a b", "ünï", "a.b",
         "@", "", "%", "..a"]
names = st.one_of(st.sampled_from(EDGES), st.text(alphabet="aZ./% 2eE-_", max_size=6), st.text(max_size=6))


@pytest.fixture(scope="module")
def authenticators():
    return {kind.name: authenticator_class(kind.authenticator_class)() for kind in KINDS.values()}


@settings(max_examples=300, deadline=None)
@given(name=names)
def test_usernames_are_judged_as_each_authenticator_judges_them(authenticators, name):
    for kind, authenticator in authenticators.items():
        jupyterhub_takes = authenticator.validate_username(authenticator.normalize_username(name))
        assert (username_problem(name) is None) == jupyterhub_takes, (kind, name)


def test_a_refused_username_is_a_field_error_naming_it():
    clean, _, errors = validate_auth({"authenticator_class": "github", "client_id": "c", "client_secret": "x" * 12,
                                      "allowed_users": "ada\nteam/ops", "admin_users": ["..", "Bob"]})
    assert clean == {}
    assert errors == {"allowed_users": "JupyterHub refuses the username 'team/ops': it contains '/'.",
                      "admin_users": "JupyterHub refuses the username '..': it is only dots."}
    _, _, errors = validate_auth({"authenticator_class": "dummy", "allowed_users": ["Ada", "a.b", "%2Fx"]})
    assert errors == {}  # JupyterHub lower-cases Ada and takes the rest


@pytest.mark.parametrize("memory", ["512M", "1G", "1.5G", "2T", "4Gi", "512Mi", "100", "1K"])
def test_memory_is_judged_as_jupyterhub_judges_it(memory):
    _, errors = validate_environment({"image": "quay.io/jupyter/base-notebook:2025-01-06", "mem_limit": memory},
                                     {**DEFAULT_POLICY, "max_memory": "4T"})
    try:
        Spawner(mem_limit=memory)
        jupyterhub_takes = True
    except TraitError:
        jupyterhub_takes = False
    assert ("mem_limit" not in errors) == jupyterhub_takes, errors
