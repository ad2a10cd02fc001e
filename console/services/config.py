"""Institution self-service: login and environment inside the operator's policy; preview, apply, render."""
from __future__ import annotations

import difflib
from typing import Any

import yaml
from clusters.base import HubSpec
from tenants.auth import SECRET_FIELDS, validate_auth
from tenants.environment import validate_environment
from tenants.layering import RELEASE_DEFAULTS, deep_merge, layered
from tenants.policy import DEFAULT_POLICY, validate_policy
from tenants.render import MASK, mask_secrets, render_local, render_z2jh
from werkzeug.exceptions import BadRequest, Forbidden

from console.crypto import decrypt_json, encrypt_json
from console.extensions import db
from console.models import ConfigDraft, Hub, Institution, Operation, User, utcnow
from console.services import FieldErrors, audit, operations

TARGETS = ("local", "z2jh")


def policy_of(institution: Institution) -> dict[str, Any]:
    return {**DEFAULT_POLICY, **(institution.policy or {})}


def current_config(institution: Institution) -> dict[str, Any]:
    """The institution's own layer over the release defaults, as the edit form and the API show it (no secrets)."""
    return {"auth": dict(institution.auth or RELEASE_DEFAULTS["auth"]),
            "environment": {**RELEASE_DEFAULTS["environment"], **(institution.environment or {})}}


def secrets_set(institution: Institution) -> list[str]:
    """Names of the secrets stored for the institution (their values are never returned)."""
    return sorted(decrypt_json(institution.auth_secrets))


def _validate(institution: Institution, auth: Any, environment: Any, typed_secrets: dict[str, str]
              ) -> tuple[dict, dict, dict]:
    """(auth, secrets, environment) or FieldErrors keyed 'auth.<field>' / 'environment.<field>'."""
    stored = decrypt_json(institution.auth_secrets)
    auth_input = dict(auth) if isinstance(auth, dict) else auth
    if isinstance(auth_input, dict):
        auth_input.update(typed_secrets)
    clean_auth, secrets, auth_errors = validate_auth(auth_input, stored)
    env_input = {**RELEASE_DEFAULTS["environment"], **environment} if isinstance(environment, dict) else environment
    clean_env, env_errors = validate_environment(env_input, policy_of(institution))
    errors = {**{f"auth.{k}": v for k, v in auth_errors.items()},
              **{f"environment.{k}": v for k, v in env_errors.items()}}
    if errors:
        raise FieldErrors(errors)
    if len(clean_auth.get("allowed_users", [])) > policy_of(institution)["max_users"]:
        raise FieldErrors({"auth.allowed_users": f"At most {policy_of(institution)['max_users']} users "
                                                 f"(the operator's policy)."})
    return clean_auth, secrets, clean_env


def _require_config_access(user: User, institution: Institution) -> None:
    # Scoped loading already hid other institutions (404); this guards a mis-wired caller.
    if not user.is_operator and user.institution_id != institution.id:
        raise Forbidden("not your institution")


