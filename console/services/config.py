"""Institution self-service: login and environment inside the operator's policy; preview, apply, render."""
from __future__ import annotations

import difflib
from typing import Any, NamedTuple

import yaml
from clusters.base import HubSpec, backend_class
from tenants.auth import CLOSED, FEDERATED, SECRET_FIELDS, validate_auth
from tenants.environment import validate_environment
from tenants.layering import RELEASE_DEFAULTS, deep_merge, layered
from tenants.policy import DEFAULT_POLICY, validate_policy
from tenants.render import MASK, mask_secrets, render_local, render_z2jh, split_secrets, unapplied
from werkzeug.exceptions import BadRequest, Conflict

from console.crypto import decrypt_json, encrypt_json
from console.extensions import db
from console.lifecycles import ROLLOUT
from console.models import ConfigDraft, Hub, Institution, Rollout, RolloutHub, User, utcnow
from console.permissions import require
from console.services import FieldErrors, audit, federation, releases, slurm_view

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
    slurm_errors = slurm_view.profile_errors(institution, clean_env)  # profiles as job options on Slurm clusters
    if slurm_errors:
        raise FieldErrors(slurm_errors)
    if clean_auth.get("authenticator_class") == FEDERATED:
        try:
            federation.issuer()
        except federation.NotConfigured as exc:
            raise FieldErrors({"auth.authenticator_class": str(exc)}) from None
    if clean_auth.get("authenticator_class") == "dummy" and not policy_of(institution)["open_login_allowed"]:
        raise FieldErrors({"auth.authenticator_class": "The demo login admits any username and password; only an "
                                                       "operator's policy can allow it (for demo hubs)."})
    if len(clean_auth.get("allowed_users", [])) > policy_of(institution)["max_users"]:
        raise FieldErrors({"auth.allowed_users": f"At most {policy_of(institution)['max_users']} users "
                                                 f"(the operator's policy)."})
    return clean_auth, secrets, clean_env


def validate(institution: Institution, auth: Any, environment: Any, typed_secrets: dict[str, str] | None = None
             ) -> tuple[dict, dict, dict]:
    """Check a config for ``institution`` exactly as :func:`apply` does, against the institution's policy (an
    unsaved ``Institution`` carries a policy not stored yet): (auth, secrets, environment) as they would be stored,
    secrets left out keeping their stored value; FieldErrors keyed 'auth.<field>' / 'environment.<field>'.  Writes
    nothing."""
    auth, typed_secrets = _split_secrets(auth, typed_secrets)
    return _validate(institution, auth, environment, typed_secrets)


def _split_secrets(auth: Any, typed_secrets: dict[str, str] | None) -> tuple[Any, dict[str, str]]:
    """(auth without secrets, typed secrets): blanks dropped, secrets typed into ``auth`` itself moved out."""
    typed_secrets = {k: v for k, v in (typed_secrets or {}).items() if v}
    if isinstance(auth, dict):
        typed_secrets.update({k: auth[k] for k in SECRET_FIELDS if isinstance(auth.get(k), str) and auth[k]})
        auth = {k: v for k, v in auth.items() if k not in SECRET_FIELDS}
    return auth, typed_secrets


def active_config_rollout(institution: Institution) -> Rollout | None:
    """The institution's config rollout that is still under way (planned, running or paused), if any."""
    return db.session.execute(
        db.select(Rollout).where(Rollout.kind == "config", Rollout.institution_id == institution.id,
                                 Rollout.state.in_(("planned", "running", "paused")))
        .order_by(Rollout.id.desc()).limit(1)).unique().scalar_one_or_none()


def config_rollout_live(rollout: Rollout | None) -> bool:
    """Whether a config rollout may still change (under way, or a hub's operation not ended yet)."""
    return rollout is not None and (rollout.state in ("planned", "running", "paused")
                                    or any(item.state == "upgrading" for item in rollout.hubs))


def latest_config_rollout(institution: Institution) -> Rollout | None:
    return db.session.execute(
        db.select(Rollout).where(Rollout.kind == "config", Rollout.institution_id == institution.id)
        .order_by(Rollout.id.desc()).limit(1)).unique().scalar_one_or_none()


