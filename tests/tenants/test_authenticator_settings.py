"""The login settings an institution may set are the authenticator classes' own traits, minus an explained deny-list.

The examples are those of each authenticator's own documentation (OAuthenticator's provider pages, LTI's README,
CILogon's ``idps`` help text, read from the installed class), as an institution admin copies them from a running
hub; each must pass ``validate_auth`` and load into its class as the console renders it.
"""
import inspect
import re
from pathlib import Path

import pytest
from traitlets.config import Config

from tenants.auth import (DENIED, FEDERATED, GROUPS_NEED_SYNC, KINDS, SECRET_FIELDS, authenticator_sections,
                          load_class, validate_auth)

SECRET = "a-long-client-secret"
IDP = "https://idp.example.edu"


def cilogon_documented_idps() -> dict:
    """The ``idps`` example of CILogonOAuthenticator's own help text, evaluated as its docs show it."""
    cls = load_class("cilogon")
    text = inspect.cleandoc(cls.class_traits()["idps"].help)
    block = text.split("For example::", 1)[1].split("\n\n")[1]
    c = Config()
    exec(compile(inspect.cleandoc(block), "idps-example", "exec"), {"c": c})  # noqa: S102 - the library's own text
    return dict(c.CILogonOAuthenticator.idps)


# Each authenticator's documented configuration, with the console's names (no oauth_callback_url: the console sets it).
DOCUMENTED = {
    "generic-oauth": {  # OAuthenticator docs, "Generic OpenID Connect" and "Reference: GenericOAuthenticator"
        "client_id": "jupyterhub", "client_secret": SECRET, "login_service": "Example University",
        "authorize_url": f"{IDP}/auth", "token_url": f"{IDP}/token",
        "scope": ["openid", "email", "groups"], "username_claim": "preferred_username",
        "userdata_from_id_token": True, "extra_authorize_params": {"prompt": "consent"},
        "allowed_scopes": ["groups"], "logout_redirect_url": f"{IDP}/logout", "allow_existing_users": True,
        "enable_auth_state": True, "auth_refresh_age": 3600, "manage_groups": True,
        "auth_state_groups_key": "oauth_user.groups", "allowed_groups": ["students"], "admin_groups": ["staff"]},
    "github": {  # OAuthenticator docs, "GitHub Setup"
        "client_id": "gh-client", "client_secret": SECRET,
        "allowed_organizations": ["my-github-organization", "my-github-organization:my-team"],
        "populate_teams_in_auth_state": True, "enable_auth_state": True, "scope": ["read:org"]},
    "google": {  # OAuthenticator docs, "Google Setup"
        "client_id": "hub.apps.googleusercontent.com", "client_secret": SECRET, "hosted_domain": ["mycollege.edu"],
        "login_service": "My College", "username_claim": "email", "strip_domain": True, "allow_all": True},
    "azuread": {  # OAuthenticator docs, "Azure AD Setup"
        "client_id": "hub", "client_secret": SECRET, "tenant_id": "0000-1111-2222", "username_claim": "unique_name",
        "manage_groups": True, "auth_state_groups_key": "user.groups", "allowed_groups": ["ab12-cd34"],
        "admin_groups": ["ef56"]},
    "cilogon": {  # CILogonOAuthenticator.idps' own example, with its admin_users and allowed_users
        "client_id": "cilogon:/client_id/1234", "client_secret": SECRET, "idps": cilogon_documented_idps(),
        "admin_users": ["github-user1"], "allowed_users": ["github-user2"]},
    "lti13": {  # ltiauthenticator README, "LTI 1.3 Authenticator" with Canvas
        "issuer": "https://canvas.instructure.com",
        "authorize_url": "https://canvas.instructure.com/api/lti/authorize_redirect",
        "jwks_endpoint": "https://canvas.instructure.com/api/lti/security/jwks",
        "client_id": ["125900000000000329"], "username_key": "email", "allow_all": True},
    "dummy": {"allowed_users": ["ada"], "admin_users": ["ada"]},  # JupyterHub docs, "Authenticators"
    "shared-password": {  # JupyterHub docs, "SharedPasswordAuthenticator"
        "user_password": "shared-password-for-the-class", "admin_password": "a-different-admin-password-of-32chars!",
        "admin_users": ["instructor"], "allowed_users": ["student1", "student2"]},
}


