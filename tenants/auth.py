"""An institution's login: which authenticator, with the settings its class itself declares.

The settings of each kind are derived from its authenticator class (JupyterHub's, OAuthenticator 17's, LTI's): every
configurable trait over the class's MRO, with its name, type, help and default, minus a short explained deny-list
(:data:`DENIED`: code hooks, host-level settings the console owns) and what a form cannot carry (callables, Python
objects) or the class itself marks deprecated.  The config form is generated from the same fields, and a value is
checked by the class's own validation before a hub sees it.

Secrets (``client_secret``, ``user_password``...) are kept apart from the rest: callers store them encrypted and never
show them.  A config that lets nobody in is refused: with JupyterHub 5 and OAuthenticator 16+ ``allow_all`` defaults
to False, so an authenticator with no allow rule admits no one, which is always a mistake.

Until its institution configures a login a hub is ``closed``: it admits nobody but its first admin, a username and
password generated when the hub is created and shown once to its creator (:func:`first_admin`); the hub keeps only
a hash of the password.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from secrets import token_bytes, token_hex, token_urlsafe
from typing import Any, Callable
from urllib.parse import unquote

import yaml
from traitlets.config import Config

from tenants.fields import Invalid, as_bool, as_list, as_number, as_text, as_url, is_blank

# The settings of every kind whose name says secret or password (tests/tenants checks it against the derived fields),
# and the auth-state encryption key the console makes for a hub that keeps auth state.
SECRET_FIELDS = frozenset({"client_secret", "user_password", "admin_password", "crypt_key"})
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
    """One login setting an institution may set: an authenticator's configurable trait, as the form shows it."""
    name: str
    parse: Callable[[Any], Any]
    label: str
    help: str = ""
    required: bool = False
    default: Any = None  # the console's own default, filled in when the field is left blank (None: the class's)
    kind: str = "text"  # how a form shows it: text, url, number, list, mapping, bool, secret
    common: bool = False  # shown first; the others sit under "More settings"
    class_default: Any = None  # what an unconfigured instance of the class has: the form starts from it

    @property
    def secret(self) -> bool:
        return self.kind == "secret"


def _secret(value: Any) -> str:
    value = as_text(value, 2000)
    if len(value) < 8:
        raise Invalid("Use at least 8 characters.")
    return value


MAX_MAPPING_TEXT = 100_000  # characters of YAML or JSON in one mapping setting


def as_mapping(value: Any) -> dict[str, Any]:
    """A mapping from a JSON object, or from YAML or JSON text typed into the form; JSON-safe values only."""
    if isinstance(value, str):
        if len(value) > MAX_MAPPING_TEXT:
            raise Invalid(f"Use at most {MAX_MAPPING_TEXT:,} characters.")
        try:
            if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(value, Loader=yaml.SafeLoader)):
                # an alias repeats a whole subtree: a few lines could stand for gigabytes once written out
                raise Invalid("Write the values out; YAML anchors and aliases are not taken.")
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise Invalid(f"Not valid YAML{f' (line {mark.line + 1})' if mark else ''}.") from None
        if value is None:
            return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise Invalid("Enter a mapping of names to values (YAML or JSON).")
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        raise Invalid("Use only text, numbers, true/false, lists and mappings.") from None
    return value


def _number(integer: bool) -> Callable[[Any], int | float]:
    return lambda value: as_number(value, integer=integer)


