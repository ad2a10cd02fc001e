"""Platform releases and their rollouts: waves, health gates, automatic halt and rollback, blackout windows."""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from werkzeug.exceptions import Conflict, Forbidden

from console.extensions import db
from console.models import Hub, Institution, Operation, Release, Rollout, RolloutHub, User, utcnow
from console.services import FieldErrors, audit, operations

VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?([a-z0-9.+-]*)$")
CHANNELS = ("stable", "beta")
ACTIVE = ("running", "paused")
SYSTEM = "hubfleet-rollout"


def _operator(user: User) -> None:
    if not user.is_operator:
        raise Forbidden("only operators manage releases")


def create_release(user: User, data: dict[str, Any]) -> Release:
    """Publish a release; FieldErrors (nothing written) for bad input. Commits."""
    _operator(user)
    errors = {}
    name = str(data.get("name") or "").strip()
    version = str(data.get("jupyterhub_version") or "").strip()
    channel = str(data.get("channel") or "stable").strip()
    config = data.get("config") or {}
    if not re.match(r"^[a-z0-9][a-z0-9.-]{0,61}$", name):
        errors["name"] = "Use up to 62 lower-case letters, digits, dots and hyphens."
    elif db.session.execute(db.select(Release.id).filter_by(name=name)).first():
        errors["name"] = f"A release named {name!r} exists already."
    if not VERSION_RE.match(version):
        errors["jupyterhub_version"] = "Enter a JupyterHub version such as 5.4.6."
    if channel not in CHANNELS:
        errors["channel"] = f"Choose one of {', '.join(CHANNELS)}."
    if not isinstance(config, dict) or set(config) - {"environment", "jupyterhub"}:
        errors["config"] = 'An object with "environment" and/or "jupyterhub" (traitlets sections).'
    if errors:
        raise FieldErrors(errors)
    release = Release(name=name, jupyterhub_version=version, channel=channel, config=config,
                      chart_version=str(data.get("chart_version") or ""), hub_image=str(data.get("hub_image") or ""),
                      notes=str(data.get("notes") or ""))
    db.session.add(release)
    audit(user.email, "release.create", name, version=version, channel=channel)
    db.session.commit()
    return release


# -- planning -------------------------------------------------------------------------------------------------------

def _targets(target: dict[str, Any]) -> list[Hub]:
    query = db.select(Hub).where(Hub.state != "deleted", Hub.desired == "running").order_by(Hub.slug)
    if "hubs" in target:
        query = query.where(Hub.slug.in_(target["hubs"]))
    if "institution" in target:
        query = query.join(Hub.institution).where(Institution.slug == target["institution"])
    if "channel" in target:
        query = query.where(Hub.channel == target["channel"], Hub.pinned.is_(False))
    return list(db.session.execute(query).unique().scalars())


def plan_waves(hubs: list[Hub], waves: int = 4) -> list[list[Hub]]:
    """Canaries first (the first hub when none is marked), then the rest in ``waves - 1`` batches, each twice the
    size of the one before. Pure."""
    canaries = [h for h in hubs if h.canary] or hubs[:1]
    chosen = {id(h) for h in canaries}
    rest = [h for h in hubs if id(h) not in chosen]
    batches = max(1, min(waves - 1, len(rest)))
    weights = [2 ** k for k in range(batches)]
    sizes, given = [], 0
    for k, weight in enumerate(weights):
        size = len(rest) - given if k == batches - 1 else max(1, round(len(rest) * weight / sum(weights)))
        sizes.append(size)
        given += size
    planned, start = [canaries], 0
    for size in sizes:
        planned.append(rest[start:start + size])
        start += size
    return [w for w in planned if w]


def in_blackout(institution: Institution, now: datetime) -> dict | None:
    """The blackout window covering ``now``, if any."""
    for window in institution.blackouts or []:
        try:
            start, end = datetime.fromisoformat(window["start"]), datetime.fromisoformat(window["end"])
        except (KeyError, TypeError, ValueError):
            continue
        if start.tzinfo:
            start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
        if start <= now < end:
            return window
    return None


