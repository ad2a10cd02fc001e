"""Platform releases and their rollouts: waves, health gates, automatic halt and rollback, blackout windows."""
from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from werkzeug.exceptions import Conflict, NotFound

from clusters.environments import EnvironmentSetupError, installed_jupyterhub, jupyterhub_versions
from clusters import lifecycle
from clusters.lifecycle import InvalidTransition
from console.extensions import db
from console.lifecycles import HUB_ACTIONS, RELEASE, ROLLOUT, ROLLOUT_ACTIONS, ROLLOUT_HUB
from console.models import (OPERATION_TERMINAL, OUTCOME_CANCELLED, OUTCOME_ROLLED_BACK, OUTCOME_SKIPPED,
                            OUTCOME_SUCCEEDED, Cluster, Hub, Institution, Operation, Release, Rollout, RolloutHub,
                            User, utcnow)
from console.permissions import require
from console.services import FieldErrors, audit, operations
from tenants.layering import RELEASE_DEFAULTS, deep_merge, layered
from tenants.render import render_local

VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?([a-z0-9.+-]*)$")
# A Helm chart version is SemVer 2: 4.2.0, or a development build such as 4.3.0-0.dev.git.7208.h3e1ba6b4.
CHART_VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                              r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$")
# An image reference with an explicit tag: [registry[:port]/]path:tag (lower-case path, Docker's tag rule).
HUB_IMAGE_RE = re.compile(r"^(?:[a-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
                          r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
CHANNELS = ("stable", "beta")
ACTIVE = ("running", "paused", "halted")  # rollouts not over (a halted one may be resumed)
SYSTEM = "hubfleet-rollout"
logger = logging.getLogger(__name__)


def create_release(user: User, data: dict[str, Any]) -> Release:
    """Publish a release; FieldErrors (nothing written) for bad input, a JupyterHub version the package index does
    not offer included.  Commits.

    Only a ready release is offered to new hubs and rollouts.  Where the fleet has a local cluster the release is
    stored "preparing" and a ``release-prepare`` operation builds its environment and smoke-tests it (see
    :func:`local_cluster`); a fleet without one (Kubernetes pulls the chart and image when a hub deploys; the test
    doubles need nothing) has nothing to prepare, so the release is ready at once.
    """
    require(user, "release.manage")
    name, version, channel, config, chart_version, hub_image = validate_release(data)
    release = Release(name=name, jupyterhub_version=version, channel=channel, config=config,
                      chart_version=chart_version, hub_image=hub_image,
                      notes=str(data.get("notes") or ""), state="preparing")
    db.session.add(release)
    audit(user.email, "release.create", name, version=version, channel=channel,
          **({"chart_version": chart_version} if chart_version else {}),
          **({"hub_image": hub_image} if hub_image else {}))
    if local_cluster() is None:
        release.state = RELEASE.next_state(release.state, "prepared")
        audit(SYSTEM, "release.ready", name, prepared="nothing to prepare: the fleet has no local cluster")
    else:
        operations.enqueue(None, "release-prepare", user.email, release=release)
    db.session.commit()
    return release


def validate_release(data: dict[str, Any]) -> tuple[str, str, str, dict, str, str]:
    """Check a release to publish as :func:`create_release` does: (name, jupyterhub_version, channel, config,
    chart_version, hub_image), cleaned; FieldErrors by field otherwise.  Reads only (the package index included)."""
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
    else:
        problem = _version_problem(version)
        if problem:
            errors["jupyterhub_version"] = problem
    if channel not in CHANNELS:
        errors["channel"] = f"Choose one of {', '.join(CHANNELS)}."
    if not isinstance(config, dict) or set(config) - {"environment", "jupyterhub"}:
        errors["config"] = 'An object with "environment" and/or "jupyterhub" (traitlets sections).'
    chart_version, hub_image = (str(data.get(k) or "").strip() for k in ("chart_version", "hub_image"))
    errors.update(kubernetes_problems(chart_version, hub_image))
    if errors:
        raise FieldErrors(errors)
    return name, version, channel, config, chart_version, hub_image


def kubernetes_problems(chart_version: str, hub_image: str) -> dict[str, str]:
    """Field errors for what a release gives hubs on Kubernetes: the z2jh chart version (SemVer, as Helm wants it)
    and the hub image (``repository:tag``).  Both may be blank (a release for local hubs only).  Pure."""
    errors = {}
    if chart_version and (len(chart_version) > 40 or not CHART_VERSION_RE.match(chart_version)):
        errors["chart_version"] = ("Enter the chart's version as Helm writes it: 4.2.0 or "
                                   "4.3.0-0.dev.git.7208.h3e1ba6b4.")
    if hub_image and (len(hub_image) > 300 or not HUB_IMAGE_RE.match(hub_image)):
        errors["hub_image"] = "Enter an image with its tag: quay.io/jupyterhub/k8s-hub:4.2.0."
    return errors


def chart_problem(release: Release | None, cluster: Cluster) -> str | None:
    """Why hubs on ``cluster`` cannot be given ``release``, or None: a hub on Kubernetes is a Helm release of the
    release's chart version, so a release naming none cannot go there.  Local clusters take any release.  Pure."""
    if cluster.backend != "kubernetes" or release is None or release.chart_version:
        return None
    return (f"Release {release.name} names no chart version, which a hub on the Kubernetes cluster "
            f"{cluster.name} needs: publish a release with one.")


def _version_problem(version: str) -> str | None:
    """Why ``version`` cannot be published (not on the package index, or the index cannot be asked), or None.

    The version the console itself runs needs no index."""
    if version == installed_jupyterhub():
        return None
    try:
        known = jupyterhub_versions()
    except EnvironmentSetupError as exc:
        return f"Could not check JupyterHub {version} on the package index ({exc}); try again."
    if version not in known:
        return (f"JupyterHub {version} does not exist on the package index; the newest there is {known[0]}."
                if known else f"JupyterHub {version} does not exist on the package index.")
    return None


# -- planning -------------------------------------------------------------------------------------------------------

TARGET_KEYS = ("channel", "institution", "hubs")
BOUNDS = {"waves": (1, 20), "max_unavailable": (1, 1000), "gate_seconds": (0, 86400)}
MAX_TARGET_HUBS = 5000  # a longer list is a channel or an institution
# What each kind of rollout queues per hub, and the hub lifecycle event that operation makes.
OP_KIND = {"release": "upgrade", "config": "reconfigure"}
SETTLED = ("upgraded", "skipped")  # nothing more to do for the hub
BROKEN = ("failed", "rolled_back", "rolling_back")  # the hub halts its rollout
IN_FLIGHT = ("upgrading", "rolling_back")  # an operation of the rollout works on the hub


def _shown(value: Any) -> str:
    """``value`` quoted for a message, cut short (a target may hold anything a client sent)."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        text = "a number"
    return text if len(text) <= 40 else text[:37] + "..."


def _targets(target: Any) -> list[Hub]:
    """The hubs a target names, by slug: live ones (deleted excluded), stopped and failed ones included so the plan
    shows them skipped.  Raises FieldErrors on "target" naming what is malformed or unknown; changes nothing."""
    if not isinstance(target, dict) or len(target) != 1 or next(iter(target)) not in TARGET_KEYS:
        raise FieldErrors({"target": 'Name exactly one of "channel", "institution" or "hubs".'})
    (key, value), = target.items()
    query = db.select(Hub).where(Hub.state != "deleted").order_by(Hub.slug)
    if key == "channel":
        if not isinstance(value, str) or value not in CHANNELS:
            raise FieldErrors({"target": f"There is no channel {_shown(value)}: choose {' or '.join(CHANNELS)}."})
        query = query.where(Hub.channel == value, Hub.pinned.is_(False))
    elif key == "institution":
        if not isinstance(value, str) or db.session.execute(
                db.select(Institution.id).where(Institution.slug == value)).first() is None:
            raise FieldErrors({"target": f"There is no institution {_shown(value)}."})
        query = query.where(Hub.institution_id == db.select(Institution.id).where(Institution.slug == value)
                            .scalar_subquery())
    else:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise FieldErrors({"target": "List the hubs by name (their slugs), at least one."})
        if len(value) > MAX_TARGET_HUBS:
            raise FieldErrors({"target": f"List at most {MAX_TARGET_HUBS} hubs; target a channel or an institution "
                                         "for more."})
        query = query.where(Hub.slug.in_(set(value)))
    hubs = list(db.session.execute(query).unique().scalars())
    if key == "hubs":
        unknown = sorted(set(value) - {h.slug for h in hubs})
        if unknown:
            named = ", ".join(_shown(s) for s in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5
                                                                  else "")
            raise FieldErrors({"target": f"There is no hub named {named}."})
    return hubs


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


def unfit(hub: Hub, release: Release | None = None) -> str:
    """Why ``hub`` cannot take a rollout's change now (failed, stopped, being deleted, or ``release`` has no chart
    version for a hub on Kubernetes), as a sentence; "" if it can.

    Hubs busy with another operation are fit: the rollout's operation waits behind it.  Pure.
    """
    if hub.desired == "deleted" or hub.state in (lifecycle.DELETING, lifecycle.DELETED):
        return "The hub is being deleted."
    if chart_problem(release, hub.cluster):
        return chart_problem(release, hub.cluster)
    if hub.desired != "running":
        return "The hub is stopped: start it, then retry it."
    if hub.state == lifecycle.FAILED:
        return "The hub has failed: restart it, then retry it."
    return ""


def plan(rollout: Rollout, hubs: list[Hub], waves: int = 4) -> list[RolloutHub]:
    """Give ``rollout`` its hubs in waves (:func:`plan_waves` over the hubs fit to take the change); the unfit ones
    (:func:`unfit`) go in the last wave as skipped, each with its reason.  Adds to the session, does not commit;
    returns the rows added.  For release and config rollouts alike."""
    release = rollout.release if rollout.kind == "release" else None
    fit = [h for h in hubs if not unfit(h, release)]
    waved = plan_waves(fit, waves) if fit else []
    items = [RolloutHub(hub=hub, wave=index) for index, wave in enumerate(waved) for hub in wave]
    last = max(0, len(waved) - 1)
    items += [RolloutHub(hub=hub, wave=last, state="skipped", note=unfit(hub, release)) for hub in hubs
              if unfit(hub, release)]
    rollout.hubs.extend(items)
    return items


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


def _bounded(errors: dict, **numbers: Any) -> None:
    for name, value in numbers.items():
        low, high = BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            errors[name] = f"Use a whole number from {low} to {high}."


def create_rollout(user: User, release: Release, target: dict[str, Any], max_unavailable: int = 1,
                   gate_seconds: int = 30, synthetic_check: bool = False, waves: int = 4,
                   start: bool = False) -> Rollout:
    """Plan a rollout of ``release`` to the target hubs (shown before it starts; started at once with ``start``).

    Raises FieldErrors (nothing written) for a target that is malformed or names an unknown hub, channel or
    institution, numbers out of bounds (:data:`BOUNDS`), a release that cannot be used, or a target where no hub
    needs it.  Hubs that are failed, stopped or being deleted are planned as skipped with the reason.  Commits.
    """
    require(user, "rollout.manage")
    errors: dict[str, str] = {}
    _bounded(errors, waves=waves, max_unavailable=max_unavailable, gate_seconds=gate_seconds)
    if usable_problem(release):
        errors["release"] = usable_problem(release)
    hubs: list[Hub] = []
    try:
        hubs = [h for h in _targets(target) if h.release_id != release.id]
    except FieldErrors as exc:
        errors.update(exc.errors)
    else:
        if not hubs:
            errors["target"] = "No hub there needs this release."
        elif all(unfit(h, release) for h in hubs):
            errors["target"] = f"No hub there can take this release: {hubs[0].slug}: {unfit(hubs[0], release)}"
    if errors:
        raise FieldErrors(errors)
    rollout = Rollout(kind="release", release=release, target=target, max_unavailable=max_unavailable,
                      gate_seconds=gate_seconds, synthetic_check=bool(synthetic_check), created_by=user.email,
                      state="planned")
    items = plan(rollout, hubs, waves)
    db.session.add(rollout)
    audit(user.email, "rollout.plan", release.name, selection=target, hubs=len(hubs),
          skipped={i.hub.slug: i.note for i in items if i.state == "skipped"})
    db.session.commit()
    if start:
        control(user, rollout, "start")
    return rollout


def subject(rollout: Rollout) -> str:
    """What a rollout brings, for pages and the audit list: the release's name, or an institution's config."""
    if rollout.kind == "config":
        return f"config of {rollout.institution.slug if rollout.institution else 'an institution'}"
    return rollout.release.name if rollout.release else "a deleted release"


def rollout_actions(rollout: Rollout) -> list[str]:
    """The controls an operator may use on ``rollout`` now, in the order pages show them; pure."""
    return [action for action in ROLLOUT_ACTIONS if ROLLOUT.allows(rollout.state, action)]


def hub_actions(rollout: Rollout, item: RolloutHub) -> list[str]:
    """What an operator may do to one hub of ``rollout`` now (retry, skip); none once the rollout is over; pure."""
    if rollout.state in ROLLOUT.terminal:
        return []
    return [action for action in HUB_ACTIONS if ROLLOUT_HUB.allows(item.state, action)]


def control(user: User, rollout: Rollout, action: str) -> Rollout:
    """start, pause, resume or abort (:data:`ROLLOUT_ACTIONS`); a move the rollout's state refuses is a Conflict with
    the sentence.  Resuming a halted rollout retries the hubs that halted it (failed or rolled back), so after the fix
    it carries on from where it stopped; to leave a hub out instead, skip it first.  Audited; commits."""
    require(user, "rollout.manage", rollout)
    if action not in ROLLOUT_ACTIONS:
        raise FieldErrors({"action": f"Choose one of {', '.join(ROLLOUT_ACTIONS)}."})
    try:
        state = ROLLOUT.next_state(rollout.state, action)
    except InvalidTransition as exc:
        raise Conflict(str(exc)) from None
    retried = []
    if action == "resume" and rollout.state == "halted":
        items = _items(rollout, db.select(RolloutHub).where(RolloutHub.state.in_(BROKEN)))
        busy = [i.hub.slug for i in items if i.state == "rolling_back"]
        if busy:
            raise Conflict(f"Hub {busy[0]} is still being rolled back: resume once it is back on its previous "
                           "release.")
        for item in items:
            item.state, item.note = ROLLOUT_HUB.next_state(item.state, "retry"), f"Retried on resume: {item.note}"
            item.check_operation_id = None
            retried.append(item.hub.slug)
        rollout.reason, rollout.gate_started_at = "", None
    rollout.state = state
    if state in ROLLOUT.terminal:
        rollout.finished_at = utcnow()
    audit(user.email, f"rollout.{action}", subject(rollout), rollout=rollout.id, **({"retried": retried}
                                                                                    if retried else {}))
    db.session.commit()
    return rollout


def hub_action(user: User, rollout: Rollout, slug: str, action: str) -> RolloutHub:
    """Retry (back to pending: it is taken again in its turn) or skip one hub of a rollout that is not over.

    NotFound when the rollout has no such hub; Conflict with the sentence when the hub's state (or the rollout's)
    refuses it.  A halted rollout stays halted until resumed.  Audited; commits.
    """
    require(user, "rollout.manage", rollout)
    if action not in HUB_ACTIONS:
        raise FieldErrors({"action": f"Choose one of {', '.join(HUB_ACTIONS)}."})
    if rollout.state in ROLLOUT.terminal:
        raise Conflict(f"This rollout is {ROLLOUT.states[rollout.state].label.lower()}: its hubs can no longer be "
                       f"{'retried' if action == 'retry' else 'skipped'}; plan a new rollout.")
    found = _items(rollout, db.select(RolloutHub).join(RolloutHub.hub).where(Hub.slug == slug))
    if not found:
        raise NotFound(f"rollout {rollout.id} has no hub {slug!r}")
    item = found[0]
    try:
        item.state = ROLLOUT_HUB.next_state(item.state, action)
    except InvalidTransition as exc:
        raise Conflict(f"{slug}: {exc}") from None
    done = "Retried" if action == "retry" else "Skipped"
    item.note = f"{done} by {user.email}" + (f"; before: {item.note}" if item.note else ".")
    item.check_operation_id = None
    audit(user.email, f"rollout.{action}", slug, item.hub.institution_id, rollout=rollout.id)
    db.session.commit()
    return item


# -- driving --------------------------------------------------------------------------------------------------------

GATE_TIMEOUT = timedelta(minutes=5)  # an upgraded hub not healthy (or not checked) by then fails its gate


def advance(now: datetime | None = None) -> None:
    """One step of every rollout with something to do; level-triggered, so a restarted worker picks up where it was.

    Each rollout is stepped in its own transaction under a row lock (SKIP LOCKED on PostgreSQL, so two workers never
    drive the same rollout at once).  An exception while stepping one rollout halts that rollout with a sentence and
    is logged; the others are stepped all the same.  A step costs a few queries whatever the rollout's size.  Commits.
    """
    now = now or utcnow()
    db.session.expire_all()  # read what the workers wrote, whatever the caller's session kept
    in_flight = db.select(RolloutHub.id).where(RolloutHub.rollout_id == Rollout.id,
                                               RolloutHub.state.in_(IN_FLIGHT)).exists()
    due = db.or_(Rollout.state == "running", db.and_(Rollout.state.in_(("paused", "halted")), in_flight))
    after = 0
    while True:
        rollout = db.session.execute(
            db.select(Rollout).where(due, Rollout.id > after).order_by(Rollout.id).limit(1)
            .with_for_update(skip_locked=True, of=Rollout)).unique().scalar_one_or_none()
        if rollout is None:
            db.session.commit()
            return
        after = rollout.id
        try:
            _step(rollout, now)
            db.session.commit()
        except Exception as exc:  # one bad rollout must not stop the worker from driving the others
            logger.exception("rollout %s: step failed", after)
            db.session.rollback()
            _halt_after_error(after, exc, now)


def _halt_after_error(rollout_id: int, exc: Exception, now: datetime) -> None:
    try:
        rollout = db.session.execute(db.select(Rollout).where(Rollout.id == rollout_id)
                                     .with_for_update(of=Rollout)).unique().scalar_one_or_none()
        reason = f"Halted after an internal error ({exc.__class__.__name__}) while driving it; see the worker's log, " \
                 "then resume it."
        if rollout is not None and ROLLOUT.allows(rollout.state, "halt"):
            rollout.state, rollout.reason = ROLLOUT.next_state(rollout.state, "halt"), reason
            audit(SYSTEM, "rollout.halt", subject(rollout), rollout=rollout.id, reason=reason)
        db.session.commit()
    except Exception:  # the database itself is failing: the worker's loop reports it
        logger.exception("rollout %s: could not be halted", rollout_id)
        db.session.rollback()


def _items(rollout: Rollout, query) -> list[RolloutHub]:
    """The rollout's hubs that ``query`` selects, with their hubs, in one query."""
    return list(db.session.execute(query.where(RolloutHub.rollout_id == rollout.id).order_by(RolloutHub.id))
                .unique().scalars())


