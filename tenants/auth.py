"""An institution's login: which authenticator, with JupyterHub's and OAuthenticator 17's own field names.

Secrets (``client_secret``, ``user_password``) are kept apart from the rest: callers store them encrypted and never
show them.  A config that lets nobody in is refused: with JupyterHub 5 and OAuthenticator 16+ ``allow_all`` defaults
to False, so an authenticator with no allow rule admits no one, which is always a mistake.

Until its institution configures a login a hub is ``closed``: it admits nobody but its first admin, a username and
password generated when the hub is created and shown once to its creator (:func:`first_admin`); the hub keeps only
a hash of the password.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from secrets import token_bytes, token_urlsafe
from typing import Any, Callable
from urllib.parse import unquote

from tenants.fields import Invalid, as_bool, as_list, as_text, as_url, is_blank

SECRET_FIELDS = frozenset({"client_secret", "user_password"})
# Never shown either, though only hashes: rendered configs and exports mask them like secrets.
HIDDEN_FIELDS = SECRET_FIELDS | {"password_hash", "admin_password_hash"}

CLOSED = "closed"  # the login of a hub whose institution configured none; not a kind an institution chooses
CLOSED_LABEL = "Closed: only the hub's first admin, until the institution configures a login"
FIRST_ADMIN_USERNAME = "first-admin"
# The closed login's authenticator, run inside the hub (it has no Hubfleet installed): shipped as this file's text.
FIRST_ADMIN_SOURCE = Path(__file__).with_name("first_admin_authenticator.py")
FIRST_ADMIN_CLASS = "hubfleet-first-admin"  # how a local hub's config names it
# Federated login: the hub logs in through the console's OpenID provider (console/services/federation.py) and admits
# the console's members of the hub.  The console fills in the client and endpoints per hub (``federation`` in the
# auth config, the client secret and auth-state key among the secrets).
FEDERATED = "federated"
FEDERATED_SOURCE = Path(__file__).with_name("federated_authenticator.py")
FEDERATED_CLASS = "hubfleet-federated"  # how a local hub's config names it
FEDERATED_SCOPES = ["openid", "profile", "email", "groups"]
FEDERATED_REFRESH_SECONDS = 300  # how soon a hub notices a revoked membership
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}  # 16 MiB, some 50 ms: one check per login attempt


def hash_password(password: str) -> str:
    """"scrypt$n$r$p$salt$hash" of ``password``; the hub's config file checks it (``password_matches``)."""
    salt = token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return "$".join(["scrypt", *(str(SCRYPT[k]) for k in "nrp"), salt.hex(), digest.hex()])


def first_admin() -> tuple[dict[str, str], str]:
    """A new hub's first admin: ({"username", "password_hash"} to keep, the password to show once)."""
    password = token_urlsafe(18)
    return {"username": FIRST_ADMIN_USERNAME, "password_hash": hash_password(password)}, password


@dataclass(frozen=True)
class Field:
    name: str
    parse: Callable[[Any], Any]
    label: str
    help: str = ""
    required: bool = False
    default: Any = None
    kind: str = "text"  # how a form shows it: text, url, list, bool, secret, idps

    @property
    def secret(self) -> bool:
        return self.name in SECRET_FIELDS


def _secret(value: Any) -> str:
    value = as_text(value, 2000)
    if len(value) < 8:
        raise Invalid("Use at least 8 characters.")
    return value


def _idps(value: Any) -> dict[str, dict[str, Any]]:
    """CILogon identity providers: {entity id: {"username_claim": ..., "allowed_domains": [...]}}."""
    if not isinstance(value, dict) or not value:
        raise Invalid("Map at least one identity provider's entity id to its username claim.")
    clean = {}
    for entity, settings in value.items():
        if not isinstance(entity, str) or not entity.strip() or not isinstance(settings, dict):
            raise Invalid("Each identity provider needs an entity id and settings.")
        unknown = set(settings) - {"username_claim", "allowed_domains"}
        if unknown:
            raise Invalid(f"Unknown setting {sorted(unknown)[0]!r} for {entity}.")
        clean[entity.strip()] = {"username_claim": as_text(settings.get("username_claim") or "email", 100),
                                 "allowed_domains": as_list(settings.get("allowed_domains") or [])}
    return clean