def apply(user: User, institution: Institution, auth: Any, environment: Any,
          typed_secrets: dict[str, str] | None = None) -> Rollout | None:
    """Validate the institution's new config and roll it out hub by hub; returns the rollout (None: no live hub).

    The config goes into a ``Rollout`` of kind "config" (secrets encrypted apart) whose first wave is the
    institution's canary hub (or its first hub); ``releases.advance`` drives it with one ``reconfigure`` operation
    at a time, each preflighted and rolled back on failure, and the rollout halts at the first failure.  The
    institution's stored config and the user's draft change only when every hub has taken it
    (:func:`finish_config_rollout`).  With no live hub the config is adopted at once.

    Raises FieldErrors (nothing saved, nothing queued), and Conflict while another config rollout of the
    institution is under way: one change at a time, so a hub is never between two of them.  A halted one is
    superseded: it is aborted (hubs that took it keep it until this one reaches them).  Secrets left blank keep
    their stored value.  Commits.
    """
    require(user, "config.edit", institution)
    auth, typed_secrets = _split_secrets(auth, typed_secrets)
    clean_auth, secrets, clean_env = _validate(institution, auth, environment, typed_secrets)
    busy = active_config_rollout(institution)
    if busy is not None:
        raise Conflict(f"A configuration change is still rolling out to {institution.slug}'s hubs "
                       f"(rollout {busy.id}, {busy.state}); apply again when it has ended.")
    hubs = live_hubs(institution)
    if not hubs:
        _adopt(institution, clean_auth, clean_env, secrets, user.email)
        _clear_draft(institution, user.id)
        db.session.commit()
        return None
    for halted in db.session.execute(db.select(Rollout).where(
            Rollout.kind == "config", Rollout.institution_id == institution.id, Rollout.state == "halted")
    ).unique().scalars():
        halted.state, halted.finished_at = ROLLOUT.next_state(halted.state, "abort"), utcnow()
        audit(user.email, "rollout.abort", institution.slug, institution.id, rollout=halted.id,
              reason="superseded by a newer configuration")
    rollout = Rollout(kind="config", institution_id=institution.id,
                      config={"auth": clean_auth, "environment": clean_env}, config_secrets=encrypt_json(secrets),
                      target={"institution": institution.slug}, max_unavailable=1, gate_seconds=0,
                      state="running", created_by=user.email)
    for index, wave in enumerate(releases.plan_waves(hubs)):
        for hub in wave:
            rollout.hubs.append(RolloutHub(hub_id=hub.id, wave=index))
    db.session.add(rollout)
    db.session.flush()
    audit(user.email, "institution.config.rollout", institution.slug, institution.id, rollout=rollout.id,
          changed=_changed(institution, clean_auth, clean_env, secrets), hubs=[h.slug for h in hubs],
          first=rollout_order(rollout)[0])
    db.session.commit()
    return rollout


def planned_order(institution: Institution) -> list[str]:
    """The slugs of the institution's live hubs in the order an Apply now would take them (canary first)."""
    return [hub.slug for wave in releases.plan_waves(live_hubs(institution)) for hub in wave]


def rollout_order(rollout: Rollout) -> list[str]:
    """The slugs of a rollout's hubs in the order they take the change."""
    return [item.hub.slug for item in sorted(rollout.hubs, key=lambda i: (i.wave, i.id))]


def _changed(institution: Institution, auth: dict, environment: dict, secrets: dict) -> list[str]:
    """Names of what differs between the institution's stored config and this one (secret names, no values)."""
    before = current_config(institution)
    old_secrets = decrypt_json(institution.auth_secrets)
    changed = sorted(k for k in set(before["auth"]) | set(auth) if before["auth"].get(k) != auth.get(k))
    changed += sorted(f"environment.{k}" for k in set(before["environment"]) | set(environment)
                      if before["environment"].get(k) != environment.get(k))
    changed += sorted(k for k in set(secrets) | set(old_secrets) if secrets.get(k) != old_secrets.get(k))
    return changed


