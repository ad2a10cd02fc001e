"""Render a hub's effective config for a backend target.

Pure functions: given plain dicts, return plain dicts.

- ``render_local``: JupyterHub configuration as traitlets sections (``{"JupyterHub": {...}, ...}``), which
  ``clusters.local`` writes beside a fixed ``jupyterhub_config.py``.  Containers do not exist there, so images,
  profiles, CPU/memory guarantees and storage do not apply; limits are passed on as JupyterHub's ``mem_limit`` and
  ``cpu_limit`` (which set ``MEM_LIMIT``/``CPU_LIMIT`` in the server's environment).
- ``render_z2jh``: values for the Zero to JupyterHub Helm chart, valid against its schema.
"""
from __future__ import annotations

import copy
import sys
from typing import Any

from tenants.auth import (FEDERATED_CLASS, FEDERATED_SOURCE, FIRST_ADMIN_CLASS, FIRST_ADMIN_SOURCE, HIDDEN_FIELDS,
                          authenticator_sections)
from tenants.environment import split_image

MASK = "********"
# What a local hub does not apply, named for people: its users' servers are processes, not containers (see
# ``render_local``), so nothing gives them an image, a guarantee, a GPU, a volume or a choice of profile.
LOCAL_UNAPPLIED = {"image": "default image", "cpu_guarantee": "CPU guarantee", "mem_guarantee": "memory guarantee",
                   "gpus": "GPUs", "storage_capacity": "home storage", "profiles": "profiles"}
# Login classes of our own, by the name a rendered config gives them: (extraConfig key, source file, class).
OWN_AUTHENTICATORS = {FIRST_ADMIN_CLASS: ("hubfleet-first-admin", FIRST_ADMIN_SOURCE, "FirstAdminAuthenticator"),
                      FEDERATED_CLASS: ("hubfleet-federated", FEDERATED_SOURCE, "FederatedAuthenticator")}


def render_local(config: dict[str, Any], secrets: dict[str, str], hub_url: str | None = None
                 ) -> dict[str, dict[str, Any]]:
    """Traitlets sections for the local backend; deterministic."""
    env = config["environment"]
    sections = authenticator_sections(config["auth"], secrets)
    spawner: dict[str, Any] = {"default_url": env.get("default_url", "/lab")}
    if env.get("mem_limit"):
        spawner["mem_limit"] = env["mem_limit"]
    if env.get("cpu_limit"):
        spawner["cpu_limit"] = float(env["cpu_limit"])
    sections["Spawner"] = spawner
    # Profiles with Slurm job options, for a slurm hub's spawner (clusters/slurm_backend.py); other hubs ignore them.
    slurm = [{"display_name": p["display_name"], "default": bool(p.get("default")), "slurm": p["slurm"]}
             for p in env.get("profiles") or [] if p.get("slurm") is not None]
    if slurm:
        sections["HubfleetSlurmSpawner"] = {"profiles": slurm}
    if hub_url:
        sections["OAuthenticator"] = {"oauth_callback_url": f"{hub_url}hub/oauth_callback"}
    if env.get("cull_timeout"):
        sections["JupyterHub"]["services"] = [{
            "name": "idle-culler",
            "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={env['cull_timeout']}",
                        *([f"--max-age={env['cull_max_age']}"] if env.get("cull_max_age") else [])]}]
        sections["JupyterHub"]["load_roles"] = [{
            "name": "idle-culler", "services": ["idle-culler"],
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}]
    return sections


def unapplied(target: str, environment: dict[str, Any]) -> list[str]:
    """The settings of ``environment`` that a hub rendered for ``target`` does not apply, as people name them; empty
    for Kubernetes (z2jh), which applies them all.  Pure."""
    if target != "local":
        return []
    return [label for key, label in LOCAL_UNAPPLIED.items() if environment.get(key)]