def _operations(ids: set[int | None]) -> dict[int, Any]:
    """id -> (state, outcome, error, finished_at) of the given operations, in one query."""
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    rows = db.session.execute(db.select(Operation.id, Operation.state, Operation.outcome, Operation.error,
                                        Operation.finished_at).where(Operation.id.in_(ids)))
    return {row.id: row for row in rows}


def _step(rollout: Rollout, now: datetime) -> None:
    # A wave that passes its gate makes room for the next at once, without waiting for the next step.
    for _ in range(max(BOUNDS["waves"]) + 1):
        wave = rollout.current_wave
        items = _items(rollout, db.select(RolloutHub).where(db.or_(
            RolloutHub.wave == wave, RolloutHub.state.in_(IN_FLIGHT + BROKEN),
            db.and_(RolloutHub.wave < wave, RolloutHub.state.not_in(SETTLED)))))
        ops = _operations({i.operation_id for i in items if i.state in IN_FLIGHT} |
                          {i.check_operation_id for i in items if i.state == "upgraded"})
        _finish_ops(rollout, items, ops)
        if rollout.state != "running" or not _advance(rollout, items, ops, now):
            return


def _finish_ops(rollout: Rollout, items: list[RolloutHub], ops: dict[int, Any]) -> None:
    """Move each hub whose operation ended by the operation's typed outcome (never by its error text)."""
    for item in items:
        op = ops.get(item.operation_id)
        if item.state not in IN_FLIGHT or op is None or op.state not in OPERATION_TERMINAL:
            continue
        if item.state == "upgrading":
            event = {OUTCOME_SUCCEEDED: "succeed", OUTCOME_ROLLED_BACK: "rolled_back", OUTCOME_SKIPPED: "skip",
                     OUTCOME_CANCELLED: "skip"}.get(op.outcome, "fail")
            item.state = ROLLOUT_HUB.next_state(item.state, event)
            item.note = "" if event == "succeed" else op.error or f"Its operation ended {op.outcome}."
        else:  # the rollback operation after a failed gate
            back = op.outcome == OUTCOME_SUCCEEDED
            item.state = ROLLOUT_HUB.next_state(item.state, "succeed" if back else "fail")
            item.note = f"{item.note}; rollback {'done' if back else 'failed: ' + (op.error or op.outcome or '')}"