def _adopt(institution: Institution, auth: dict, environment: dict, secrets: dict, actor: str, **detail) -> None:
    """Make ``auth``/``environment``/``secrets`` the institution's stored config, audited; no commit."""
    changed = _changed(institution, auth, environment, secrets)
    institution.auth = auth
    institution.environment = environment
    institution.auth_secrets = encrypt_json(secrets)
    institution.config_updated_at = utcnow()
    audit(actor, "institution.config", institution.slug, institution.id, changed=changed,
          authenticator_class=auth["authenticator_class"], **detail)


def _clear_draft(institution: Institution, user_id: int | None, applied_at=None) -> None:
    """Delete the user's draft; with ``applied_at``, only if it was not edited since (edits made after Apply, for a
    next change, are kept)."""
    query = db.select(ConfigDraft).where(ConfigDraft.institution_id == institution.id,
                                         ConfigDraft.user_id == user_id)
    for draft in db.session.execute(query).scalars():
        if applied_at is None or draft.updated_at is None or draft.updated_at <= applied_at:
            db.session.delete(draft)


def finish_config_rollout(rollout: Rollout) -> None:
    """Every hub took a config rollout: the institution's stored config (auth, secrets, environment) becomes the
    rollout's, the hubs' pointers are cleared (they now render the same config from the institution), the
    change is audited, and the draft of the admin who applied it is cleared if it still holds that config.

    Called by the rollout driver once, when the rollout is done; the caller commits.
    """
    institution = rollout.institution
    config = rollout.config or {}
    _adopt(institution, config["auth"], config["environment"], decrypt_json(rollout.config_secrets),
           rollout.created_by, rollout=rollout.id)
    for hub in db.session.execute(db.select(Hub).where(Hub.institution_id == institution.id)).unique().scalars():
        # also a pointer to an older, abandoned rollout (a hub this one skipped): the institution's config is this
        # one now, which such a hub takes on its next start like any hub the rollout skipped
        if "config_rollout" in (hub.spec or {}):
            hub.spec = {k: v for k, v in hub.spec.items() if k != "config_rollout"}
    author = db.session.execute(db.select(User.id).filter_by(email=rollout.created_by)).scalar_one_or_none()
    if author is not None:
        _clear_draft(institution, author, rollout.created_at)


def set_policy(user: User, institution: Institution, data: Any) -> dict[str, Any]:
    """Replace the institution's policy (policy.set; missing fields take defaults). Commits.

    A policy below what the institution's config already sets is saved all the same (the operator decides); the
    audit records which settings exceed it, :func:`policy_conflicts` says so to people."""
    require(user, "policy.set", institution)
    clean, errors = validate_policy(data if isinstance(data, dict) else None)
    if errors:
        raise FieldErrors({f"policy.{k}" if k != "policy" else k: v for k, v in errors.items()})
    before = policy_of(institution)
    institution.policy = clean
    audit(user.email, "institution.policy", institution.slug, institution.id,
          changed={k: [before.get(k), v] for k, v in clean.items() if before.get(k) != v},
          **({"exceeded_by_config": sorted(conflicts)} if (conflicts := policy_conflicts(institution)) else {}))
    db.session.commit()
    return clean


def policy_conflicts(institution: Institution, policy: dict[str, Any] | None = None) -> dict[str, str]:
    """What of the institution's stored config ``policy`` (default: its own) no longer allows, by field
    ("environment.cpu_limit": "At most 1 CPUs per user ..."); empty when everything fits.

    A policy may be lowered below what the institution runs: its hubs keep running as they are, and its next config
    change must fit (:func:`apply` checks against the policy of the moment).  This says what that change must fix.
    """
    policy = {**DEFAULT_POLICY, **(policy if policy is not None else institution.policy or {})}
    config = current_config(institution)
    _, errors = validate_environment(config["environment"], policy)
    conflicts = {f"environment.{k}": v for k, v in errors.items()}
    auth = config["auth"]
    if auth.get("authenticator_class") == "dummy" and not policy["open_login_allowed"]:
        conflicts["auth.authenticator_class"] = "The demo login is no longer allowed."
    if len(auth.get("allowed_users") or []) > policy["max_users"]:
        conflicts["auth.allowed_users"] = (f"{len(auth['allowed_users'])} allowed users, above the "
                                           f"{policy['max_users']} allowed.")
    return conflicts


