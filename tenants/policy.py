"""The operator's guardrails for one institution."""
from __future__ import annotations

from typing import Any

from tenants.fields import Invalid, as_bool, as_list, as_number, as_quantity

DEFAULT_POLICY: dict[str, Any] = {
    "max_cpu": 4,
    "max_memory": "16G",
    "allowed_registries": ["quay.io/jupyter"],
    "gpus_allowed": False,
    "max_storage": "50Gi",
    "max_users": 1000,
    # JupyterHub's dummy login admits any username and password: for a demo on 127.0.0.1, never by default.
    "open_login_allowed": False,
}

_PARSERS = {
    "max_cpu": lambda v: as_number(v, minimum=0.1),
    "max_memory": as_quantity,
    "allowed_registries": as_list,
    "gpus_allowed": as_bool,
    "max_storage": as_quantity,
    "max_users": lambda v: as_number(v, minimum=1, integer=True),
    "open_login_allowed": as_bool,
}


def validate_policy(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Return (clean policy, errors by field). Missing fields take the defaults; unknown fields are errors. Pure."""
    errors: dict[str, str] = {}
    if not isinstance(data, dict):
        return {}, {"policy": "Send an object."}
    clean = dict(DEFAULT_POLICY)
    for key, value in data.items():
        if key not in _PARSERS:
            errors[key] = "Unknown field."
            continue
        try:
            clean[key] = _PARSERS[key](value)
        except Invalid as exc:
            errors[key] = str(exc)
    for registry in clean.get("allowed_registries", []) if "allowed_registries" not in errors else []:
        if " " in registry or ":" in registry.split("/")[-1]:
            errors["allowed_registries"] = f"{registry!r} is not a registry (such as quay.io or quay.io/jupyter)."
    return (clean if not errors else {}), errors