# Settings no institution sets, with the reason (docs/login-settings.md lists them).  Traits of a type a form cannot
# carry (callables, Python objects) and traits the class itself marks deprecated or removed are refused as well,
# with a reason of their own (:func:`refusal`).
DENIED: dict[str, str] = {
    "post_auth_hook": "Python code run by the hub; institutions configure settings, not code.",
    "modify_auth_state_hook": "Python code run by the hub; institutions configure settings, not code.",
    "refresh_user_hook": "Python code run by the hub; institutions configure settings, not code.",
    "reconcile_auth_state_hook": "Python code run by the hub; institutions configure settings, not code.",
    "oauth_callback_url": "The console derives each hub's callback URL from the hub's address.",
    "http_request_kwargs": "Proxies, CA files and timeouts of the hub's host are the operator's, not the login's.",
    "validate_server_cert": "TLS verification of the identity provider always stays on.",
    "username_pattern": "The console checks configured usernames with JupyterHub's default rules before a hub "
                        "restarts; a pattern of its own would let the hub refuse them at startup instead.",
    "username_map": "As username_pattern: a renamed user would no longer match the usernames the console checked.",
    "delete_invalid_users": "Deletes users from the hub's database at startup; removing users is the operator's call.",
    "manage_roles": "Roles on a hub come from the console (admin users and groups), not from the login.",
    "reset_managed_roles_on_startup": "Roles on a hub come from the console (admin users and groups), not from "
                                      "the login.",
    "any_allow_config": "Computed by JupyterHub from the allow settings; not a setting of its own.",
    "google_service_account_keys": "Private keys in a mapping; the console keeps secrets only as write-only "
                                   "single values.",
    "allowed_google_groups": "Google groups are read with a service account's private key "
                             "(google_service_account_keys), which the console does not take.",
    "admin_google_groups": "As allowed_google_groups: needs the service account's private key.",
    "gsuite_administrator": "As allowed_google_groups: needs the service account's private key.",
    "password_groups": "Its keys are passwords; the console keeps secrets only as write-only single values.",
}
# Traits whose name says they hold a secret: write-only, stored encrypted, never shown.
SECRET_WORDS = ("secret", "password")
# How a form shows a trait type (by class name, over the trait's MRO); anything else is refused.
TRAIT_KINDS = {"Unicode": "text", "Bool": "bool", "Int": "number", "Float": "number", "List": "list", "Set": "list",
               "Tuple": "list", "Dict": "mapping", "Enum": "text"}
_URL = re.compile(r"(_url|_endpoint|_api)$|^issuer$")