CLIENT_ID = Field("client_id", lambda v: as_text(v, 500), "Client ID", "Issued by your identity provider.",
                  required=True)
CLIENT_SECRET = Field("client_secret", _secret, "Client secret", "Write-only: stored encrypted, never shown.",
                      required=True, kind="secret")
ALLOW_ALL = Field("allow_all", as_bool, "Allow everyone who can log in", "Anyone your identity provider "
                  "authenticates may use the hub.", default=False, kind="bool")
ALLOWED_USERS = Field("allowed_users", as_list, "Allowed users", "One username per line.", default=[], kind="list")
ADMIN_USERS = Field("admin_users", as_list, "Hub admins", "One username per line.", default=[], kind="list")
ALLOWED_GROUPS = Field("allowed_groups", as_list, "Allowed groups", "Members of these groups may log in.",
                       default=[], kind="list")
ADMIN_GROUPS = Field("admin_groups", as_list, "Admin groups", "Members of these groups are hub admins.", default=[],
                     kind="list")
MANAGE_GROUPS = Field("manage_groups", as_bool, "Sync groups into JupyterHub", default=False, kind="bool")
USERNAME_CLAIM = Field("username_claim", lambda v: as_text(v, 100), "Username claim",
                       "The claim that becomes the JupyterHub username.", default="preferred_username")
COMMON = (ALLOW_ALL, ALLOWED_USERS, ADMIN_USERS)

# The username lists JupyterHub checks (``blocked_users`` only where a kind offers it).
USERNAME_FIELDS = ("allowed_users", "admin_users", "blocked_users")


def username_problem(name: str) -> str | None:
    """Why JupyterHub would refuse ``name`` as a configured username, or None if it takes it.  Pure.

    JupyterHub's startup (``JupyterHub.init_users``) normalizes every configured name with the authenticator's
    ``normalize_username`` and stops with "username ... is not valid" when ``validate_username`` says no.  Every
    authenticator offered here (JupyterHub 5-6's dummy and shared-password, OAuthenticator 17, LTI 1.6) keeps
    the base rules, and the console sets no ``username_pattern`` or ``username_map``: lower-case the name, then
    refuse a '/', an empty name, a name that is only dots (also once URL-decoded) and surrounding spaces.
    ``tests/tenants`` checks this against the installed authenticators.
    """
    normalized = name.lower()
    if not normalized:
        return "it is empty"
    if "/" in normalized:
        return "it contains '/'"
    if set(normalized) == {"."} or set(unquote(normalized)) == {"."}:
        return "it is only dots"
    if normalized != normalized.strip():
        return "it starts or ends with a space"
    return None