def _halt(rollout: Rollout, item: RolloutHub, reason: str) -> None:
    rollout.state = ROLLOUT.next_state(rollout.state, "halt")
    rollout.reason = f"{item.hub.slug}: {reason}"
    audit(SYSTEM, "rollout.halt", subject(rollout), rollout=rollout.id, hub=item.hub.slug, reason=reason)


def _roll_back(rollout: Rollout, item: RolloutHub, reason: str) -> None:
    """A hub failed its gate: a release rollout queues a rollback operation; a config rollout's hub is marked failed
    (its reconfigure operation puts a hub back only when the change itself fails).  Halts the rollout."""
    if rollout.kind == "release":
        op = operations.enqueue(item.hub, "rollback", SYSTEM)
        db.session.flush()
        item.state, item.operation_id = ROLLOUT_HUB.next_state(item.state, "roll_back"), op.id
    else:
        item.state = ROLLOUT_HUB.next_state(item.state, "fail")
    item.note = reason
    _halt(rollout, item, reason)


def _queue(rollout: Rollout, items: list[RolloutHub]) -> None:
    """Queue each hub's operation for the rollout's kind; one flush for all of them."""
    queued = []
    for item in items:
        hub = item.hub
        kind = OP_KIND[rollout.kind]  # a kind this driver does not know is an error: it halts the rollout
        if rollout.kind == "config":
            op = operations.enqueue(hub, kind, SYSTEM, data={"rollout": rollout.id})
        else:
            op = operations.enqueue(hub, kind, SYSTEM)
            hub.spec = {**(hub.spec or {}), "upgrade_to": rollout.release_id, "rollout": rollout.id}
        item.state, item.note = ROLLOUT_HUB.next_state(item.state, "upgrade"), ""
        queued.append((item, op))
        audit(SYSTEM, "rollout.upgrade", hub.slug, hub.institution_id, subject=subject(rollout), rollout=rollout.id,
              wave=item.wave)
    db.session.flush()
    for item, op in queued:
        item.operation_id = op.id