@dataclass(frozen=True)
class Console:
    """What the console says of a kind beyond its class's traits: labels, its own defaults, which fields are
    required and shown first."""
    name: str
    label: str
    authenticator_class: str  # JupyterHub entry point name or import path
    config_class: str  # the traitlets section its fields go in
    common: tuple[str, ...]  # shown first, in this order
    required: tuple[str, ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()
    allow_fields: tuple[str, ...] = ("allowed_users",)  # any of these non-empty admits someone


# Labels and help that read better than the trait's name and docstring.
LABELS: dict[str, tuple[str, str]] = {
    "client_id": ("Client ID", "Issued by your identity provider."),
    "client_secret": ("Client secret", "Write-only: stored encrypted, never shown."),
    "user_password": ("Shared password", "Write-only: stored encrypted, never shown."),
    "admin_password": ("Admin password", "Write-only: stored encrypted, never shown."),
    "allow_all": ("Allow everyone who can log in", "Anyone your identity provider authenticates may use the hub."),
    "allowed_users": ("Allowed users", "One username per line."),
    "admin_users": ("Hub admins", "One username per line."),
    "blocked_users": ("Blocked users", "One username per line."),
    "allowed_groups": ("Allowed groups", "Members of these groups may log in."),
    "admin_groups": ("Admin groups", "Members of these groups are hub admins."),
    "manage_groups": ("Sync groups into JupyterHub", ""),
    "username_claim": ("Username claim", "The claim that becomes the JupyterHub username."),
    "authorize_url": ("Authorize URL", ""),
    "token_url": ("Token URL", ""),
    "userdata_url": ("Userinfo URL", ""),
    "scope": ("Scopes", "One per line."),
    "auth_state_groups_key": ("Groups key", "Where the user's groups are in the login's auth state."),
    "allowed_organizations": ("Allowed organizations or teams", "org or org:team, one per line."),
    "idps": ("Identity providers", "YAML: each IdP's entity id with its username_derivation (username_claim, "
                                   "action strip_idp_domain with domain, or prefix with prefix), allow_all, "
                                   "allowed_domains and default, as in CILogonOAuthenticator's documentation."),
    "hosted_domain": ("Hosted domains", "Only accounts of these Google Workspace domains."),
    "tenant_id": ("Tenant ID", ""),
    "issuer": ("Issuer", ""),
    "jwks_endpoint": ("JWKS endpoint", ""),
    "username_key": ("Username claim", ""),
}
WHO = ("allow_all", "allowed_users", "admin_users")
OAUTH_REQUIRED = ("client_id", "client_secret")
CONSOLE_KINDS = (
    Console("generic-oauth", "OpenID Connect / OAuth 2 (generic)", "generic-oauth", "GenericOAuthenticator",
            ("client_id", "client_secret", "authorize_url", "token_url", "userdata_url", "username_claim", "scope",
             "auth_state_groups_key", "allowed_groups", "admin_groups", "manage_groups", *WHO),
            (*OAUTH_REQUIRED, "authorize_url", "token_url", "userdata_url"),
            (("username_claim", "preferred_username"), ("scope", ["openid", "profile", "email"]),
             ("auth_state_groups_key", "oauth_user.groups"), ("allowed_groups", []), ("admin_groups", []),
             ("manage_groups", False)),
            ("allowed_users", "allowed_groups", "allowed_scopes")),
    Console("github", "GitHub", "github", "GitHubOAuthenticator",
            ("client_id", "client_secret", "allowed_organizations", "scope", *WHO), OAUTH_REQUIRED,
            (("allowed_organizations", []), ("scope", ["read:org"])), ("allowed_users", "allowed_organizations")),
    Console("cilogon", "CILogon", "cilogon", "CILogonOAuthenticator", ("client_id", "client_secret", "idps", *WHO),
            (*OAUTH_REQUIRED, "idps"), (), ("allowed_users", "idps")),
    Console("google", "Google", "google", "GoogleOAuthenticator",
            ("client_id", "client_secret", "hosted_domain", *WHO), OAUTH_REQUIRED, (("hosted_domain", []),)),
    Console("azuread", "Microsoft Entra ID (Azure AD)", "azuread", "AzureAdOAuthenticator",
            ("client_id", "client_secret", "tenant_id", "username_claim", "allowed_groups", "admin_groups",
             "manage_groups", *WHO), (*OAUTH_REQUIRED, "tenant_id"),
            (("username_claim", "preferred_username"), ("allowed_groups", []), ("admin_groups", []),
             ("manage_groups", False)), ("allowed_users", "allowed_groups")),
    Console("lti13", "LTI 1.3 (learning management system)", "ltiauthenticator.lti13.auth.LTI13Authenticator",
            "LTI13Authenticator", ("client_id", "issuer", "authorize_url", "jwks_endpoint", "username_key", *WHO),
            ("client_id", "issuer", "authorize_url", "jwks_endpoint"), (("username_key", "email"),)),
    Console("dummy", "Demo: any username and password", "dummy", "DummyAuthenticator", WHO),
    Console("shared-password", "Demo: one shared password", "shared-password", "SharedPasswordAuthenticator",
            ("user_password", *WHO), ("user_password",)),
)
# Defaults every kind shares (who may log in).
WHO_DEFAULTS = (("allow_all", False), ("allowed_users", []), ("admin_users", []))


def load_class(name: str) -> type:
    """The authenticator class a JupyterHub entry point name or an import path names."""
    found = {e.name: e for e in entry_points(group="jupyterhub.authenticators")}
    if name in found:
        return found[name].load()
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _deprecation(trait: Any) -> str | None:
    text = inspect.cleandoc(trait.help or "")
    if text.startswith((".. deprecated::", ".. versionremoved::", "Deprecated")):
        note = _plain(" ".join(text.split("\n\n")[:2]))
        note = re.sub(r"^\.\. (deprecated|versionremoved):: (\S+) ",
                      lambda m: f"{m.group(1).replace('version', '')} in {m.group(2)}: ", note)
        return f"Deprecated or removed by the authenticator itself ({note})."
    return None


def _plain(text: str) -> str:
    """``text`` on one line, without reStructuredText roles and literals."""
    return re.sub(r":\w+:`([^`]*)`|`+([^`]*)`+", lambda m: m.group(1) or m.group(2), " ".join(text.split()))


def _usable(trait: Any) -> Any | None:
    """The trait itself, or a Union's first member a form can carry; None when there is none."""
    for member in getattr(trait, "trait_types", None) or [trait]:
        if any(c.__name__ in TRAIT_KINDS for c in type(member).__mro__):
            return member
    return None


def refusal(cls: type, name: str, trait: Any) -> str | None:
    """Why an institution may not set ``cls``'s trait ``name``, or None when it may."""
    if name in DENIED:
        return DENIED[name]
    deprecated = _deprecation(trait)
    if deprecated:
        return deprecated
    member = _usable(trait)
    if member is None:
        return f"A {type(trait).__name__} setting (code or a Python object), which a form cannot carry."
    kind = _form_kind(name, member)
    if any(word in name for word in SECRET_WORDS) and kind != "secret":
        return "Holds secrets in a list or mapping; the console keeps secrets only as write-only single values."
    return None


def _form_kind(name: str, member: Any) -> str:
    kind = next(TRAIT_KINDS[c.__name__] for c in type(member).__mro__ if c.__name__ in TRAIT_KINDS)
    if kind == "text" and any(word in name for word in SECRET_WORDS):
        return "secret"
    if kind == "text" and _URL.search(name):
        return "url"
    return kind


def _summary(trait: Any) -> str:
    """The first paragraph of a trait's help, on one line, without reStructuredText markup."""
    return _plain(inspect.cleandoc(trait.help or "").split("\n\n")[0])


PARSERS: dict[str, Callable[[Any], Any]] = {
    "text": lambda value: as_text(value, 2000), "url": as_url, "list": as_list, "bool": as_bool,
    "mapping": as_mapping, "secret": _secret}


def _derive_field(console: Console, name: str, trait: Any, defaults: dict[str, Any], instance: Any) -> Field:
    member = _usable(trait)
    kind = _form_kind(name, member)
    parse = _number("Int" in [c.__name__ for c in type(member).__mro__]) if kind == "number" else PARSERS[kind]
    label, help_text = LABELS.get(name, (name.replace("_", " ").capitalize(), ""))
    try:  # the default an unconfigured instance has: a dynamic default (GitHub's login_service) included
        class_default = getattr(instance, name)
    except Exception:  # a default the class computes only from other settings
        class_default = None
    if isinstance(class_default, (set, frozenset, tuple)):
        class_default = sorted(class_default)
    return Field(name, parse, label, help_text or _summary(trait), required=name in console.required,
                 default=defaults.get(name), kind=kind, common=name in console.common,
                 class_default=class_default if isinstance(class_default, (str, bool, int, float, list, dict))
                 else None)


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    authenticator_class: str  # JupyterHub entry point name or import path
    config_class: str  # the traitlets section its fields go in
    fields: tuple[Field, ...]  # common fields first, in the console's order, then the rest by name
    allow_fields: tuple[str, ...]  # any of these non-empty admits someone
    aliases: tuple[tuple[str, str], ...] = ()  # (old name, name): deprecated names the class itself renames
    refused: tuple[tuple[str, str], ...] = ()  # (trait, reason): the class's settings an institution may not set

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


def derive_kind(console: Console) -> Kind:
    """A kind's fields from its authenticator class: every configurable trait over the class's MRO down to
    JupyterHub's ``Authenticator`` that :func:`refusal` lets through."""
    cls = load_class(console.authenticator_class)
    defaults = dict(WHO_DEFAULTS + console.defaults)
    traits = cls.class_traits(config=True)
    refused = {name: refusal(cls, name, trait) for name, trait in traits.items()}
    instance = cls(log=_quiet_log())
    fields = [_derive_field(console, name, trait, defaults, instance) for name, trait in traits.items()
              if refused[name] is None]
    order = {name: i for i, name in enumerate(console.common)}
    fields.sort(key=lambda f: (f.name not in order, order.get(f.name, 0), f.name))
    names = {f.name for f in fields}
    aliases = tuple((old, spec[0]) for old, spec in getattr(cls, "_deprecated_oauth_aliases", {}).items()
                    if spec[0] in names and (len(spec) < 3 or spec[2]))
    return Kind(console.name, console.label, console.authenticator_class, console.config_class, tuple(fields),
                console.allow_fields, aliases, tuple(sorted((k, v) for k, v in refused.items() if v)))


class _Kinds(Mapping):
    """The kinds an institution chooses from, by name; derived from the installed classes on first use (importing
    every authenticator takes a few seconds, which a process that never reads a login should not pay)."""

    def __init__(self) -> None:
        self._kinds: dict[str, Kind] | None = None

    def _all(self) -> dict[str, Kind]:
        if self._kinds is None:
            derived = [derive_kind(console) for console in CONSOLE_KINDS]
            federated = Kind(FEDERATED, "Federated: one sign-on through this console", FEDERATED_CLASS,
                             "GenericOAuthenticator", (), ())
            ordered = derived[:6] + [federated] + derived[6:]  # the order the form lists them in
            self._kinds = {kind.name: kind for kind in ordered}
        return self._kinds

    def __getitem__(self, name: str) -> Kind:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


KINDS: Mapping[str, Kind] = _Kinds()


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

    Each value is parsed by its field's type, then checked by the authenticator class itself (each trait's own
    validation, then the whole config loaded into the class as a hub would), then by the console's rules (somebody
    admitted, groups synced, usernames JupyterHub takes).  A value equal to the class's default is left out: the
    class applies it anyway.  A secret left blank keeps ``stored_secrets``' value (forms never show it, so blank
    means "unchanged").  Deprecated names the class itself renames, and CILogon IdPs in the console's former
    ``{entity: {username_claim, allowed_domains}}`` shape, are taken in their current form.
    """
    stored_secrets = stored_secrets or {}
    errors: dict[str, str] = {}
    if not isinstance(data, dict):
        return {}, {}, {"auth": "Send an object."}
    name = data.get("authenticator_class")
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        return {}, {}, {"authenticator_class": f"Choose one of {', '.join(KINDS)}."}
    data = upgraded(kind, data)
    clean: dict[str, Any] = {"authenticator_class": kind.name}
    secrets: dict[str, str] = {}
    refused = dict(kind.refused)
    for key in data:
        if key != "authenticator_class" and kind.field(key) is None:
            errors[key] = (f"Not settable here: {refused[key]}" if key in refused
                           else f"Not a setting of the {kind.name} authenticator.")
    for field in kind.fields:
        value = data.get(field.name)
        if field.secret and is_blank(value):
            value = stored_secrets.get(field.name)
        if is_blank(value) and (field.kind != "bool" or value is None):
            if field.required and not _truthy(data.get(REQUIRED_UNLESS.get(field.name, ""))):
                errors[field.name] = f"{field.label} is required."
            elif field.default is not None:
                (secrets if field.secret else clean)[field.name] = field.default
            continue
        try:
            parsed = field.parse(value)
        except Invalid as exc:
            errors[field.name] = str(exc)
            continue
        if field.default is None and not field.required and not field.secret and parsed == field.class_default:
            continue
        (secrets if field.secret else clean)[field.name] = parsed
    errors.update({k: v for k, v in _usernames_errors(clean).items() if k not in errors})
    groups_key = kind.field("auth_state_groups_key")
    custom_key = groups_key is not None and clean.get(groups_key.name, groups_key.default) != groups_key.default
    if kind.field("manage_groups") and (clean.get("allowed_groups") or clean.get("admin_groups") or custom_key) \
            and not clean.get("manage_groups"):
        # OAuthenticator 17 refuses these without group sync: say it in the console's words, not the class's.
        errors["manage_groups"] = GROUPS_NEED_SYNC
    if not errors:
        errors.update(_class_errors(kind, clean, secrets))
    if not errors and not clean.get("allow_all") and not _admits_someone(kind, clean):
        errors["allow_all"] = NOBODY
    if errors:
        return {}, {}, errors
    if clean.get("enable_auth_state"):
        # auth state is stored encrypted: the hub's key is the console's to make and keep, with the other secrets
        secrets["crypt_key"] = stored_secrets.get("crypt_key") or token_hex(32)
    return clean, secrets, {}


# A required field another setting stands in for: GenericOAuthenticator reads the user from the ID token instead.
REQUIRED_UNLESS = {"userdata_url": "userdata_from_id_token"}


def _truthy(value: Any) -> bool:
    try:
        return value is not None and as_bool(value)
    except Invalid:
        return False


def upgraded(kind: Kind, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with deprecated names the class renames itself under their current names, and CILogon IdPs in the
    console's former shape in the documented one; pure."""
    data = dict(data)
    for old, new in kind.aliases:
        if old in data and new not in data:
            data[new] = data.pop(old)
    if kind.name == "cilogon" and isinstance(data.get("idps"), dict):
        data["idps"] = {entity: _documented_idp(idp) for entity, idp in data["idps"].items()}
    return data


