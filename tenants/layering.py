"""Config layering: platform release defaults, then cluster defaults, then the institution, then the hub."""
from __future__ import annotations

import copy
from typing import Any

# What a hub gets when nobody said otherwise: the platform release's own layer.
RELEASE_DEFAULTS: dict[str, Any] = {
    "auth": {"authenticator_class": "closed"},  # nobody but the hub's first admin (tenants/auth.py)
    "environment": {
        "image": "quay.io/jupyter/scipy-notebook:2025-01-06",
        "default_url": "/lab",
        "cpu_guarantee": 0.5,
        "cpu_limit": 2,
        "mem_guarantee": "1G",
        "mem_limit": "4G",
        "storage_capacity": "10Gi",
        "cull_timeout": 3600,
        "cull_max_age": 0,
        "profiles": [],
    },
}


def deep_merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Merge dicts left to right: later layers win; nested dicts merge; lists and other values are replaced.

    Pure: the inputs are not modified.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = deep_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
    return merged


def layered(release: dict[str, Any] | None, cluster: dict[str, Any] | None, institution: dict[str, Any] | None,
            hub: dict[str, Any] | None) -> dict[str, Any]:
    """The effective {"auth": ..., "environment": ...} of one hub.

    The auth config is not merged field by field: a layer that names an authenticator replaces the whole auth
    config, since one IdP's settings mean nothing to another.
    """
    layers = [release or RELEASE_DEFAULTS, cluster or {}, institution or {}, hub or {}]
    auth = next((layer["auth"] for layer in reversed(layers) if layer.get("auth")), {})
    environment = deep_merge(*(layer.get("environment") or {} for layer in layers))
    return {"auth": copy.deepcopy(auth), "environment": environment}
