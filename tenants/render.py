"""Render a hub's configuration for a backend target.

Pure functions: given plain dicts, return plain dicts.  The local target is JupyterHub configuration as traitlets
sections (``{"JupyterHub": {...}, "Authenticator": {...}}``), which ``clusters.local`` writes beside a fixed
``jupyterhub_config.py``.
"""
from __future__ import annotations

from typing import Any

# Until an institution configures its own identity provider, a hub uses JupyterHub's dummy authenticator: any
# username with any password.  The local backend binds hubs to loopback by default, so this is a demo setting.
DEMO_AUTH: dict[str, Any] = {"authenticator_class": "dummy"}

DEFAULT_ENVIRONMENT: dict[str, Any] = {"default_url": "/lab"}


def render_local(auth: dict[str, Any], environment: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Return JupyterHub traitlets sections for ``auth`` and ``environment``.

    Pure and deterministic (same input, same output).  Raises ``ValueError`` for an authenticator it cannot render.
    """
    environment = {**DEFAULT_ENVIRONMENT, **(environment or {})}
    kind = auth.get("authenticator_class")
    if kind == "dummy":
        config = {"JupyterHub": {"authenticator_class": "dummy"}, "Authenticator": {"allow_all": True}}
    elif kind == "shared-password":
        config = {"JupyterHub": {"authenticator_class": "shared-password"},
                  "SharedPasswordAuthenticator": {"user_password": auth["user_password"]},
                  "Authenticator": {"allow_all": True}}
    else:
        raise ValueError(f"cannot render authenticator_class {kind!r} for the local target")
    config["Spawner"] = {"default_url": environment["default_url"]}
    return config