def _advance(rollout: Rollout, items: list[RolloutHub], ops: dict[int, Any], now: datetime) -> bool:
    """Drive a running rollout one step; returns True when it moved to its next wave (step again at once)."""
    broken = [i for i in items if i.state in BROKEN]
    if broken:
        _halt(rollout, broken[0], broken[0].note)
        return False
    # this wave, and any hub of an earlier one still waiting (a blackout, a retry)
    wave = [i for i in items if i.wave == rollout.current_wave or i.state in ("pending", "deferred", "upgrading")]
    for item in wave:
        if item.state not in ("pending", "deferred"):
            continue
        reason = unfit(item.hub, rollout.release if rollout.kind == "release" else None)
        if reason:
            item.state, item.note = ROLLOUT_HUB.next_state(item.state, "skip"), reason
            audit(SYSTEM, "rollout.skip", item.hub.slug, item.hub.institution_id, rollout=rollout.id, reason=reason)
            continue
        window = in_blackout(item.hub.institution, now)
        if window:
            item.state, item.note = ROLLOUT_HUB.next_state(item.state, "defer"), f"Blackout until {window['end']}."
        elif item.state == "deferred":
            item.state, item.note = ROLLOUT_HUB.next_state(item.state, "clear"), ""
    busy = sum(1 for i in wave if i.state == "upgrading")
    room = max(0, rollout.max_unavailable - busy)
    _queue(rollout, [i for i in wave if i.state == "pending"][:room])
    if any(i.state in ("pending", "upgrading") for i in wave):
        return False
    # The health gate: every upgraded hub of the wave healthy for gate_seconds (and passing its synthetic check).
    rollout.gate_started_at = rollout.gate_started_at or now
    gate = timedelta(seconds=min(max(rollout.gate_seconds or 0, 0), BOUNDS["gate_seconds"][1]))
    upgraded = [i for i in wave if i.state == "upgraded"]

    unhealthy = [i for i in upgraded if i.hub.health != "healthy"]
    if unhealthy:
        if now - rollout.gate_started_at > GATE_TIMEOUT:
            _roll_back(rollout, unhealthy[0], f"Not healthy {GATE_TIMEOUT.seconds // 60} min after its change "
                                              f"({unhealthy[0].hub.health}).")
        return False
    if gate and upgraded:
        # healthy for the gate's time, counted from no earlier than the end of the hub's operation
        ended = _operations({i.operation_id for i in upgraded})
        for item in upgraded:
            since = getattr(ended.get(item.operation_id), "finished_at", None) or rollout.gate_started_at
            if now - max(item.hub.health_since or since, since) < gate:
                return False
    if rollout.synthetic_check and upgraded:
        unchecked = [(i, operations.enqueue(i.hub, "synthetic-check", SYSTEM)) for i in upgraded
                     if i.check_operation_id is None]
        if unchecked:
            db.session.flush()
            for item, op in unchecked:
                item.check_operation_id = op.id
            return False
        checks = [(i, ops.get(i.check_operation_id)) for i in upgraded]
        if any(op is None or op.state not in OPERATION_TERMINAL for _, op in checks):
            return False
        failed = [(i, op) for i, op in checks if op.outcome != OUTCOME_SUCCEEDED]
        if failed:
            _roll_back(rollout, failed[0][0], failed[0][1].error or "Its synthetic check failed.")
            return False
    last_wave = db.session.execute(db.select(db.func.max(RolloutHub.wave))
                                   .where(RolloutHub.rollout_id == rollout.id)).scalar() or 0
    if rollout.current_wave < last_wave:
        rollout.current_wave += 1
        rollout.gate_started_at = None
        audit(SYSTEM, "rollout.wave", subject(rollout), rollout=rollout.id, wave=rollout.current_wave)
        return True
    if any(i.state == "deferred" for i in wave):
        return False  # the rest waits for its blackout to end
    rollout.state, rollout.finished_at = ROLLOUT.next_state(rollout.state, "finish"), now
    audit(SYSTEM, "rollout.done", subject(rollout), rollout=rollout.id)
    if rollout.kind == "config":
        from console.services.config import finish_config_rollout  # config imports this module

        finish_config_rollout(rollout)
    return False