def apply_config(user: User, institution: Institution, auth: Any, environment: Any,
                 typed_secrets: dict[str, str] | None = None) -> list[Operation]:
    """Validate and save the institution's config, then queue one reconfigure operation per live hub.

    Raises FieldErrors (nothing saved, nothing queued).  Secrets left blank keep their stored value.  Commits.
    """
    _require_config_access(user, institution)
    typed_secrets = {k: v for k, v in (typed_secrets or {}).items() if v}
    if isinstance(auth, dict):
        typed_secrets.update({k: auth[k] for k in SECRET_FIELDS if isinstance(auth.get(k), str) and auth[k]})
        auth = {k: v for k, v in auth.items() if k not in SECRET_FIELDS}
    clean_auth, secrets, clean_env = _validate(institution, auth, environment, typed_secrets)
    before = current_config(institution)
    old_secrets = decrypt_json(institution.auth_secrets)
    institution.auth = clean_auth
    institution.environment = clean_env
    institution.auth_secrets = encrypt_json(secrets)
    institution.config_updated_at = utcnow()
    changed = sorted(k for k in set(before["auth"]) | set(clean_auth) if before["auth"].get(k) != clean_auth.get(k))
    changed += sorted(f"environment.{k}" for k in set(before["environment"]) | set(clean_env)
                      if before["environment"].get(k) != clean_env.get(k))
    changed += sorted(k for k in set(secrets) | set(old_secrets) if secrets.get(k) != old_secrets.get(k))
    audit(user.email, "institution.config", institution.slug, institution.id,
          changed=changed, authenticator_class=clean_auth["authenticator_class"])
    ops = [operations.enqueue(hub, "reconfigure", user.email) for hub in live_hubs(institution)]
    db.session.execute(db.delete(ConfigDraft).where(ConfigDraft.institution_id == institution.id,
                                                    ConfigDraft.user_id == user.id))
    db.session.commit()
    return ops


def set_policy(user: User, institution: Institution, data: Any) -> dict[str, Any]:
    """Operators only: replace the institution's policy (missing fields take defaults). Commits."""
    if not user.is_operator:
        raise Forbidden("only operators set policy")
    clean, errors = validate_policy(data if isinstance(data, dict) else None)
    if errors:
        raise FieldErrors({f"policy.{k}" if k != "policy" else k: v for k, v in errors.items()})
    before = policy_of(institution)
    institution.policy = clean
    audit(user.email, "institution.policy", institution.slug, institution.id,
          changed={k: [before.get(k), v] for k, v in clean.items() if before.get(k) != v})
    db.session.commit()
    return clean


def live_hubs(institution: Institution) -> list[Hub]:
    return list(db.session.execute(
        db.select(Hub).where(Hub.institution_id == institution.id, Hub.state != "deleted",
                             Hub.desired == "running").order_by(Hub.slug)).unique().scalars())


# -- what a hub runs ----------------------------------------------------------------------------------------------

def effective(hub: Hub, institution_layer: dict | None = None) -> tuple[dict, dict]:
    """(effective config, secrets) of a hub: release ⊕ cluster ⊕ institution (or ``institution_layer``) ⊕ hub."""
    institution = hub.institution
    layer = institution_layer if institution_layer is not None else {
        "auth": institution.auth or None, "environment": institution.environment or {},
        "secrets": decrypt_json(institution.auth_secrets)}
    release_env = ((hub.release.config or {}).get("environment") or {}) if hub.release else {}
    release_layer = {**RELEASE_DEFAULTS, "environment": deep_merge(RELEASE_DEFAULTS["environment"], release_env)}
    config = layered(release_layer, (hub.cluster.settings or {}).get("defaults"),
                     {"auth": layer["auth"], "environment": layer["environment"]}, (hub.spec or {}).get("overrides"))
    secrets = layer["secrets"] if layer["auth"] else {}
    return config, secrets


def hub_spec(hub: Hub) -> HubSpec:
    """What the backend gets: the hub's effective config rendered for its target, secrets included.

    The hub's release adds its JupyterHub version and, for local hubs, its own JupyterHub settings on top.
    """
    release = hub.release
    config = render(hub, target_of(hub), masked=False)
    if release is not None and target_of(hub) == "local":
        config = deep_merge(config, (release.config or {}).get("jupyterhub") or {})
    return HubSpec(slug=hub.slug, institution=hub.institution.slug, release=release.name if release else "default",
                   jupyterhub_version=release.jupyterhub_version if release else None, config=config)


def target_of(hub: Hub) -> str:
    return "local" if hub.cluster.backend != "kubernetes" else "z2jh"