def _documented_idp(idp: Any) -> Any:
    """An IdP of the console's former ``{username_claim, allowed_domains}`` shape in CILogon's documented one."""
    if not isinstance(idp, dict) or "username_derivation" in idp or not set(idp) <= {"username_claim",
                                                                                       "allowed_domains"}:
        return idp
    documented: dict[str, Any] = {"username_derivation": {"username_claim": idp.get("username_claim") or "email"}}
    if idp.get("allowed_domains"):
        documented["allowed_domains"] = idp["allowed_domains"]
    return documented


def _quiet_log() -> logging.Logger:
    log = logging.getLogger("hubfleet.login-check")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log


def _class_errors(kind: Kind, clean: dict[str, Any], secrets: dict[str, str]) -> dict[str, str]:
    """What the authenticator class itself refuses: each value set on its trait alone (an error per field), then the
    whole config as the hub would load it (an error on the login as a whole)."""
    if kind.name == FEDERATED:
        return {}
    cls = load_class(kind.authenticator_class)
    errors: dict[str, str] = {}
    sections = authenticator_sections(clean, secrets)
    instance = cls(log=_quiet_log())
    values = {("idps" if name == "allowed_idps" else name): value for name, value in
              sections[kind.config_class].items()}
    # switches first: some validators read them (manage_groups before the groups it manages)
    for name, value in sorted(values.items(), key=lambda item: not isinstance(item[1], bool)):
        try:
            setattr(instance, name, copy.deepcopy(value))
        except Exception as exc:  # the class's own validators raise what they like (TraitError, ValueError, jsonschema)
            errors[name] = f"{kind.field(name).label}: {cls.__name__} refuses it: {_reason(exc)}"
    if errors:
        return errors
    try:
        cls(config=Config(copy.deepcopy(sections)), log=_quiet_log())
    except Exception as exc:
        return {"authenticator_class": f"{cls.__name__} refuses this login: {_reason(exc)}"}
    return {}