def newest_release(channel: str) -> Release | None:
    """The newest ready release of ``channel``, what a new hub starts on (None: the platform default).  Releases
    still preparing, failed or retracted are never offered."""
    return db.session.execute(db.select(Release).where(Release.channel == channel, Release.state == "ready")
                              .order_by(Release.id.desc()).limit(1)).scalar_one_or_none()


# -- preparing, retracting, deleting ----------------------------------------------------------------------------

def get_release(name: str) -> Release:
    """The release called ``name``; NotFound otherwise.  Release names are no secret (hub pages show them); what
    may be done with one is checked by the service functions."""
    release = db.session.execute(db.select(Release).filter_by(name=name)).scalar_one_or_none()
    if release is None:
        raise NotFound(f"no release here by the name {name!r}")
    return release


def local_cluster() -> Cluster | None:
    """The local cluster releases are prepared for (the oldest ready one), or None when the fleet has none.

    Preparation is per kind of backend: only local hubs need an environment built on this machine, so only they
    are smoke-tested; a new local cluster added later builds a release's environment on its first deploy.
    """
    return db.session.execute(db.select(Cluster).where(Cluster.backend == "local",
                                                       Cluster.state.in_(("ready", "registered")))
                              .order_by(Cluster.id).limit(1)).scalar_one_or_none()