def create_rollout(user: User, release: Release, target: dict[str, Any], max_unavailable: int = 1,
                   gate_seconds: int = 30, synthetic_check: bool = False, waves: int = 4,
                   start: bool = False) -> Rollout:
    """Plan a rollout of ``release`` to the target hubs (shown before it starts). Commits."""
    _operator(user)
    errors = {}
    if not isinstance(target, dict) or len(set(target) & {"channel", "institution", "hubs"}) != 1 or \
            set(target) - {"channel", "institution", "hubs"}:
        errors["target"] = 'Name one of "channel", "institution" or "hubs".'
    if not isinstance(max_unavailable, int) or max_unavailable < 1:
        errors["max_unavailable"] = "Use 1 or more."
    if not isinstance(gate_seconds, int) or gate_seconds < 0:
        errors["gate_seconds"] = "Use 0 or more seconds."
    if not isinstance(waves, int) or not 1 <= waves <= 20:
        errors["waves"] = "Use 1 to 20 waves."
    hubs = _targets(target) if not errors else []
    hubs = [h for h in hubs if h.release_id != release.id]
    if not errors and not hubs:
        errors["target"] = "No hub there needs this release."
    if errors:
        raise FieldErrors(errors)
    rollout = Rollout(release=release, target=target, max_unavailable=max_unavailable, gate_seconds=gate_seconds,
                      synthetic_check=synthetic_check, created_by=user.email, state="planned")
    for index, wave in enumerate(plan_waves(hubs, waves)):
        for hub in wave:
            rollout.hubs.append(RolloutHub(hub_id=hub.id, wave=index))
    db.session.add(rollout)
    audit(user.email, "rollout.plan", release.name, selection=target, hubs=len(hubs))
    db.session.commit()
    if start:
        control(user, rollout, "start")
    return rollout


def control(user: User, rollout: Rollout, action: str) -> Rollout:
    """start, pause, resume or abort. Commits."""
    _operator(user)
    moves = {"start": ("planned",), "pause": ("running",), "resume": ("paused",), "abort": ("planned", *ACTIVE)}
    if action not in moves:
        raise FieldErrors({"action": f"Choose one of {', '.join(moves)}."})
    if rollout.state not in moves[action]:
        raise Conflict(f"a {rollout.state} rollout cannot {action}")
    rollout.state = {"start": "running", "pause": "paused", "resume": "running", "abort": "aborted"}[action]
    if action == "abort":
        rollout.finished_at = utcnow()
    audit(user.email, f"rollout.{action}", rollout.release.name, rollout=rollout.id)
    db.session.commit()
    return rollout


# -- driving --------------------------------------------------------------------------------------------------------

GATE_TIMEOUT = timedelta(minutes=5)  # an upgraded hub not healthy (or not checked) by then fails its gate


def advance(now: datetime | None = None) -> None:
    """One step of every running rollout; level-triggered, so a restarted worker picks up where it was."""
    now = now or utcnow()
    # On PostgreSQL each rollout row is locked for the step, so two workers never drive the same rollout at once.
    query = db.select(Rollout).where(Rollout.state.in_(("running", "halted"))).with_for_update(skip_locked=True,
                                                                                               of=Rollout)
    for rollout in db.session.execute(query).unique().scalars():
        _finish_ops(rollout)
        if rollout.state == "running":
            _advance(rollout, now)
    db.session.commit()


def _finish_ops(rollout: Rollout) -> None:
    for item in rollout.hubs:
        op = db.session.get(Operation, item.operation_id) if item.operation_id else None
        if op is None or not op.terminal:
            continue
        if item.state == "upgrading":
            if op.outcome == "succeeded":
                item.state = "upgraded"
            else:
                item.state = "rolled_back" if op.outcome == "rolled_back" else "failed"
                item.note = op.error
        elif item.state == "rolling_back":
            item.state = "rolled_back" if op.state == "succeeded" else "failed"
            item.note = f"{item.note}; rollback {'done' if op.state == 'succeeded' else 'failed: ' + op.error}"


def _halt(rollout: Rollout, item: RolloutHub, reason: str, now: datetime) -> None:
    rollout.state, rollout.finished_at, rollout.reason = "halted", now, f"{item.hub.slug}: {reason}"
    audit(SYSTEM, "rollout.halt", rollout.release.name, rollout=rollout.id, hub=item.hub.slug, reason=reason)


def _roll_back(rollout: Rollout, item: RolloutHub, reason: str, now: datetime) -> None:
    op = operations.enqueue(item.hub, "rollback", SYSTEM)
    db.session.flush()
    item.state, item.operation_id, item.note = "rolling_back", op.id, reason
    _halt(rollout, item, reason, now)


def _healthy_since(item: RolloutHub) -> datetime:
    """When the hub was last seen turning healthy, counted from no earlier than the end of its upgrade."""
    upgraded_at = db.session.get(Operation, item.operation_id).finished_at
    return max(item.hub.health_since or upgraded_at, upgraded_at)


