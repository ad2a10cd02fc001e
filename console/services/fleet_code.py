"""The fleet as code: one document for institutions, releases and hubs; a plan of what applying it changes; apply.

:func:`export_document` writes the fleet as the console wants it (version 1, keys and lists sorted, so the same fleet
gives the same bytes).  :func:`plan` validates a document entirely before anything else (every error as a field path,
``institutions[2].policy.max_cpu``; nothing changed) and lists what applying it would create, change and delete,
with the before and after of each changed field.  :func:`apply` refuses when the fleet changed since the plan (the
plan's digest is the digest of the export it was made against), then applies through the same services the pages
use, in a safe order: institutions, releases, hubs, then deletions.

What "delete" means per kind (an item of the fleet that the document leaves out):

- an institution is never deleted: its people, audit trail and archives outlive any document, so leaving one out is
  a field error;
- a hub is deleted as its page deletes it: the deletion is queued (``hubs.delete_hub``);
- a release is deleted when no hub runs or ran it and no rollout names it (``releases.delete_release``); otherwise
  leaving it out is a field error (keep it, with ``"retracted": true`` to stop offering it);
- a blackout window is deleted by leaving it out of its institution's list.

Secrets are never in a document: a secret field of an institution's login holds a reference, ``{"secret":
"stored"}`` (keep the value the console stores) or ``{"env": "NAME"}`` (the value of the environment variable NAME of
the process that applies it).  An inline value is refused.  A config change goes through the config page's path
(``config.apply``: validated against the document's policy, rolled out hub by hub); while it rolls out, the export
shows the config being rolled out, which is what the console wants.

Every applied change is audited twice: by the service that makes it, as the pages do, and as ``fleet.apply`` by
``apply:<email>``, naming the fields changed (never a value).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from tenants.auth import SECRET_FIELDS
from tenants.layering import RELEASE_DEFAULTS
from tenants.policy import validate_policy
from werkzeug.exceptions import Conflict

from console.crypto import decrypt_json, encrypt_json
from console.extensions import db
from console.lifecycles import RELEASE
from console.models import Hub, Institution, Release, Rollout, RolloutHub, User
from console.permissions import require
from console.services import FieldErrors, audit
from console.services import config as config_service
from console.services import hubs as hub_service
from console.services import institutions as institution_service
from console.services import releases as release_service

VERSION = 1
CREATE, CHANGE, DELETE = "create", "change", "delete"
KINDS = ("institution", "release", "hub")
INSTITUTION_KEYS = ("slug", "name", "policy", "config", "blackouts")
RELEASE_KEYS = ("name", "jupyterhub_version", "channel", "chart_version", "hub_image", "config", "notes",
                "retracted")
RELEASE_FIXED = ("jupyterhub_version", "channel", "chart_version", "hub_image", "config", "notes")
HUB_KEYS = ("slug", "institution", "cluster", "channel", "pinned", "canary", "release")
STORED = {"secret": "stored"}
CHANGED_SECRET = "(changed)"  # how a plan shows a secret that changes: never its value


# -- export ---------------------------------------------------------------------------------------------------------

def _wanted_layer(institution: Institution) -> tuple[dict, dict, dict[str, str]]:
    """(auth, environment, secrets) the console wants for ``institution``: the config rolling out to its hubs while
    one is, else its stored config."""
    rollout = config_service.active_config_rollout(institution)
    if rollout is not None and rollout.config:
        return (dict(rollout.config["auth"]),
                {**RELEASE_DEFAULTS["environment"], **rollout.config["environment"]},
                decrypt_json(rollout.config_secrets))
    current = config_service.current_config(institution)
    return current["auth"], current["environment"], decrypt_json(institution.auth_secrets)


def _config_of(institution: Institution) -> dict[str, Any]:
    auth, environment, secrets = _wanted_layer(institution)
    return {"auth": {**auth, **{name: dict(STORED) for name in sorted(secrets)}}, "environment": environment}


def _release_of(release: Release) -> dict[str, Any]:
    return {"name": release.name, "jupyterhub_version": release.jupyterhub_version, "channel": release.channel,
            "chart_version": release.chart_version or "", "hub_image": release.hub_image or "",
            "config": release.config or {}, "notes": release.notes or "", "retracted": release.state == "retracted"}


def _release_wanted(hub: Hub) -> Release | None:
    """The release the console wants ``hub`` on: the one a release rollout not over yet is taking it to (unless it
    skips the hub), else the one it runs (None: the platform default)."""
    taking = db.session.execute(
        db.select(Release).join(Rollout, Rollout.release_id == Release.id)
        .join(RolloutHub, RolloutHub.rollout_id == Rollout.id)
        .where(Rollout.kind == "release", Rollout.state.in_(("planned", *release_service.ACTIVE)),
               RolloutHub.hub_id == hub.id, RolloutHub.state != "skipped")
        .order_by(Rollout.id.desc()).limit(1)).scalar_one_or_none()
    return taking or hub.release


def _hub_of(hub: Hub) -> dict[str, Any]:
    found = {"slug": hub.slug, "institution": hub.institution.slug, "cluster": hub.cluster.name,
             "channel": hub.channel, "pinned": bool(hub.pinned), "canary": bool(hub.canary)}
    if hub.pinned:
        wanted = _release_wanted(hub)
        found["release"] = wanted.name if wanted else None
    return found


def _live_hubs() -> list[Hub]:
    """Hubs the fleet keeps: not deleted, not being deleted."""
    return list(db.session.execute(db.select(Hub).where(Hub.state != "deleted", Hub.desired != "deleted")
                                   .order_by(Hub.slug)).unique().scalars())


def export_document() -> dict[str, Any]:
    """The fleet as a version-1 document: institutions (name, policy, config with secrets as references, blackout
    windows), releases and hubs, each list sorted by its key.  No secret value, ever.  Reads only."""
    institutions = db.session.execute(db.select(Institution).order_by(Institution.slug)).scalars()
    releases = db.session.execute(db.select(Release).order_by(Release.name)).scalars()
    return {
        "version": VERSION,
        "institutions": [{"slug": i.slug, "name": i.name, "policy": config_service.policy_of(i),
                          "config": _config_of(i), "blackouts": list(i.blackouts or [])} for i in institutions],
        "releases": [_release_of(r) for r in releases],
        "hubs": [_hub_of(h) for h in _live_hubs()],
    }


def dumps(document: dict[str, Any]) -> str:
    """The text ``hubfleet export`` writes: JSON, keys sorted, two-space indents, one final newline.  Pure."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def digest(document: dict[str, Any]) -> str:
    """SHA-256 (hex) of ``document`` as canonical JSON.  Pure."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fleet_digest() -> str:
    """The digest of the fleet as it is now (of :func:`export_document`): what a plan is made against."""
    return digest(export_document())


# -- plan -----------------------------------------------------------------------------------------------------------

@dataclass
class Change:
    """One item the plan creates, changes or deletes; ``fields`` maps each changed field to {"before", "after"}
    (secrets shown as "(stored)"/"(changed)", never a value).  ``work`` is what applying it needs (cleaned)."""

    kind: str
    name: str
    action: str
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    work: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "action": self.action, "fields": self.fields}


@dataclass
class Plan:
    """What applying a document changes, made against the fleet whose export has ``digest``."""

    digest: str
    changes: list[Change]

    @property
    def empty(self) -> bool:
        return not self.changes

    def as_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "changes": [c.as_dict() for c in self.changes],
                "summary": {action: sum(c.action == action for c in self.changes)
                            for action in (CREATE, CHANGE, DELETE)}}


def _path(prefix: str, key: str) -> str:
    """A service's field key under ``prefix``, its list indexes as ``[n]``: ("institutions[0]", "blackouts.1.end")
    -> "institutions[0].blackouts[1].end"."""
    return prefix + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in key.split("."))


class _Errors(dict):
    """Field errors collected over the whole document, by path."""

    def add(self, prefix: str, errors: dict[str, str]) -> None:
        for key, message in errors.items():
            self[_path(prefix, key) if key else prefix] = message


def _shape(errors: _Errors, where: str, item: Any, keys: tuple[str, ...], required: tuple[str, ...]) -> bool:
    """Whether ``item`` is an object of known ``keys`` holding the ``required`` ones as non-empty strings; errors
    added otherwise."""
    if not isinstance(item, dict):
        errors[where] = "Send an object."
        return False
    for key in sorted(set(item) - set(keys)):
        errors[f"{where}.{key}"] = f"Unknown field; use {', '.join(keys)}."
    for key in required:
        if not isinstance(item.get(key), str) or not item[key].strip():
            errors[f"{where}.{key}"] = "Enter text." if key in item else "This field is required."
    return not any(path.startswith(where + ".") or path == where for path in errors)


def _list(errors: _Errors, document: dict, key: str) -> list:
    value = document.get(key, [])
    if not isinstance(value, list):
        errors[key] = "Send a list."
        return []
    return value


def _duplicates(errors: _Errors, items: list, kind: str, key: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        value = item.get(key) if isinstance(item, dict) else None
        if isinstance(value, str):
            if value in seen:
                errors[f"{kind}[{index}].{key}"] = f"{value!r} appears twice in the document."
            seen.add(value)


def _secret_refs(errors: _Errors, where: str, auth: dict) -> tuple[dict, dict[str, str]]:
    """(auth without secret fields, secrets the document sets from the environment); errors for inline values and
    unknown references.  A "stored" reference is left out, which keeps the stored value, as a blank field does on
    the config page."""
    plain, typed = {}, {}
    for key, value in auth.items():
        if key not in SECRET_FIELDS:
            plain[key] = value
            continue
        here = f"{where}.auth.{key}"
        if value == STORED:
            continue
        if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value["env"]):
                errors[here] = "Name an environment variable: letters, digits and underscores."
            elif not os.environ.get(value["env"]):
                errors[here] = f"The environment variable {value['env']} is not set where this is applied."
            else:
                typed[key] = os.environ[value["env"]]
        elif isinstance(value, str):
            errors[here] = ('Secret values are never written in a document: use {"secret": "stored"} (keep the '
                            'stored one) or {"env": "NAME"} (an environment variable of the applying process).')
        else:
            errors[here] = 'Use {"secret": "stored"} or {"env": "NAME"}.'
    return plain, typed


def _institution_change(errors: _Errors, index: int, item: dict, found: Institution | None) -> Change | None:
    """The change ``item`` makes to the institution ``found`` (None: it creates one); errors added instead."""
    where = f"institutions[{index}]"
    slug, name = item["slug"].strip(), item["name"].strip()
    change = Change("institution", slug, CREATE if found is None else CHANGE)
    if found is None:
        if not hub_service.SLUG_RE.match(slug):
            errors[f"{where}.slug"] = f"Use {hub_service.SLUG_RULE}."
        if len(name) > 200:
            errors[f"{where}.name"] = "Use at most 200 characters."
        change.fields["name"] = {"before": None, "after": name}
    elif name != found.name:
        errors[f"{where}.name"] = f"An institution's name does not change here (it is {found.name!r})."
    # policy
    policy, policy_errors = validate_policy(item.get("policy", {}))
    errors.add(f"{where}.policy", {k if k != "policy" else "": v for k, v in policy_errors.items()})
    before_policy = config_service.policy_of(found) if found is not None else validate_policy({})[0]
    if not policy_errors:
        for key in sorted(policy):
            if policy[key] != before_policy.get(key):
                change.fields[f"policy.{key}"] = {"before": before_policy.get(key), "after": policy[key]}
        if any(k.startswith("policy.") for k in change.fields):
            change.work["policy"] = item.get("policy", {})
    # config
    config = item.get("config", {"auth": RELEASE_DEFAULTS["auth"], "environment": RELEASE_DEFAULTS["environment"]})
    exported = _config_of(found) if found is not None else {"auth": dict(RELEASE_DEFAULTS["auth"]),
                                                            "environment": dict(RELEASE_DEFAULTS["environment"])}
    if not isinstance(config, dict) or set(config) != {"auth", "environment"} or \
            not all(isinstance(config[k], dict) for k in ("auth", "environment")):
        errors[f"{where}.config"] = 'Send {"auth": {...}, "environment": {...}}.'
    elif not policy_errors:
        known = len(errors)
        plain, typed = _secret_refs(errors, f"{where}.config", config["auth"])
        policy_changed = any(k.startswith("policy.") for k in change.fields)
        if len(errors) == known and (config != exported or policy_changed):
            _config_change(errors, where, change, found, slug, name, policy, plain, typed, config, exported)
    # blackouts
    try:
        windows = institution_service.clean_blackouts(item.get("blackouts", []))
    except FieldErrors as exc:
        errors.add(where, exc.errors)
    else:
        before = list(found.blackouts or []) if found is not None else []
        if windows != before:
            change.fields["blackouts"] = {"before": before, "after": windows}
            change.work["blackouts"] = windows
    return change if (found is None or change.fields) else None


def _config_change(errors: _Errors, where: str, change: Change, found: Institution | None, slug: str, name: str,
                   policy: dict, plain: dict, typed: dict, config: dict, exported: dict) -> None:
    """Validate the document's config as the config page does, against the document's policy, and record what of
    it changes (secret names, never values)."""
    auth_before, env_before, stored = _wanted_layer(found) if found is not None else (
        dict(RELEASE_DEFAULTS["auth"]), dict(RELEASE_DEFAULTS["environment"]), {})
    # unsaved, never added to the session: it carries the document's policy for the check, and the secrets a
    # "stored" reference keeps
    probe = Institution(slug=slug, name=name, policy=policy, auth=dict(found.auth or {}) if found else {},
                        environment=dict(found.environment or {}) if found else {},
                        auth_secrets=encrypt_json(stored) if stored else "")
    if config == exported:  # only the policy changed: the config must still fit it
        conflicts = config_service.policy_conflicts(probe, policy)
        errors.add(f"{where}.config", {k: f"{v} (the document's policy)" for k, v in conflicts.items()})
        return
    try:
        auth, secrets, environment = config_service.validate(probe, plain, config["environment"], typed)
    except FieldErrors as exc:
        errors.add(f"{where}.config", exc.errors)
        return
    for key in sorted(set(auth_before) | set(auth)):
        if auth_before.get(key) != auth.get(key):
            change.fields[f"config.auth.{key}"] = {"before": auth_before.get(key), "after": auth.get(key)}
    for key in sorted(set(env_before) | set(environment)):
        if env_before.get(key) != environment.get(key):
            change.fields[f"config.environment.{key}"] = {"before": env_before.get(key),
                                                          "after": environment.get(key)}
    for key in sorted(set(stored) | set(secrets)):
        if stored.get(key) != secrets.get(key):
            change.fields[f"config.auth.{key}"] = {"before": "(stored)" if key in stored else None,
                                                   "after": CHANGED_SECRET if key in secrets else None}
    if not any(k.startswith("config.") for k in change.fields):
        return  # the same config, written another way
    busy = config_service.active_config_rollout(found) if found is not None else None
    if busy is not None:
        errors[f"{where}.config"] = (f"A configuration change is still rolling out to {found.slug}'s hubs (rollout "
                                     f"{busy.id}); change it again when that has ended.")
        return
    change.work["config"] = {"auth": plain, "environment": config["environment"], "typed": typed}


def _release_change(errors: _Errors, index: int, item: dict, found: Release | None) -> Change | None:
    where = f"releases[{index}]"
    name = item["name"].strip()
    retracted = item.get("retracted", False)
    if not isinstance(retracted, bool):
        errors[f"{where}.retracted"] = "Use true or false."
        return None
    if found is None:
        if retracted:
            errors[f"{where}.retracted"] = "A new release is published to be used: publish it, retract it later."
        data = {k: item[k] for k in RELEASE_KEYS if k in item and k != "retracted"}
        try:
            release_service.validate_release(data)
        except FieldErrors as exc:
            errors.add(where, exc.errors)
            return None
        return Change("release", name, CREATE, {k: {"before": None, "after": v} for k, v in sorted(data.items())
                                                if k != "name"}, {"data": data})
    current = _release_of(found)
    for key in RELEASE_FIXED:
        if key in item and item[key] != current[key]:
            errors[f"{where}.{key}"] = ("A published release does not change (hubs run it as it was): publish a "
                                        "new one under another name.")
    if retracted == current["retracted"]:
        return None
    if not retracted:
        errors[f"{where}.retracted"] = "A retracted release is not offered again: publish a new one."
        return None
    if not RELEASE.allows(found.state, "retract"):
        errors[f"{where}.retracted"] = f"Release {found.name}: {RELEASE.refusal(found.state, 'retract')}"
        return None
    return Change("release", name, CHANGE, {"retracted": {"before": False, "after": True}}, {"retract": True})


def _hub_change(user: User, errors: _Errors, index: int, item: dict, found: Hub | None, new_institutions: set[str]
                ) -> Change | None:
    where = f"hubs[{index}]"
    slug = item["slug"].strip()
    settings = {"channel": item.get("channel", "stable"), "pinned": item.get("pinned", False),
                "canary": item.get("canary", False)}
    if settings["channel"] not in release_service.CHANNELS:
        errors[f"{where}.channel"] = f"Choose {' or '.join(release_service.CHANNELS)}."
    for key in ("pinned", "canary"):
        if not isinstance(settings[key], bool):
            errors[f"{where}.{key}"] = "Use true or false."
    if "release" in item and not settings["pinned"]:
        errors[f"{where}.release"] = "Only a pinned hub names its release; others follow their channel."
    if found is None:
        try:
            new = hub_service.validate_new_hub(user, slug, item["institution"], item["cluster"])
            release = new.release
        except FieldErrors as exc:
            kept = {k: v for k, v in exc.errors.items()
                    if not (k == "institution" and item["institution"].strip() in new_institutions)}
            errors.add(where, kept)
            release = release_service.newest_release("stable")
        if settings["pinned"] and "release" in item and item["release"] != (release.name if release else None):
            errors[f"{where}.release"] = (f"A new hub starts on {release.name if release else 'the platform default'}"
                                          "; a rollout takes it to another release.")
        fields = {"institution": {"before": None, "after": item["institution"]},
                  "cluster": {"before": None, "after": item["cluster"]}}
        fields.update({k: {"before": None, "after": v} for k, v in settings.items()})
        return Change("hub", slug, CREATE, fields, {"institution": item["institution"].strip(),
                                                    "cluster": item["cluster"].strip(), "settings": settings})
    if item["institution"] != found.institution.slug:
        errors[f"{where}.institution"] = (f"A hub does not move (it belongs to {found.institution.slug}): delete it "
                                          "and create another.")
    if item["cluster"] != found.cluster.name:
        errors[f"{where}.cluster"] = (f"A hub does not move (it runs on {found.cluster.name}): delete it and "
                                      "create another.")
    current = {"channel": found.channel, "pinned": bool(found.pinned), "canary": bool(found.canary)}
    fields = {k: {"before": current[k], "after": v} for k, v in settings.items() if v != current[k]}
    work: dict[str, Any] = {"settings": settings}
    wanted = _release_wanted(found)
    if settings["pinned"] is True and "release" in item and item["release"] != (wanted.name if wanted else None):
        release = db.session.execute(db.select(Release).filter_by(name=item["release"])).scalar_one_or_none() \
            if isinstance(item["release"], str) else None
        problem = (f"There is no release {item['release']!r} ready now." if release is None
                   else release_service.usable_problem(release) or release_service.unfit(found, release))
        if wanted is not found.release:
            problem = (f"A rollout is taking this hub to {wanted.name}: let it finish, or abort it, before naming "
                       "another release.")
        if problem:
            errors[f"{where}.release"] = problem
        else:
            fields["release"] = {"before": wanted.name if wanted else None, "after": release.name}
            work["release"] = release.name
    return Change("hub", slug, CHANGE, fields, work) if fields else None


def plan(user: User, document: Any) -> Plan:
    """Validate ``document`` and list what applying it would create, change and delete (institutions, releases,
    hubs, in that order; deletions last), made against the fleet as it is now (``Plan.digest``).

    Raises FieldErrors with every error of the document by path (``hubs[3].cluster``); PermissionDenied without
    fleet.apply.  Changes nothing.
    """
    require(user, "fleet.apply")
    errors = _Errors()
    if not isinstance(document, dict):
        raise FieldErrors({"document": "Send a fleet document: an object with version, institutions, releases "
                                       "and hubs."})
    for key in sorted(set(document) - {"version", "institutions", "releases", "hubs"}):
        errors[key] = "Unknown field; use version, institutions, releases, hubs."
    if document.get("version") != VERSION:
        errors["version"] = f"This console reads version {VERSION} documents."
    items = {key: _list(errors, document, key) for key in ("institutions", "releases", "hubs")}
    shaped = {
        "institutions": [_shape(errors, f"institutions[{i}]", x, INSTITUTION_KEYS, ("slug", "name"))
                         for i, x in enumerate(items["institutions"])],
        "releases": [_shape(errors, f"releases[{i}]", x, RELEASE_KEYS, ("name", "jupyterhub_version"))
                     for i, x in enumerate(items["releases"])],
        "hubs": [_shape(errors, f"hubs[{i}]", x, HUB_KEYS, ("slug", "institution", "cluster"))
                 for i, x in enumerate(items["hubs"])],
    }
    _duplicates(errors, items["institutions"], "institutions", "slug")
    _duplicates(errors, items["releases"], "releases", "name")
    _duplicates(errors, items["hubs"], "hubs", "slug")
    changes: list[Change] = []
    deletions: list[Change] = []

    institutions = {i.slug: i for i in db.session.execute(db.select(Institution)).scalars()}
    named = {x["slug"].strip() for x, ok in zip(items["institutions"], shaped["institutions"]) if ok}
    for index, (item, ok) in enumerate(zip(items["institutions"], shaped["institutions"])):
        if ok and (change := _institution_change(errors, index, item, institutions.get(item["slug"].strip()))):
            changes.append(change)
    for slug in sorted(set(institutions) - named):
        errors[f"institutions.{slug}"] = (f"{institutions[slug].name} ({slug}) is not in the document: institutions "
                                          "are never deleted by applying one (their people and audit trail stay).")

    releases = {r.name: r for r in db.session.execute(db.select(Release)).scalars()}
    listed = set()
    for index, (item, ok) in enumerate(zip(items["releases"], shaped["releases"])):
        if ok:
            listed.add(item["name"].strip())
            if change := _release_change(errors, index, item, releases.get(item["name"].strip())):
                changes.append(change)
    for name in sorted(set(releases) - listed):
        usage = release_service.usage(releases[name])
        if usage["ran"] or usage["rollouts"] or not RELEASE.allows(releases[name].state, "delete"):
            errors[f"releases.{name}"] = (f"Release {name} is not in the document but cannot be deleted (hubs run or "
                                          "ran it, a rollout names it, or it is still preparing): keep it, with "
                                          '"retracted": true to stop offering it.')
        else:
            deletions.append(Change("release", name, DELETE))

    hubs = {h.slug: h for h in _live_hubs()}
    new_institutions = named - set(institutions)
    kept = set()
    for index, (item, ok) in enumerate(zip(items["hubs"], shaped["hubs"])):
        if ok:
            kept.add(item["slug"].strip())
            if change := _hub_change(user, errors, index, item, hubs.get(item["slug"].strip()), new_institutions):
                changes.append(change)
    deletions = [Change("hub", slug, DELETE, {}, {}) for slug in sorted(set(hubs) - kept)] + deletions
    if errors:
        raise FieldErrors(dict(sorted(errors.items())))
    order = {kind: n for n, kind in enumerate(KINDS)}
    changes.sort(key=lambda c: (order[c.kind], c.name))
    return Plan(digest=fleet_digest(), changes=changes + deletions)


# -- apply ----------------------------------------------------------------------------------------------------------

@dataclass
class Applied:
    """What :func:`apply` did: the changes applied, the operations it queued (hub creations and deletions) and
    the first admin of each hub created for an institution without a login (shown this once, never stored)."""

    changes: list[Change]
    operations: list[int]
    first_admins: dict[str, dict[str, str]]
    digest: str

    def as_dict(self) -> dict[str, Any]:
        return {"applied": [c.as_dict() for c in self.changes], "operations": self.operations,
                "first_admins": self.first_admins, "digest": self.digest}


def apply(user: User, document: Any, plan_digest: Any) -> Applied:
    """Apply ``document`` as planned against the fleet whose export digest is ``plan_digest``.

    Raises Conflict when the fleet changed since that plan (plan again), and whatever :func:`plan` raises (nothing
    changed).  Then each change goes through its service, which commits it: institutions (created, then policy,
    config, blackouts), releases, hubs, then hub and release deletions.  A service refusing half-way (a config
    rollout started meanwhile) stops there with its error; what was applied before stays, and a new plan lists the
    rest.
    """
    require(user, "fleet.apply")
    if not isinstance(plan_digest, str) or plan_digest != fleet_digest():
        raise Conflict("The fleet changed since this plan was made: plan again, check it, then apply.")
    planned = plan(user, document)
    actor = f"apply:{user.email}"
    done, ops, first_admins = [], [], {}
    for change in planned.changes:
        institution_id = _apply_change(user, change, ops, first_admins)
        audit(actor, "fleet.apply", f"{change.kind} {change.name}", institution_id, change=change.action,
              fields=sorted(change.fields), plan=planned.digest)
        db.session.commit()
        done.append(change)
    return Applied(done, ops, first_admins, fleet_digest())


def _institution(slug: str) -> Institution:
    return db.session.execute(db.select(Institution).filter_by(slug=slug)).scalar_one()


def _hub(slug: str) -> Hub:
    return db.session.execute(db.select(Hub).where(Hub.slug == slug, Hub.state != "deleted")).unique().scalar_one()


def _apply_change(user: User, change: Change, ops: list[int], first_admins: dict) -> int | None:
    """Make one change through its service; returns the institution it belongs to (for the audit), if any."""
    work = change.work
    if change.kind == "institution":
        institution = (institution_service.create_institution(user, change.name, change.fields["name"]["after"])
                       if change.action == CREATE else _institution(change.name))
        if "policy" in work:
            config_service.set_policy(user, institution, work["policy"])
        if "config" in work:
            config = work["config"]
            config_service.apply(user, institution, config["auth"], config["environment"], config["typed"])
        if "blackouts" in work:
            institution_service.set_blackouts(user, institution, work["blackouts"])
        return institution.id
    if change.kind == "release":
        if change.action == CREATE:
            release_service.create_release(user, work["data"])
        elif change.action == CHANGE:
            release_service.retract_release(user, release_service.get_release(change.name))
        else:
            release_service.delete_release(user, release_service.get_release(change.name))
        return None
    if change.action == CREATE:
        op = hub_service.create_hub(user, change.name, work["institution"], work["cluster"])
        ops.append(op.id)
        if op.first_admin:
            first_admins[change.name] = dict(zip(("username", "password"), op.first_admin))
        hub = op.hub
        if work["settings"] != {"channel": hub.channel, "pinned": bool(hub.pinned), "canary": bool(hub.canary)}:
            hub_service.set_release_policy(user, hub, **work["settings"])
        return hub.institution_id
    hub = _hub(change.name)
    if change.action == CHANGE:
        hub_service.set_release_policy(user, hub, **work["settings"])
        if "release" in work:
            # as the Releases page moves a hub: a rollout of one hub, with its backup, health gate and rollback
            release_service.create_rollout(user, release_service.get_release(work["release"]),
                                           {"hubs": [hub.slug]}, start=True)
    else:
        ops.append(hub_service.delete_hub(user, hub).id)
    return hub.institution_id