def smoke_config(release: Release) -> dict[str, dict[str, Any]]:
    """The traitlets sections of a throw-away hub of ``release``: the platform defaults with the release's own
    layers on top, exactly what a new local hub without institution config gets.  Pure."""
    environment = deep_merge(RELEASE_DEFAULTS["environment"], (release.config or {}).get("environment") or {})
    config = layered({**RELEASE_DEFAULTS, "environment": environment}, None, None, None)
    return deep_merge(render_local(config, {}), (release.config or {}).get("jupyterhub") or {})


def prepare_operation(release: Release) -> Operation | None:
    """The release's latest ``release-prepare`` operation (its live log), or None."""
    return db.session.execute(db.select(Operation).where(Operation.release_id == release.id,
                                                         Operation.kind == "release-prepare")
                              .order_by(Operation.id.desc()).limit(1)).unique().scalar_one_or_none()


def mark_prepared(release: Release, error: str = "") -> None:
    """End the release's preparation: ready, or failed with ``error`` (one short sentence).  Commits."""
    release.state = RELEASE.next_state(release.state, "fail" if error else "prepared")
    release.error = error
    audit(SYSTEM, "release.failed" if error else "release.ready", release.name, **({"error": error} if error else {}))
    db.session.commit()


def usable_problem(release: Release) -> str | None:
    """Why ``release`` cannot be rolled out or given to a new hub (it is not ready), or None."""
    if RELEASE.allows(release.state, "use"):
        return None
    reason = f" ({release.error})" if release.state == "failed" and release.error else ""
    return f"Release {release.name}{reason}: {RELEASE.refusal(release.state, 'use')}"