def _advance(rollout: Rollout, now: datetime) -> None:
    broken = [i for i in rollout.hubs if i.state in ("failed", "rolled_back", "rolling_back")]
    if broken:
        return _halt(rollout, broken[0], broken[0].note, now)
    # this wave, and any hub of an earlier one still waiting for its blackout to end
    wave = [i for i in rollout.hubs if i.wave == rollout.current_wave or
            (i.wave < rollout.current_wave and i.state in ("pending", "deferred", "upgrading"))]
    for item in wave:
        if item.state in ("pending", "deferred"):
            window = in_blackout(item.hub.institution, now)
            item.state = "deferred" if window else "pending"
            item.note = f"blackout until {window['end']}" if window else ""
    busy = [i for i in wave if i.state == "upgrading"]
    for item in [i for i in wave if i.state == "pending"][:max(0, rollout.max_unavailable - len(busy))]:
        hub = item.hub
        op = operations.enqueue(hub, "upgrade", SYSTEM)
        hub.spec = {**(hub.spec or {}), "upgrade_to": rollout.release_id, "rollout": rollout.id}
        db.session.flush()
        item.state, item.operation_id = "upgrading", op.id
        audit(SYSTEM, "rollout.upgrade", hub.slug, hub.institution_id, release=rollout.release.name,
              rollout=rollout.id, wave=rollout.current_wave)
    if any(i.state in ("pending", "upgrading") for i in wave):
        return
    # The health gate: every upgraded hub of the wave healthy for gate_seconds (and passing its synthetic check).
    rollout.gate_started_at = rollout.gate_started_at or now
    upgraded = [i for i in wave if i.state == "upgraded"]
    settled = [i for i in upgraded if i.hub.health == "healthy" and now - _healthy_since(i) >=
               timedelta(seconds=rollout.gate_seconds)]
    if len(settled) < len(upgraded):
        late = [i for i in upgraded if i not in settled]
        if now - rollout.gate_started_at > GATE_TIMEOUT:
            _roll_back(rollout, late[0], f"not healthy {GATE_TIMEOUT.seconds // 60} min after its upgrade "
                                         f"({late[0].hub.health})", now)
        return
    if rollout.synthetic_check:
        for item in upgraded:
            if item.check_operation_id is None:
                check = operations.enqueue(item.hub, "synthetic-check", SYSTEM)
                db.session.flush()
                item.check_operation_id = check.id
        checks = [(i, db.session.get(Operation, i.check_operation_id)) for i in upgraded]
        if any(not op.terminal for _, op in checks):
            return
        failed = [(i, op) for i, op in checks if op.state == "failed"]
        if failed:
            return _roll_back(rollout, failed[0][0], failed[0][1].error, now)
    last_wave = max(i.wave for i in rollout.hubs)
    if rollout.current_wave < last_wave:
        rollout.current_wave += 1
        rollout.gate_started_at = None
        audit(SYSTEM, "rollout.wave", rollout.release.name, rollout=rollout.id, wave=rollout.current_wave)
        return
    if any(i.state == "deferred" for i in rollout.hubs):
        return  # the rest waits for its blackout to end
    rollout.state, rollout.finished_at = "done", now
    audit(SYSTEM, "rollout.done", rollout.release.name, rollout=rollout.id)


def set_blackouts(user: User, institution: Institution, windows: Any) -> list[dict]:
    """Replace an institution's blackout windows ([{"start", "end", "reason"}], ISO times in UTC). Commits."""
    if not user.is_operator and user.institution_id != institution.id:
        raise Forbidden("not your institution")
    errors, clean = {}, []
    if not isinstance(windows, list):
        raise FieldErrors({"blackouts": "Send a list of windows."})
    for index, window in enumerate(windows):
        try:
            start = datetime.fromisoformat(window["start"]).replace(tzinfo=None)
            end = datetime.fromisoformat(window["end"]).replace(tzinfo=None)
        except (KeyError, TypeError, ValueError, AttributeError):
            errors[f"blackouts.{index}"] = "Give start and end as ISO date-times."
            continue
        if end <= start:
            errors[f"blackouts.{index}.end"] = "The end must come after the start."
        clean.append({"start": start.isoformat(), "end": end.isoformat(),
                      "reason": str(window.get("reason") or "")[:200]})
    if errors:
        raise FieldErrors(errors)
    institution.blackouts = clean
    audit(user.email, "institution.blackouts", institution.slug, institution.id, windows=clean)
    db.session.commit()
    return clean


def newest_release(channel: str) -> Release | None:
    return db.session.execute(db.select(Release).where(Release.channel == channel)
                              .order_by(Release.id.desc()).limit(1)).scalar_one_or_none()