def _usernames_errors(clean: dict[str, Any]) -> dict[str, str]:
    """A field error per username list holding a name JupyterHub refuses, naming the (first such) value."""
    errors = {}
    for field in USERNAME_FIELDS:
        for name in clean.get(field) or []:
            problem = username_problem(name)
            if problem:
                errors[field] = f"JupyterHub refuses the username {name!r}: {problem}."
                break
    return errors


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    authenticator_class: str  # JupyterHub entry point name or import path
    config_class: str  # the traitlets section its fields go in
    fields: tuple[Field, ...]
    allow_fields: tuple[str, ...]  # any of these non-empty admits someone

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("generic-oauth", "OpenID Connect / OAuth 2 (generic)", "generic-oauth", "GenericOAuthenticator", (
        CLIENT_ID, CLIENT_SECRET,
        Field("authorize_url", as_url, "Authorize URL", required=True, kind="url"),
        Field("token_url", as_url, "Token URL", required=True, kind="url"),
        Field("userdata_url", as_url, "Userinfo URL", required=True, kind="url"),
        USERNAME_CLAIM,
        Field("scope", as_list, "Scopes", "One per line.", default=["openid", "profile", "email"], kind="list"),
        Field("auth_state_groups_key", lambda v: as_text(v, 200), "Groups key",
              "Where the user's groups are in the login's auth state.", default="oauth_user.groups"),
        ALLOWED_GROUPS, ADMIN_GROUPS, MANAGE_GROUPS, *COMMON), ("allowed_users", "allowed_groups")),
    Kind("github", "GitHub", "github", "GitHubOAuthenticator", (
        CLIENT_ID, CLIENT_SECRET,
        Field("allowed_organizations", as_list, "Allowed organizations or teams", "org or org:team, one per line.",
              default=[], kind="list"),
        Field("scope", as_list, "Scopes", default=["read:org"], kind="list"), *COMMON),
        ("allowed_users", "allowed_organizations")),
    Kind("cilogon", "CILogon", "cilogon", "CILogonOAuthenticator", (
        CLIENT_ID, CLIENT_SECRET,
        Field("idps", _idps, "Identity providers", "Entity id, username claim and allowed domains of each.",
              required=True, kind="idps"), *COMMON), ("allowed_users", "idps")),
    Kind("google", "Google", "google", "GoogleOAuthenticator", (
        CLIENT_ID, CLIENT_SECRET,
        Field("hosted_domain", as_list, "Hosted domains", "Only accounts of these Google Workspace domains.",
              default=[], kind="list"), *COMMON), ("allowed_users",)),
    Kind("azuread", "Microsoft Entra ID (Azure AD)", "azuread", "AzureAdOAuthenticator", (
        CLIENT_ID, CLIENT_SECRET,
        Field("tenant_id", lambda v: as_text(v, 100), "Tenant ID", required=True),
        USERNAME_CLAIM, ALLOWED_GROUPS, ADMIN_GROUPS, MANAGE_GROUPS, *COMMON), ("allowed_users", "allowed_groups")),
    Kind("lti13", "LTI 1.3 (learning management system)", "ltiauthenticator.lti13.auth.LTI13Authenticator",
         "LTI13Authenticator", (
             Field("client_id", as_list, "Client IDs", "As registered in the LMS; one per line.", required=True,
                   kind="list"),
             Field("issuer", as_url, "Issuer", required=True, kind="url"),
             Field("authorize_url", as_url, "Authorize URL", required=True, kind="url"),
             Field("jwks_endpoint", as_url, "JWKS endpoint", required=True, kind="url"),
             Field("username_key", lambda v: as_text(v, 100), "Username claim", default="email"), *COMMON),
         ("allowed_users",)),
    Kind(FEDERATED, "Federated: one sign-on through this console", FEDERATED_CLASS,
         "GenericOAuthenticator", (), ()),
    Kind("dummy", "Demo: any username and password", "dummy", "DummyAuthenticator", COMMON, ("allowed_users",)),
    Kind("shared-password", "Demo: one shared password", "shared-password", "SharedPasswordAuthenticator", (
        Field("user_password", _secret, "Shared password", "Write-only: stored encrypted, never shown.",
              required=True, kind="secret"), *COMMON), ("allowed_users",)),
)}

def login_label(authenticator_class: str | None) -> str:
    """How a page names a hub's login."""
    if authenticator_class == CLOSED:
        return CLOSED_LABEL
    kind = KINDS.get(authenticator_class or "")
    return kind.label if kind else str(authenticator_class)


NOBODY = ("With allow_all off and no allowed users, groups or organizations, nobody could log in. "
          "Turn on allow_all or list who may log in.")


GROUPS_NEED_SYNC = ("Allowed or admin groups, or a groups key of your own, need group sync: "
                    "turn on 'Sync groups into JupyterHub'.")


