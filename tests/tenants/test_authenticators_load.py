"""Property: every auth config the validator accepts is taken by the real authenticator class it names.

The rendered traitlets sections are loaded into the installed JupyterHub/OAuthenticator/LTI classes, so their own
validators (OAuthenticator 17's group rules, CILogon's idps shape) run on what we would deploy.
"""
import importlib
from importlib.metadata import entry_points

from hypothesis import given, settings
from traitlets.config import Config

from tenants.auth import FEDERATED_CLASS, KINDS, validate_auth
from tenants.layering import layered
from tenants.render import render_local
from tests.tenants.strategies import auth_configs

ENTRY_POINTS = {e.name: e for e in entry_points(group="jupyterhub.authenticators")}
OWN = {FEDERATED_CLASS: "tenants.federated_authenticator.FederatedAuthenticator"}  # shipped to the hub as source


def authenticator_class(name: str):
    name = OWN.get(name, name)
    if name in ENTRY_POINTS:
        return ENTRY_POINTS[name].load()
    module, _, cls = name.rpartition(".")
    return getattr(importlib.import_module(module), cls)


def test_every_kind_names_an_installed_class_and_its_section():
    for kind in KINDS.values():
        cls = authenticator_class(kind.authenticator_class)
        assert kind.config_class in [c.__name__ for c in cls.mro()]  # its own section, or its parent's
        unknown = [f.name for f in kind.fields if f.name not in cls.class_traits()]
        assert unknown == [], f"{kind.name}: {unknown}"


@settings(max_examples=200, deadline=None)
@given(auth=auth_configs())
def test_accepted_configs_load_in_their_authenticator(auth):
    clean, secrets, errors = validate_auth(auth)
    if errors:
        return
    sections = render_local(layered(None, None, {"auth": clean, "environment": {}}, None), secrets)
    cls = authenticator_class(sections["JupyterHub"]["authenticator_class"])
    instance = cls(config=Config(sections))
    section = sections[next(c.__name__ for c in cls.mro() if c.__name__ in sections)]
    for key, value in section.items():
        loaded = getattr(instance, key)
        if isinstance(loaded, (set, frozenset)):
            assert set(loaded) == set(value), key
        elif isinstance(loaded, dict):  # the class may fill in defaults of its own (CILogon's allowed_idps)
            assert set(loaded) == set(value), key
        else:
            assert loaded == value, key