def live_hubs(institution: Institution) -> list[Hub]:
    return list(db.session.execute(
        db.select(Hub).where(Hub.institution_id == institution.id, Hub.state != "deleted",
                             Hub.desired == "running").order_by(Hub.slug)).unique().scalars())


class _ReadableDumper(yaml.SafeDumper):
    """YAML for people: a multi-line string (a hub's extra config code) as a literal block, not one escaped line."""


_ReadableDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def readable_yaml(documents: list[Any]) -> str:
    """``documents`` as one YAML stream, keys in their order, long strings as blocks."""
    return yaml.dump_all(documents, Dumper=_ReadableDumper, sort_keys=False, width=120)


# -- what a hub runs ----------------------------------------------------------------------------------------------

def rollout_layer(rollout: Rollout) -> dict[str, Any]:
    """A config rollout's institution layer: {"auth", "environment", "secrets"} (secrets decrypted)."""
    return {"auth": rollout.config["auth"], "environment": rollout.config["environment"],
            "secrets": decrypt_json(rollout.config_secrets)}


def institution_layer_of(hub: Hub) -> dict[str, Any]:
    """The institution layer a hub runs: the config rollout its spec points at (``spec["config_rollout"]``, set while
    a rollout is taking it there), otherwise the institution's stored config."""
    rollout_id = (hub.spec or {}).get("config_rollout")
    rollout = db.session.get(Rollout, rollout_id) if rollout_id else None
    if rollout is not None and rollout.config:
        return rollout_layer(rollout)
    institution = hub.institution
    return {"auth": institution.auth or None, "environment": institution.environment or {},
            "secrets": decrypt_json(institution.auth_secrets)}


def effective(hub: Hub, institution_layer: dict | None = None) -> tuple[dict, dict]:
    """(effective config, secrets) of a hub: release ⊕ cluster ⊕ institution (or ``institution_layer``) ⊕ hub."""
    layer = institution_layer if institution_layer is not None else institution_layer_of(hub)
    release_env = ((hub.release.config or {}).get("environment") or {}) if hub.release else {}
    release_layer = {**RELEASE_DEFAULTS, "environment": deep_merge(RELEASE_DEFAULTS["environment"], release_env)}
    config = layered(release_layer, (hub.cluster.settings or {}).get("defaults"),
                     {"auth": layer["auth"], "environment": layer["environment"]}, (hub.spec or {}).get("overrides"))
    secrets = layer["secrets"] if layer["auth"] else {}
    if config["auth"].get("authenticator_class") == CLOSED and (hub.spec or {}).get("first_admin"):
        config["auth"]["first_admin"] = hub.spec["first_admin"]  # gone once the institution configures a login
    if config["auth"].get("authenticator_class") == FEDERATED and hub.id is not None:
        # the hub's own client at the console's OpenID provider
        config["auth"]["federation"], secrets = federation.hub_login(hub)
    return config, secrets


def hub_spec(hub: Hub, rollout: Rollout | None = None) -> HubSpec:
    """What the backend gets: the hub's effective config rendered for its backend's target, its secrets apart.

    The institution layer is the one the hub runs (:func:`institution_layer_of`), or ``rollout``'s config when
    given (what the hub would get by taking it).  The hub's release adds its JupyterHub version (local hubs: its own
    JupyterHub settings on top; Kubernetes hubs: its chart version and hub image).
    """
    release = hub.release
    target = target_of(hub)
    rendered = render(hub, target, masked=False,
                      institution_layer=rollout_layer(rollout) if rollout is not None else None)
    if release is not None and target == "local":
        rendered = deep_merge(rendered, (release.config or {}).get("jupyterhub") or {})
    config, secrets = split_secrets(rendered)
    return HubSpec(slug=hub.slug, institution=hub.institution.slug, release=release.name if release else "default",
                   jupyterhub_version=release.jupyterhub_version if release else None, config=config,
                   secrets=secrets, uid=str(hub.id) if hub.id is not None else "",
                   chart_version=release.chart_version if release else "",
                   hub_image=release.hub_image if release else "",
                   policy={**DEFAULT_POLICY, **(hub.institution.policy or {})})