def _resources(source: dict[str, Any]) -> dict[str, Any]:
    """KubeSpawner's names for one profile's (or the default's) resources."""
    names = {"cpu_guarantee": "cpu_guarantee", "cpu_limit": "cpu_limit", "mem_guarantee": "mem_guarantee",
             "mem_limit": "mem_limit"}
    out = {names[k]: source[k] for k in names if source.get(k) is not None}
    if source.get("gpus"):
        out["extra_resource_limits"] = {"nvidia.com/gpu": str(source["gpus"])}
    return out


def render_z2jh(config: dict[str, Any], secrets: dict[str, str], hub_url: str | None = None) -> dict[str, Any]:
    """Values for the z2jh chart; deterministic.  Deep-merged over the chart's defaults they pass its schema."""
    env = config["environment"]
    sections = authenticator_sections(config["auth"], secrets)
    if hub_url:
        sections["OAuthenticator"] = {"oauth_callback_url": f"{hub_url}hub/oauth_callback"}
    name, tag = split_image(env["image"])
    singleuser: dict[str, Any] = {
        "image": {"name": name, "tag": tag},
        "defaultUrl": env.get("default_url", "/lab"),
        "cpu": {"limit": env.get("cpu_limit"), "guarantee": env.get("cpu_guarantee")},
        "memory": {"limit": env.get("mem_limit"), "guarantee": env.get("mem_guarantee")},
    }
    if env.get("gpus"):
        singleuser["extraResource"] = {"limits": {"nvidia.com/gpu": str(env["gpus"])}}
    if env.get("storage_capacity"):
        singleuser["storage"] = {"capacity": env["storage_capacity"]}
    if env.get("profiles"):
        singleuser["profileList"] = []
        for profile in env["profiles"]:
            override = _resources(profile)
            if profile.get("image"):
                override["image"] = profile["image"]
            entry = {"display_name": profile["display_name"], "description": profile.get("description", ""),
                     "kubespawner_override": override}
            if profile.get("default"):
                entry["default"] = True
            singleuser["profileList"].append(entry)
    cull: dict[str, Any] = {"enabled": bool(env.get("cull_timeout"))}
    if env.get("cull_timeout"):
        cull["timeout"] = env["cull_timeout"]
        cull["maxAge"] = env.get("cull_max_age", 0)
    hub: dict[str, Any] = {"config": sections}
    own = OWN_AUTHENTICATORS.get(sections["JupyterHub"].get("authenticator_class"))
    if own is not None:
        # The chart's hub image lacks our own login classes: one comes as code the chart's config runs last.
        name, source, class_name = own
        del sections["JupyterHub"]["authenticator_class"]
        hub["extraConfig"] = {name: source.read_text() + f"\nc.JupyterHub.authenticator_class = {class_name}\n"}
    return {"hub": hub, "singleuser": singleuser, "cull": cull}


def _is_secret(key: str, value: Any) -> bool:
    if key == "keys":  # CryptKeeper's keys: a federated hub's auth-state key
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return key in HIDDEN_FIELDS | {"api_token"} and isinstance(value, str)


def split_secrets(rendered: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the rendered config without its secret values, the secret values alone in the same shape); pure.

    Secrets sit only in mappings (an authenticator's section), never in lists, so the two merge back losslessly."""
    public: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for key, value in rendered.items():
        if _is_secret(key, value):
            secret[key] = value
        elif isinstance(value, dict):
            public[key], inner = split_secrets(value)
            if inner:
                secret[key] = inner
        else:
            public[key] = copy.deepcopy(value)
    return public, secret


def mask_secrets(rendered: Any, label: str = MASK) -> Any:
    """A copy of a rendered config with every secret value replaced by ``label``; pure."""
    if isinstance(rendered, dict):
        return {k: (label if _is_secret(k, v) else mask_secrets(v, label)) for k, v in rendered.items()}
    if isinstance(rendered, list):
        return [mask_secrets(v, label) for v in rendered]
    return copy.deepcopy(rendered)