def _reason(exc: Exception) -> str:
    message = str(getattr(exc, "message", None) or exc).strip().split("\n")[0]
    return message[:300]


def _admits_someone(kind: Kind, clean: dict[str, Any]) -> bool:
    if kind.name == FEDERATED:
        return True  # the console's members of each hub
    for name in kind.allow_fields:
        value = clean.get(name)
        if name == "idps":
            if any(idp.get("allow_all") or idp.get("allowed_domains") for idp in (value or {}).values()):
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
    values = {**{k: v for k, v in upgraded(kind, auth).items() if k != "authenticator_class"}, **secrets}
    crypt_key = values.pop("crypt_key", None)
    if not values.get("manage_groups"):
        # OAuthenticator 17 refuses a groups key (even its default) unless groups are managed
        values.pop("auth_state_groups_key", None)
    if kind.name == "cilogon" and "idps" in values:
        # OAuthenticator 17.4 renames allowed_idps to idps itself; older hub images know only allowed_idps
        values["allowed_idps"] = values.pop("idps")
    sections = {"JupyterHub": {"authenticator_class": kind.authenticator_class}, kind.config_class: values}
    if values.get("enable_auth_state") and crypt_key:
        sections["CryptKeeper"] = {"keys": [crypt_key]}
    return sections


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