def _move(release: Release, event: str) -> str:
    try:
        return RELEASE.next_state(release.state, event)
    except InvalidTransition as exc:
        raise Conflict(str(exc)) from None


def retry_prepare(user: User, release: Release) -> Operation:
    """Prepare a failed release again (after fixing what failed: the index, the disk).  Commits; Conflict (with
    a sentence) unless the release failed."""
    require(user, "release.manage", release)
    release.state = _move(release, "retry")
    release.error = ""
    op = operations.enqueue(None, "release-prepare", user.email, release=release)
    audit(user.email, "release.retry", release.name)
    db.session.commit()
    return op


def _users(release: Release) -> tuple[int, int]:
    """(hubs that run or ran ``release``, deleted ones included; rollouts of it)."""
    hubs = db.session.execute(db.select(db.func.count(Hub.id)).where(
        (Hub.release_id == release.id) | (Hub.previous_release_id == release.id))).scalar()
    rollouts = db.session.execute(db.select(db.func.count(Rollout.id))
                                  .where(Rollout.release_id == release.id)).scalar()
    return hubs, rollouts


def usage(release: Release) -> dict[str, int]:
    """{"hubs": live hubs running it, "ran": hubs that run or ran it (deleted ones included), "rollouts": ...}."""
    running = db.session.execute(db.select(db.func.count(Hub.id)).where(Hub.release_id == release.id,
                                                                        Hub.state != "deleted")).scalar()
    hubs, rollouts = _users(release)
    return {"hubs": running, "ran": hubs, "rollouts": rollouts}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def delete_release(user: User, release: Release) -> None:
    """Delete a release no hub runs or ran and no rollout names, with its preparation's operations.  Commits.

    Conflict with a sentence otherwise: "Release 2026.12 is used by 3 hubs; retract it instead." (a release still
    preparing: wait until it is ready).
    """
    require(user, "release.manage", release)
    _move(release, "delete")
    hubs, rollouts = _users(release)
    if hubs or rollouts:
        used = " and ".join(_plural(n, noun) for n, noun in ((hubs, "hub"), (rollouts, "rollout")) if n)
        raise Conflict(f"Release {release.name} is used by {used}; retract it instead.")
    for op in db.session.execute(db.select(Operation).where(Operation.release_id == release.id)).unique().scalars():
        db.session.delete(op)
    db.session.delete(release)
    audit(user.email, "release.delete", release.name)
    db.session.commit()


def retract_release(user: User, release: Release) -> Release:
    """Stop offering a ready release to new hubs and new rollouts; hubs that run it keep running (their page says
    so).  Commits.  Conflict with a sentence when it is not ready, or while a rollout of it is under way."""
    require(user, "release.manage", release)
    state = _move(release, "retract")
    unfinished = ("planned", "running", "paused", "halted")  # a halted rollout may be resumed
    active = db.session.execute(db.select(Rollout.id).where(Rollout.release_id == release.id,
                                                            Rollout.state.in_(unfinished)).limit(1)).scalar()
    if active:
        raise Conflict(f"Release {release.name} is being rolled out (rollout {active}); abort that rollout first.")
    release.state, release.retracted_at = state, utcnow()
    hubs, _ = _users(release)
    audit(user.email, "release.retract", release.name, hubs=hubs)
    db.session.commit()
    return release