def render(hub: Hub, target: str, masked: bool = True, institution_layer: dict | None = None,
           mask_label: str = MASK) -> dict[str, Any]:
    """The hub's rendered config for ``target`` ('local' or 'z2jh'); secrets masked unless ``masked`` is False."""
    if target not in TARGETS:
        raise BadRequest(f"target must be one of {', '.join(TARGETS)}")
    config, secrets = effective(hub, institution_layer)
    rendered = render_local(config, secrets) if target == "local" else render_z2jh(config, secrets, hub.url)
    return mask_secrets(rendered, mask_label) if masked else rendered


def preview(user: User, institution: Institution, auth: Any, environment: Any, new_secrets: dict[str, str]
            ) -> list[tuple[Hub, str]]:
    """Per live hub, a unified diff of its rendered config (secrets masked) now vs. with the change applied.

    Validates first: raises FieldErrors exactly as :func:`apply_config` would.  Changes nothing.
    """
    _require_config_access(user, institution)
    draft_auth, secrets, draft_env = _validate(institution, auth, environment, new_secrets)
    stored = decrypt_json(institution.auth_secrets)
    proposed = {"auth": draft_auth, "environment": draft_env, "secrets": secrets}
    diffs = []
    for hub in live_hubs(institution):
        target = target_of(hub)
        now = yaml.safe_dump(render(hub, target), sort_keys=True)
        changed_label = MASK + " (changed)" if new_secrets and any(stored.get(k) != v for k, v in
                                                                  new_secrets.items()) else MASK
        then = yaml.safe_dump(render(hub, target, institution_layer=proposed, mask_label=changed_label),
                              sort_keys=True)
        diff = "".join(difflib.unified_diff(now.splitlines(True), then.splitlines(True),
                                            f"{hub.slug} ({target}) now", f"{hub.slug} ({target}) after"))
        diffs.append((hub, diff))
    return diffs


# -- drafts ---------------------------------------------------------------------------------------------------------

def draft_of(user: User, institution: Institution) -> ConfigDraft | None:
    return db.session.execute(db.select(ConfigDraft).filter_by(institution_id=institution.id, user_id=user.id)
                              ).scalar_one_or_none()


def save_draft(user: User, institution: Institution, auth: dict, environment: dict,
               typed_secrets: dict[str, str]) -> ConfigDraft:
    """Keep what the user typed (new secrets encrypted) until they apply or discard it. Commits."""
    _require_config_access(user, institution)
    draft = draft_of(user, institution) or ConfigDraft(institution_id=institution.id, user_id=user.id)
    kept = decrypt_json(draft.auth_secrets)
    if (draft.auth or {}).get("authenticator_class") != auth.get("authenticator_class"):
        kept = {}
    kept.update({k: v for k, v in typed_secrets.items() if v})
    draft.auth = {k: v for k, v in auth.items() if k not in SECRET_FIELDS}
    draft.environment = environment
    draft.auth_secrets = encrypt_json(kept)
    db.session.add(draft)
    db.session.commit()
    return draft


def draft_secrets(draft: ConfigDraft | None) -> dict[str, str]:
    return decrypt_json(draft.auth_secrets) if draft else {}


def discard_draft(user: User, institution: Institution) -> None:
    db.session.execute(db.delete(ConfigDraft).where(ConfigDraft.institution_id == institution.id,
                                                    ConfigDraft.user_id == user.id))
    db.session.commit()


def export_fleet() -> dict[str, Any]:
    """Every institution's config and policy, clusters and hubs, for backup or review; never any secret."""
    institutions = db.session.execute(db.select(Institution).order_by(Institution.slug)).scalars()
    return {
        "institutions": [{"slug": i.slug, "name": i.name, "config": current_config(i), "policy": policy_of(i),
                          "secrets_set": secrets_set(i)} for i in institutions],
        "hubs": [{"slug": h.slug, "institution": h.institution.slug, "cluster": h.cluster.name, "state": h.state,
                  "spec": h.spec} for h in db.session.execute(
                      db.select(Hub).where(Hub.state != "deleted").order_by(Hub.slug)).unique().scalars()],
    }