def loaded(clean: dict, secrets: dict):
    """The authenticator instance a hub would create from the rendered sections."""
    sections = authenticator_sections(clean, secrets)
    kind = KINDS[clean["authenticator_class"]]
    return load_class(kind.authenticator_class)(config=Config(sections)), sections


def test_every_derived_field_is_a_configurable_trait_of_its_class():
    for kind in KINDS.values():
        if kind.name == FEDERATED:
            continue
        traits = load_class(kind.authenticator_class).class_traits(config=True)
        assert kind.fields and all(field.name in traits for field in kind.fields), kind.name
        assert all(field.help for field in kind.fields), kind.name
        # every trait is either a field or refused with a reason: nothing is dropped silently
        assert {f.name for f in kind.fields} | {name for name, _ in kind.refused} == set(traits), kind.name


def test_the_deny_list_names_only_real_traits_and_the_docs_explain_each():
    every = set().union(*(load_class(k.authenticator_class).class_traits(config=True) for k in KINDS.values()
                          if k.name != FEDERATED))
    assert set(DENIED) <= every
    docs = Path(__file__).parents[2].joinpath("docs", "login-settings.md").read_text()
    for name in DENIED:
        assert f"`{name}`" in docs, name


def test_secrets_are_the_fields_named_so_and_write_only():
    derived = {f.name for kind in KINDS.values() for f in kind.fields if f.secret}
    assert derived == SECRET_FIELDS - {"crypt_key"}
    clean, secrets, errors = validate_auth({"authenticator_class": "shared-password", **DOCUMENTED["shared-password"]})
    assert errors == {} and set(secrets) == {"user_password", "admin_password"} and not set(clean) & SECRET_FIELDS


@pytest.mark.parametrize("kind", sorted(DOCUMENTED))
def test_each_authenticators_documented_example_is_accepted_and_loads(kind):
    clean, secrets, errors = validate_auth({"authenticator_class": kind, **DOCUMENTED[kind]})
    assert errors == {}, errors
    instance, sections = loaded(clean, secrets)
    for name, value in DOCUMENTED[kind].items():
        # kept as given, or left out as the class's own default
        assert clean.get(name, secrets.get(name, KINDS[kind].field(name).class_default)) == value, name
        got = getattr(instance, name)
        assert (set(got) == set(value)) if isinstance(got, (set, frozenset, dict)) else got == value, name


def test_cilogon_takes_the_documented_idps_with_actions_allow_all_and_default():
    idps = cilogon_documented_idps()
    actions = {idp["username_derivation"].get("action") for idp in idps.values()}
    assert actions == {"strip_idp_domain", "prefix"} and any(idp.get("allow_all") for idp in idps.values())
    clean, secrets, errors = validate_auth({"authenticator_class": "cilogon", "client_id": "c", "client_secret": SECRET,
                                            "allowed_idps": idps})  # the name OAuthenticator < 17.4 documented
    assert errors == {} and clean["idps"] == idps  # admitted by the IdP's allow_all alone
    instance, sections = loaded(clean, secrets)
    assert instance.idps.keys() == idps.keys() and sections["CILogonOAuthenticator"]["allowed_idps"] == idps
    assert instance._get_processed_username("jo@utoronto.ca", {
        "idp": "https://idpz.utorauth.utoronto.ca/shibboleth"}) == "jo"
    assert instance._get_processed_username("jo", {"idp": "http://google.com/accounts/o8/id"}) == "google:jo"