def validate_auth(data: dict[str, Any], stored_secrets: dict[str, str] | None = None
                  ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Check an auth config; returns (clean config without secrets, secrets, errors by field).

    A secret left blank keeps ``stored_secrets``' value (forms never show it, so blank means "unchanged").  Pure.
    """
    stored_secrets = stored_secrets or {}
    errors: dict[str, str] = {}
    if not isinstance(data, dict):
        return {}, {}, {"auth": "Send an object."}
    kind = KINDS.get(data.get("authenticator_class"))
    if kind is None:
        return {}, {}, {"authenticator_class": f"Choose one of {', '.join(KINDS)}."}
    clean: dict[str, Any] = {"authenticator_class": kind.name}
    secrets: dict[str, str] = {}
    for key in data:
        if key != "authenticator_class" and kind.field(key) is None:
            errors[key] = f"Not a setting of the {kind.name} authenticator."
    for field in kind.fields:
        value = data.get(field.name)
        if field.secret and is_blank(value):
            value = stored_secrets.get(field.name)
        if is_blank(value) and field.kind != "bool":
            if field.required:
                errors[field.name] = f"{field.label} is required."
            elif field.default is not None:
                (secrets if field.secret else clean)[field.name] = field.default
            continue
        try:
            (secrets if field.secret else clean)[field.name] = field.parse(value if value is not None else False)
        except Invalid as exc:
            errors[field.name] = str(exc)
    errors.update({k: v for k, v in _usernames_errors(clean).items() if k not in errors})
    if not errors and not clean.get("allow_all") and not _admits_someone(kind, clean):
        errors["allow_all"] = NOBODY
    groups_key = kind.field("auth_state_groups_key")
    custom_key = groups_key is not None and clean.get(groups_key.name, groups_key.default) != groups_key.default
    if kind.field("manage_groups") and (clean.get("allowed_groups") or clean.get("admin_groups") or custom_key) \
            and not clean.get("manage_groups"):
        # OAuthenticator 17 refuses to start otherwise; say so here instead of as a crashed hub.
        errors["manage_groups"] = GROUPS_NEED_SYNC
    if errors:
        return {}, {}, errors
    return clean, secrets, {}


def _admits_someone(kind: Kind, clean: dict[str, Any]) -> bool:
    if kind.name == FEDERATED:
        return True  # the console's members of each hub
    for name in kind.allow_fields:
        value = clean.get(name)
        if name == "idps":
            if any(idp["allowed_domains"] for idp in (value or {}).values()):
                return True
        elif value:
            return True
    return False


def authenticator_sections(auth: dict[str, Any], secrets: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Traitlets sections for a validated auth config plus its secrets, or for a closed hub's
    (``{"authenticator_class": "closed", "first_admin": {...} or absent}``); pure."""
    if auth["authenticator_class"] == CLOSED:
        admin = auth.get("first_admin") or {}
        names = [admin["username"]] if admin else []
        return {"JupyterHub": {"authenticator_class": FIRST_ADMIN_CLASS},
                "FirstAdminAuthenticator": {"admin_username": admin.get("username", ""),
                                            "admin_password_hash": admin.get("password_hash", ""),
                                            "admin_users": names, "allowed_users": names}}
    if auth["authenticator_class"] == FEDERATED:
        return _federated_sections(auth.get("federation") or {}, secrets)
    kind = KINDS[auth["authenticator_class"]]
    values = {**{k: v for k, v in auth.items() if k != "authenticator_class"}, **secrets}
    if not values.get("manage_groups"):
        # OAuthenticator 17 refuses a groups key (even its default) unless groups are managed
        values.pop("auth_state_groups_key", None)
    if kind.name == "cilogon":
        values["allowed_idps"] = {entity: {"username_derivation": {"username_claim": idp["username_claim"]},
                                           **({"allowed_domains": idp["allowed_domains"]}
                                              if idp["allowed_domains"] else {})}
                                  for entity, idp in values.pop("idps").items()}
    return {"JupyterHub": {"authenticator_class": kind.authenticator_class}, kind.config_class: values}


def _federated_sections(federation: dict[str, Any], secrets: dict[str, str]) -> dict[str, dict[str, Any]]:
    """A federated hub's login: GenericOAuthenticator against the console, groups from the console's claim, auth state
    kept (encrypted with the hub's own key) so that a refresh every few minutes notices a revoked membership."""
    issuer = federation.get("issuer", "")
    return {"JupyterHub": {"authenticator_class": FEDERATED_CLASS},
            "GenericOAuthenticator": {
                "client_id": federation.get("client_id", ""), "client_secret": secrets.get("client_secret", ""),
                "authorize_url": federation.get("authorization_endpoint", ""),
                "token_url": federation.get("token_endpoint", ""),
                "userdata_url": federation.get("userinfo_endpoint", ""),
                "scope": FEDERATED_SCOPES, "username_claim": "preferred_username",
                "manage_groups": True, "auth_state_groups_key": "oauth_user.groups",
                "allowed_groups": ["member"], "admin_groups": ["hub-admin"],
                "enable_auth_state": True, "auth_refresh_age": FEDERATED_REFRESH_SECONDS, "auto_login": True,
                "logout_redirect_url": f"{issuer}/me/hubs" if issuer else ""},
            "CryptKeeper": {"keys": [secrets["crypt_key"]] if secrets.get("crypt_key") else []}}
