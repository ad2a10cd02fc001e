"""An institution's user environment: images, profiles, resources, storage, culling; checked against its policy."""
from __future__ import annotations

import re
from typing import Any

from tenants import slurm_jobs
from tenants.fields import (Invalid, as_bool, as_number, as_quantity, as_text, is_blank, quantity_bytes)

# image reference: [registry[:port]/]path[:tag]; the tag is required so a hub never floats on "latest"
_IMAGE = re.compile(r"^(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::\d+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
                    r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")
MAX_PROFILES = 20
JUPYTERHUB_BYTE_UNITS = ("K", "M", "G", "T")

RESOURCE_FIELDS = ("cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit", "gpus")
PROFILE_FIELDS = ("display_name", "description", "image", *RESOURCE_FIELDS, "default", "slurm")
ENVIRONMENT_FIELDS = ("image", "default_url", *RESOURCE_FIELDS, "storage_capacity", "cull_timeout", "cull_max_age",
                      "profiles")


def split_image(image: str) -> tuple[str, str]:
    """('quay.io/jupyter/scipy-notebook', '2025-01-06') from 'quay.io/jupyter/scipy-notebook:2025-01-06'."""
    match = _IMAGE.match(image)
    return match.group("name"), match.group("tag")


def image_registry_path(name: str) -> str:
    """The fully qualified repository: Docker Hub's short names gain their implied registry."""
    first = name.split("/")[0]
    if "/" not in name:
        return f"docker.io/library/{name}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{name}"
    return name


def _image(value: Any, policy: dict[str, Any]) -> str:
    image = as_text(value, 300)
    if not _IMAGE.match(image):
        raise Invalid("Enter an image with its tag, such as quay.io/jupyter/scipy-notebook:2025-01-06.")
    allowed = policy.get("allowed_registries") or []
    full = image_registry_path(split_image(image)[0])
    if allowed and not any(full == prefix or full.startswith(prefix.rstrip("/") + "/") for prefix in allowed):
        raise Invalid(f"Images must come from {', '.join(allowed)} (the operator's policy); {full} does not.")
    return image


def _resources(data: dict[str, Any], policy: dict[str, Any], errors: dict[str, str], prefix: str) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key in ("cpu_guarantee", "cpu_limit"):
        if not is_blank(data.get(key)):
            try:
                clean[key] = as_number(data[key], minimum=0.01)
                if clean[key] > policy["max_cpu"]:
                    raise Invalid(f"At most {policy['max_cpu']:g} CPU{'' if policy['max_cpu'] == 1 else 's'} per user "
                                  f"(the operator's policy).")
            except Invalid as exc:
                errors[prefix + key] = str(exc)
    for key in ("mem_guarantee", "mem_limit"):
        if not is_blank(data.get(key)):
            try:
                clean[key] = as_quantity(data[key])
                if clean[key][-1] not in JUPYTERHUB_BYTE_UNITS:
                    # JupyterHub's ByteSpecification (Spawner.mem_limit, KubeSpawner's too) knows only these
                    raise Invalid(f"JupyterHub takes memory as a number with K, M, G or T, such as 4G; "
                                  f"{clean[key]!r} is refused.")
                if quantity_bytes(clean[key]) > quantity_bytes(policy["max_memory"]):
                    raise Invalid(f"At most {policy['max_memory']} of memory per user (the operator's policy).")
            except Invalid as exc:
                errors[prefix + key] = str(exc)
    if not is_blank(data.get("gpus")):
        try:
            clean["gpus"] = as_number(data["gpus"], minimum=0, integer=True)
            if clean["gpus"] and not policy["gpus_allowed"]:
                raise Invalid("GPUs are not allowed for this institution (the operator's policy).")
        except Invalid as exc:
            errors[prefix + "gpus"] = str(exc)
    if "cpu_guarantee" in clean and "cpu_limit" in clean and clean["cpu_guarantee"] > clean["cpu_limit"]:
        errors[prefix + "cpu_guarantee"] = "The guarantee cannot exceed the limit."
    if "mem_guarantee" in clean and "mem_limit" in clean and \
            quantity_bytes(clean["mem_guarantee"]) > quantity_bytes(clean["mem_limit"]):
        errors[prefix + "mem_guarantee"] = "The guarantee cannot exceed the limit."
    return clean


def _profile(data: Any, policy: dict[str, Any], errors: dict[str, str], prefix: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        errors[prefix.rstrip(".")] = "Each profile is an object."
        return {}
    for key in data:
        if key not in PROFILE_FIELDS:
            errors[prefix + key] = "Unknown field."
    clean: dict[str, Any] = {}
    try:
        clean["display_name"] = as_text(data.get("display_name", ""), 100)
        if not clean["display_name"]:
            raise Invalid("A profile needs a name.")
    except Invalid as exc:
        errors[prefix + "display_name"] = str(exc)
    try:
        clean["description"] = as_text(data.get("description") or "", 500)
    except Invalid as exc:
        errors[prefix + "description"] = str(exc)
    if not is_blank(data.get("image")):
        try:
            clean["image"] = _image(data["image"], policy)
        except Invalid as exc:
            errors[prefix + "image"] = str(exc)
    clean.update(_resources(data, policy, errors, prefix))
    try:
        clean["default"] = as_bool(data.get("default", False))
    except Invalid as exc:
        errors[prefix + "default"] = str(exc)
    if not is_blank(data.get("slurm")):
        # job options for hubs on Slurm clusters: their shape here, the cluster's policy where the console knows
        # which cluster (tenants/slurm_jobs.check_profiles)
        options, slurm_errors = slurm_jobs.check_shape(data["slurm"])
        if options:
            clean["slurm"] = options
        errors.update({f"{prefix}slurm.{key}" if key else f"{prefix}slurm": message
                       for key, message in slurm_errors.items()})
    return clean


def validate_environment(data: dict[str, Any], policy: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Check a complete environment against ``policy``; returns (clean environment, errors by dotted field).

    Pure.  Every limit that the policy sets is named in the error that enforces it.
    """
    errors: dict[str, str] = {}
    if not isinstance(data, dict):
        return {}, {"environment": "Send an object."}
    for key in data:
        if key not in ENVIRONMENT_FIELDS:
            errors[key] = "Unknown field."
    clean: dict[str, Any] = {}
    try:
        clean["image"] = _image(data.get("image", ""), policy)
    except Invalid as exc:
        errors["image"] = str(exc)
    try:
        clean["default_url"] = as_text(data.get("default_url") or "/lab", 200)
        if not clean["default_url"].startswith("/") or clean["default_url"].startswith("//"):
            raise Invalid("Enter a path on the user's server, such as /lab or /tree.")
    except Invalid as exc:
        errors["default_url"] = str(exc)
    clean.update(_resources(data, policy, errors, ""))
    if not is_blank(data.get("storage_capacity")):
        try:
            clean["storage_capacity"] = as_quantity(data["storage_capacity"])
            if quantity_bytes(clean["storage_capacity"]) > quantity_bytes(policy["max_storage"]):
                raise Invalid(f"At most {policy['max_storage']} of storage per user (the operator's policy).")
        except Invalid as exc:
            errors["storage_capacity"] = str(exc)
    for key in ("cull_timeout", "cull_max_age"):
        try:
            clean[key] = as_number(data.get(key) or 0, minimum=0, integer=True)
        except Invalid as exc:
            errors[key] = str(exc)
    profiles = data.get("profiles") or []
    if not isinstance(profiles, list):
        errors["profiles"] = "Send a list of profiles."
        profiles = []
    elif len(profiles) > MAX_PROFILES:
        errors["profiles"] = f"At most {MAX_PROFILES} profiles."
        profiles = []  # not checked one by one: thousands of them would cost seconds for one error
    clean["profiles"] = [_profile(p, policy, errors, f"profiles.{i}.") for i, p in enumerate(profiles)]
    names = [p.get("display_name") for p in clean["profiles"]]
    for i, name in enumerate(names):
        if name and names.index(name) != i:
            errors[f"profiles.{i}.display_name"] = "Another profile has this name."
    if sum(1 for p in clean["profiles"] if p.get("default")) > 1:
        errors["profiles"] = "Mark at most one profile as the default."
    return (clean if not errors else {}), errors