def test_cilogon_refuses_what_its_class_refuses_and_reads_the_former_shape():
    base = {"authenticator_class": "cilogon", "client_id": "c", "client_secret": SECRET, "allow_all": True}
    no_domain = {IDP: {"username_derivation": {"username_claim": "email", "action": "strip_idp_domain"}}}
    errors = validate_auth({**base, "idps": no_domain})[2]
    assert list(errors) == ["idps"] and "'domain' is a required property" in errors["idps"]
    assert "must** be CILogon permitted EntityIDs" in validate_auth(
        {**base, "idps": {"idp.example.edu": {"username_derivation": {"username_claim": "email"}}}})[2]["idps"]
    former = {IDP: {"username_claim": "eppn", "allowed_domains": ["example.edu"]}}
    clean, _, errors = validate_auth({**base, "allow_all": False, "idps": former})
    assert errors == {} and clean["idps"] == {IDP: {"username_derivation": {"username_claim": "eppn"},
                                                    "allowed_domains": ["example.edu"]}}
    # a config stored in the former shape still renders the documented one
    sections = authenticator_sections({**base, "idps": former}, {"client_secret": SECRET})
    assert sections["CILogonOAuthenticator"]["allowed_idps"][IDP]["username_derivation"] == {"username_claim": "eppn"}


def test_refused_settings_say_why_and_types_are_checked():
    base = {"authenticator_class": "generic-oauth", **DOCUMENTED["generic-oauth"]}
    errors = validate_auth({**base, "post_auth_hook": "evil", "validate_server_cert": False,
                            "oauth_callback_url": "https://x/"})[2]
    assert errors == {name: f"Not settable here: {DENIED[name]}"
                      for name in ("post_auth_hook", "validate_server_cert", "oauth_callback_url")}
    assert validate_auth({**base, "otp_prompt": "x"})[2]["otp_prompt"].startswith("Not settable here: A Any setting")
    assert validate_auth({**base, "whitelist": ["a"]})[2]["whitelist"].startswith(
        "Not settable here: Deprecated or removed")
    errors = validate_auth({**base, "auth_refresh_age": "soon", "extra_authorize_params": "{not: [yaml"})[2]
    assert errors["auth_refresh_age"] == "Enter a whole number."
    assert errors["extra_authorize_params"].startswith("Not valid YAML")
    # a value the class's own validation refuses is a field error, in the class's words
    both = validate_auth({**base, "userdata_url": f"{IDP}/userinfo"})[2]
    assert list(both) == ["userdata_url"] and "Cannot specify both" in both["userdata_url"]
    wider = validate_auth({**base, "allowed_scopes": ["admin"]})[2]
    assert list(wider) == ["allowed_scopes"] and "subset of requested scopes" in wider["allowed_scopes"]


def test_deprecated_names_the_class_renames_are_taken_under_the_current_name():
    documented = {k: v for k, v in DOCUMENTED["generic-oauth"].items() if k != "username_claim"}
    clean, _, errors = validate_auth({"authenticator_class": "generic-oauth", **documented, "username_key": "sub"})
    assert errors == {} and clean["username_claim"] == "sub" and "username_key" not in clean


def test_form_strings_are_parsed_by_type_and_class_defaults_are_left_to_the_class():
    clean, _, errors = validate_auth({
        "authenticator_class": "github", "client_id": "x", "client_secret": SECRET, "allowed_users": "ada\nbob",
        "auth_refresh_age": "600", "extra_authorize_params": "prompt: consent\n", "enable_pkce": "on",
        "login_service": "GitHub", "allow_existing_users": "off"})
    assert errors == {}
    assert clean["auth_refresh_age"] == 600 and clean["extra_authorize_params"] == {"prompt": "consent"}
    assert "enable_pkce" not in clean and "login_service" not in clean and "allow_existing_users" not in clean


def test_auth_state_gets_a_key_the_console_keeps():
    auth = {"authenticator_class": "github", **DOCUMENTED["github"]}
    clean, secrets, errors = validate_auth(auth)
    assert errors == {} and re.fullmatch(r"[0-9a-f]{64}", secrets["crypt_key"])
    assert validate_auth(auth, {"crypt_key": secrets["crypt_key"]})[1]["crypt_key"] == secrets["crypt_key"]
    sections = authenticator_sections(clean, secrets)
    assert sections["CryptKeeper"] == {"keys": [secrets["crypt_key"]]}
    assert "crypt_key" not in sections["GitHubOAuthenticator"]


def test_the_consoles_group_rule_still_speaks_first():
    auth = {"authenticator_class": "azuread", **DOCUMENTED["azuread"], "manage_groups": False}
    assert validate_auth(auth)[2] == {"manage_groups": GROUPS_NEED_SYNC}
