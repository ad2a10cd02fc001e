"""Turn the institution config form's flat fields into the nested dicts the services take."""
from __future__ import annotations

from typing import Any

import yaml
from tenants.auth import KINDS, SECRET_FIELDS, Field
from tenants.environment import PROFILE_FIELDS
from werkzeug.datastructures import MultiDict


def form_value(field: Field, value: Any) -> Any:
    """How the config form shows ``field``'s ``value``: lists one item per line, mappings as YAML, text as typed."""
    if field.kind == "mapping" and isinstance(value, dict):
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False) if value else ""
    if field.kind == "list" and isinstance(value, (list, tuple, set)):
        return "\n".join(str(item) for item in value)
    return value


def parse_config_form(form: MultiDict) -> tuple[dict, dict, dict[str, str]]:
    """(auth, environment, typed secrets) from the posted form; values stay as typed for the schema to check."""
    auth: dict[str, Any] = {}
    environment: dict[str, Any] = {}
    profiles: dict[int, dict[str, Any]] = {}
    for key, value in form.items():
        section, _, name = key.partition(".")
        if section == "auth" and name:
            auth[name] = value
        elif section == "environment" and name.startswith("profiles."):
            _, index, field = (name.split(".", 2) + ["", ""])[:3]
            # the form numbers its profiles 0, 1, 2...: any other key was not typed into it and is dropped
            if index.isascii() and index.isdigit() and len(index) <= 4 and (field in PROFILE_FIELDS
                                                                            or field == "remove"):
                profiles.setdefault(int(index), {})[field] = value
            elif index.isascii() and index.isdigit() and len(index) <= 4 and field.startswith("slurm."):
                # a Slurm job option ("slurm.partition"); blanks are dropped by the schema
                profiles.setdefault(int(index), {}).setdefault("slurm", {})[field[6:]] = value
        elif section == "environment" and name:
            environment[name] = value
    kind = KINDS.get(auth.get("authenticator_class"))
    if kind:
        for field in kind.fields:
            if field.kind == "bool":
                auth.setdefault(field.name, "off")  # an unticked box is not sent at all
    environment["profiles"] = [
        {k: v for k, v in profile.items() if k != "remove"} for _, profile in sorted(profiles.items())
        if not profile.get("remove") and _typed(profile)]
    secrets = {k: auth.pop(k) for k in list(auth) if k in SECRET_FIELDS}
    return auth, environment, secrets


def _typed(profile: dict[str, Any]) -> bool:
    """Whether anything was typed into a profile's fields (the form's empty "Add a profile" fieldset is sent too)."""
    values = [profile.get(k, "") for k in PROFILE_FIELDS if k not in ("default", "slurm")]
    return any(str(v).strip() for v in values + list((profile.get("slurm") or {}).values()))


# What a switch of authenticator keeps: who may log in and who administers the hub, when the new kind has the field.
# Everything else (allow_all above all, client ids, URLs, scopes, claims) belongs to one provider and starts over.
CARRIED_ON_SWITCH = ("allowed_users", "admin_users", "allowed_groups", "admin_groups", "manage_groups")


def carry_over(auth: dict[str, Any], new_class: str) -> dict[str, Any]:
    """The form's fields after the admin switches to ``new_class``: that kind's own defaults, plus the lists of who
    may log in (:data:`CARRIED_ON_SWITCH`) that it shares with the old one.  "Allow everyone" is never carried: it
    would silently open the new login to everyone its provider authenticates."""
    kind = KINDS.get(new_class)
    if kind is None:
        return {"authenticator_class": new_class}
    defaults = {f.name: f.default for f in kind.fields if f.default is not None and not f.secret}
    kept = {k: v for k, v in auth.items() if k in CARRIED_ON_SWITCH and kind.field(k) is not None}
    return {"authenticator_class": new_class, **defaults, **kept}
