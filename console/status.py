"""Every status value the console shows, with its label and colour, declared once; and the one status a person
reads for a hub (:func:`hub_status`)."""
from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from clusters import lifecycle
from clusters.lifecycle import STATES

from console.lifecycles import CLUSTER, RELEASE, ROLLOUT, ROLLOUT_HUB
from console.models import (FAILED, OUTCOME_CANCELLED, OUTCOME_FAILED, OUTCOME_ROLLED_BACK, OUTCOME_SKIPPED,
                            OUTCOME_SUCCEEDED, QUEUED, RUNNING, SUCCEEDED, WAITING, utcnow)

HEALTHY, DEGRADED, DOWN, UNKNOWN = "healthy", "degraded", "down", "unknown"

BADGES: dict[str, dict[str, tuple[str, str]]] = {
    "hub": {name: (info.label, info.colour) for name, info in STATES.items()},
    "health": {
        HEALTHY: ("Healthy", "green"),
        DEGRADED: ("Degraded", "amber"),
        DOWN: ("Down", "red"),
        UNKNOWN: ("Unknown", "grey"),
    },
    "cluster": CLUSTER.badges(),
    "rollout": ROLLOUT.badges(),
    "rollout_hub": ROLLOUT_HUB.badges(),
    "release": RELEASE.badges(),
    "operation": {
        QUEUED: ("Queued", "grey"),
        RUNNING: ("Running", "blue"),
        WAITING: ("Waiting", "blue"),
        SUCCEEDED: ("Succeeded", "green"),
        FAILED: ("Failed", "red"),
    },
    # How a finished operation ended (Operation.outcome): what its panel shows instead of its state.
    "outcome": {
        OUTCOME_SUCCEEDED: ("Succeeded", "green"),
        OUTCOME_FAILED: ("Failed", "red"),
        OUTCOME_ROLLED_BACK: ("Rolled back", "amber"),
        OUTCOME_SKIPPED: ("Skipped", "grey"),
        OUTCOME_CANCELLED: ("Cancelled", "grey"),
    },
}


def badge(value: str | None, kind: str) -> tuple[str, str]:
    """(label, colour) for a status value; unknown values show as themselves in grey."""
    return BADGES[kind].get(value or "", (value or "—", "grey"))


class Status(NamedTuple):
    """The one status a person reads for a hub: a short label, its colour, and why."""

    label: str  # "Running", "Down", "Restarting", "Queued: restart", ...
    colour: str  # a badge colour, see templates/base.html
    reason: str  # "no answer to 3 probes in a row since 13:17:02 UTC"
    key: str  # a stable lowercase name for scripts and tests: "healthy", "down", "restarting", "queued", ...


# What a hub is doing while an operation of this kind works on it.  Other kinds (a synthetic check) do not change the
# hub: its status stays what was observed, and the reason says what runs beside it.
ACTIVITIES = {"create": "Starting", "reconcile": "Restarting", "restart": "Restarting",
              "reconfigure": "Reconfiguring", "upgrade": "Upgrading", "rollback": "Rolling back",
              "delete": "Deleting", "decommission": "Decommissioning", "restore": "Restoring"}
_UNFINISHED = (QUEUED, RUNNING, WAITING)


def _at(moment: datetime, now: datetime) -> str:
    return moment.strftime("%H:%M:%S UTC" if moment.date() == now.date() else "%Y-%m-%d %H:%M UTC")


def _since(message: str, since: datetime | None, now: datetime) -> str:
    # Observed messages read "<what the rules saw>: <what the probe said>" (services.hubs.observe_hub): the time goes
    # after the first part, the probe's words in brackets.
    headline, _, detail = message.partition(": ")
    text = headline + (f" since {_at(since, now)}" if since else "")
    return f"{text} ({detail})" if detail else text


