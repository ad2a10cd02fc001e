"""The hub lifecycle as a pure table.

A hub moves ``requested -> provisioning -> running <-> reconfiguring/upgrading -> degraded/failed -> deleting ->
deleted``.  The console keeps exactly one writer of ``Hub.state`` and asks :func:`next_state` for every move, so an
impossible move (say, ``deleted -> running``) is an error instead of a silent corruption.
"""
from __future__ import annotations

from dataclasses import dataclass

REQUESTED = "requested"
PROVISIONING = "provisioning"
RUNNING = "running"
RECONFIGURING = "reconfiguring"
UPGRADING = "upgrading"
DEGRADED = "degraded"
FAILED = "failed"
DELETING = "deleting"
DELETED = "deleted"


@dataclass(frozen=True)
class StateInfo:
    label: str
    colour: str  # a CSS class suffix, see templates/base.html


STATES: dict[str, StateInfo] = {
    REQUESTED: StateInfo("Requested", "grey"),
    PROVISIONING: StateInfo("Provisioning", "blue"),
    RUNNING: StateInfo("Running", "green"),
    RECONFIGURING: StateInfo("Reconfiguring", "blue"),
    UPGRADING: StateInfo("Upgrading", "blue"),
    DEGRADED: StateInfo("Degraded", "amber"),
    FAILED: StateInfo("Failed", "red"),
    DELETING: StateInfo("Deleting", "blue"),
    DELETED: StateInfo("Deleted", "grey"),
}

TERMINAL = frozenset({DELETED})
# States in which a hub process is expected to exist and answer probes.
SERVING = frozenset({RUNNING, RECONFIGURING, UPGRADING, DEGRADED})

_ALIVE = (REQUESTED, PROVISIONING, RUNNING, RECONFIGURING, UPGRADING, DEGRADED, FAILED)

# (state, event) -> next state
TABLE: dict[tuple[str, str], str] = {
    (REQUESTED, "provision"): PROVISIONING,
    (FAILED, "provision"): PROVISIONING,
    (PROVISIONING, "provision"): PROVISIONING,  # a re-claimed operation starts over
    (RUNNING, "provision"): PROVISIONING,  # restart, or re-adopt after a console restart
    (DEGRADED, "provision"): PROVISIONING,
    (PROVISIONING, "ready"): RUNNING,
    (RECONFIGURING, "ready"): RUNNING,
    (UPGRADING, "ready"): RUNNING,
    (DEGRADED, "ready"): RUNNING,
    (RUNNING, "ready"): RUNNING,
    (RUNNING, "reconfigure"): RECONFIGURING,
    (DEGRADED, "reconfigure"): RECONFIGURING,
    (FAILED, "reconfigure"): RECONFIGURING,
    (RECONFIGURING, "reconfigure"): RECONFIGURING,
    (RUNNING, "upgrade"): UPGRADING,
    (DEGRADED, "upgrade"): UPGRADING,
    (UPGRADING, "upgrade"): UPGRADING,
    (RUNNING, "unhealthy"): DEGRADED,
    (DEGRADED, "unhealthy"): DEGRADED,
    (DEGRADED, "healthy"): RUNNING,
    (RUNNING, "healthy"): RUNNING,
    **{(s, "fail"): FAILED for s in (PROVISIONING, RECONFIGURING, UPGRADING, DEGRADED, RUNNING, FAILED)},
    **{(s, "delete"): DELETING for s in (*_ALIVE, DELETING)},
    (DELETING, "removed"): DELETED,
    (DELETING, "fail"): FAILED,
}

class InvalidTransition(ValueError):
    """An event that the table does not allow from the current state."""


def next_state(state: str, event: str) -> str:
    """Return the state a hub in ``state`` moves to on ``event``.

    Pure; raises :class:`InvalidTransition` when the move is not in :data:`TABLE`, and ``KeyError``-free for unknown
    names (they are invalid transitions too).
    """
    try:
        return TABLE[(state, event)]
    except KeyError:
        raise InvalidTransition(f"hub in state {state!r} cannot take event {event!r}") from None


def allowed_events(state: str) -> list[str]:
    """The events valid from ``state``, sorted; pure."""
    return sorted(event for (s, event) in TABLE if s == state)