def target_of(hub: Hub) -> str:
    """How the hub's config is rendered: its backend's ``render_target`` ("local" or "z2jh")."""
    return backend_class(hub.cluster.backend).render_target


def render(hub: Hub, target: str, masked: bool = True, institution_layer: dict | None = None,
           mask_label: str = MASK) -> dict[str, Any]:
    """The hub's rendered config for ``target`` ('local' or 'z2jh'); secrets masked unless ``masked`` is False."""
    if target not in TARGETS:
        raise BadRequest(f"target must be one of {', '.join(TARGETS)}")
    config, secrets = effective(hub, institution_layer)
    rendered = render_local(config, secrets) if target == "local" else render_z2jh(config, secrets, hub.url)
    return mask_secrets(rendered, mask_label) if masked else rendered


class HubPreview(NamedTuple):
    hub: Hub
    diff: str  # unified diff of the rendered config, now vs. after; "" when the change leaves the hub as it is
    backend: str  # the hub's cluster backend, which decides what it applies
    unapplied: list[str]  # settings of its environment after the change that its backend does not apply
    batch_scripts: list = []  # hubs on Slurm: per profile, the job options and batch script (slurm_view.ProfileScript)


def _yaml(rendered: dict[str, Any]) -> str:
    """A rendered config as YAML for people to compare: keys sorted, names in their own letters (not escapes)."""
    return yaml.safe_dump(rendered, sort_keys=True, allow_unicode=True)


def preview(user: User, institution: Institution, auth: Any, environment: Any, new_secrets: dict[str, str]
            ) -> list[HubPreview]:
    """Per live hub, a unified diff of its rendered config (secrets masked) now vs. with the change applied, and
    the settings its backend leaves out (a local hub runs no containers: ``tenants.render.unapplied``), since the
    diff alone would not show them: they are simply not rendered.

    Validates first: raises FieldErrors exactly as :func:`apply` would.  Changes nothing.
    """
    require(user, "config.edit", institution)
    draft_auth, secrets, draft_env = _validate(institution, auth, environment, new_secrets)
    stored = decrypt_json(institution.auth_secrets)
    proposed = {"auth": draft_auth, "environment": draft_env, "secrets": secrets}
    diffs = []
    for hub in live_hubs(institution):
        target = target_of(hub)
        now = _yaml(render(hub, target))
        changed_label = MASK + " (changed)" if new_secrets and any(stored.get(k) != v for k, v in
                                                                  new_secrets.items()) else MASK
        then = _yaml(render(hub, target, institution_layer=proposed, mask_label=changed_label))
        diff = "".join(difflib.unified_diff(now.splitlines(True), then.splitlines(True),
                                            f"{hub.slug} ({target}) now", f"{hub.slug} ({target}) after"))
        after = effective(hub, proposed)[0]["environment"]
        scripts = slurm_view.batch_scripts(hub, after)
        left_out = [label for label in unapplied(target, after) if not (scripts and label == "profiles")]
        diffs.append(HubPreview(hub, diff, hub.cluster.backend, left_out, scripts))
    return diffs


# -- drafts ---------------------------------------------------------------------------------------------------------

def draft_of(user: User, institution: Institution) -> ConfigDraft | None:
    return db.session.execute(db.select(ConfigDraft).filter_by(institution_id=institution.id, user_id=user.id)
                              ).scalar_one_or_none()


def save_draft(user: User, institution: Institution, auth: dict, environment: dict,
               typed_secrets: dict[str, str]) -> ConfigDraft:
    """Keep what the user typed (new secrets encrypted) until they apply or discard it. Commits."""
    require(user, "config.edit", institution)
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