def _observed(hub, op, now: datetime, max_restarts: int | None) -> Status:
    """The hub's status from its lifecycle state and what monitoring observed, leaving out what an operation does."""
    state = hub.state
    if state == lifecycle.REQUESTED:
        return Status("Requested", "grey", "waiting for a worker", "requested")
    if state == lifecycle.FAILED:
        if max_restarts and hub.restart_count >= max_restarts and hub.status_message:
            reason = hub.status_message  # the supervisor gave up: it wrote why
        elif op is not None and op.state not in _UNFINISHED and op.outcome != OUTCOME_SUCCEEDED and op.error:
            reason = op.error
        else:
            reason = hub.status_message or "its last operation failed"
        return Status("Failed", "red", reason, "failed")
    if state == lifecycle.DELETING or hub.desired == "deleted":
        return Status("Deleting", "blue", "being removed", "deleting")
    if state not in lifecycle.SERVING or state in (lifecycle.RECONFIGURING, lifecycle.UPGRADING):
        info = STATES.get(state)
        return Status(info.label if info else state, "blue", "in progress", state)
    message = hub.status_message
    if hub.health == HEALTHY:
        return Status("Running", "green", _since(message or "answering", hub.health_since, now), HEALTHY)
    if hub.health == DEGRADED:
        return Status("Degraded", "amber", _since(message or "degraded", hub.health_since, now), DEGRADED)
    if hub.health == DOWN:
        reason = _since(message or "not answering", hub.health_since, now)
        if hub.restart_count:
            reason += f"; restarted {hub.restart_count}" + (f" of {max_restarts}" if max_restarts else "") + \
                " time(s) so far"
        return Status("Down", "red", reason, DOWN)
    return Status("Running", "grey", message or "not probed yet", UNKNOWN)


def hub_status(hub, op=None, now: datetime | None = None, max_restarts: int | None = None) -> Status:
    """The one status of ``hub`` a person reads, with its reason.

    ``op`` is the hub's current operation: its oldest unfinished one, else its newest one, else None (see
    ``services.operations.current_by_hub``).  An unfinished operation says what the hub is doing ("Upgrading: waiting
    for the hub to answer /hub/health") or that it waits for a worker ("Queued: restart"); otherwise the lifecycle
    state and the observed health say it ("Down: no answer to 3 probes in a row since 13:17:02 UTC"), and a failed
    hub says why it failed.  ``max_restarts`` (the supervisor's limit) completes "restart 1 of 5".  Pure: reads the
    attributes of ``hub`` (state, desired, health, health_since, status_message, restart_count, deleted_at) and
    ``op`` (kind, state, note, actor, started_at, outcome, error); ``now`` defaults to the current UTC time.
    """
    now = now or utcnow()
    if hub.state == lifecycle.DELETED:
        when = f" on {hub.deleted_at:%Y-%m-%d %H:%M} UTC" if hub.deleted_at else ""
        return Status("Deleted", "grey", f"it was deleted{when}", "deleted")
    base = _observed(hub, op, now, max_restarts)
    if op is None or op.state not in _UNFINISHED:
        return base
    kind = op.kind.replace("-", " ")
    activity = ACTIVITIES.get(op.kind)
    if activity is None:
        return base._replace(reason=f"{base.reason}; {kind} {'queued' if op.state == QUEUED else 'in progress'}")
    if op.state == QUEUED:
        reason = "waiting for a worker"
        if hub.state != lifecycle.REQUESTED:
            reason += f"; meanwhile {base.label.lower()}: {base.reason}"
        return Status(f"Queued: {kind}", "grey", reason, "queued")
    doing = op.note or (f"started {_at(op.started_at, now)} by {op.actor}" if op.started_at else f"by {op.actor}")
    if op.kind == "reconcile" and hub.restart_count:
        # The supervisor restarts a hub whose processes died: say why and how many restarts are left.
        cause = (hub.status_message or "its processes are not running").partition(": ")[0]
        limit = f" of {max_restarts}" if max_restarts else ""
        doing = f"{cause} (restart {hub.restart_count}{limit}); {doing}"
    return Status(activity, "blue", doing, activity.lower().replace(" ", "-"))
