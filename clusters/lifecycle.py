"""Lifecycles as pure tables: the hub's here, the console's other machines (clusters, releases, rollouts) built the
same way with :class:`Machine`.

A hub moves ``requested -> provisioning -> running <-> reconfiguring/upgrading -> degraded/failed -> deleting ->
deleted``.  The console keeps exactly one writer of ``Hub.state`` and asks :func:`next_state` for every move, so an
impossible move (say, ``deleted -> running``) is refused with a sentence a person can act on instead of a silent
corruption.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StateInfo:
    label: str
    colour: str  # a CSS class suffix, see templates/base.html
    hint: str = ""  # what a person can do about an object in this state, for refusals ("restart it first")


class InvalidTransition(ValueError):
    """An event that the table does not allow from the current state; the message is a sentence for a person."""


@dataclass(frozen=True)
class Machine:
    """One lifecycle: its states (label, colour, hint), its moves and how each event is said in a refusal.

    ``verbs`` maps each event to what it does to the object ("be upgraded"), so a refused move reads "A failed hub
    cannot be upgraded: restart it first."
    """

    noun: str
    states: dict[str, StateInfo]
    table: dict[tuple[str, str], str]
    verbs: dict[str, str]
    terminal: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self):
        named = {s for s, _ in self.table} | set(self.table.values()) | set(self.terminal)
        if named - set(self.states):
            raise ValueError(f"{self.noun} lifecycle names undeclared states: {sorted(named - set(self.states))}")
        if {e for _, e in self.table} - set(self.verbs):
            raise ValueError(f"{self.noun} lifecycle has events without a verb: "
                             f"{sorted({e for _, e in self.table} - set(self.verbs))}")

    def next_state(self, state: str, event: str) -> str:
        """The state reached from ``state`` on ``event``; pure.  Raises :class:`InvalidTransition` (with a sentence
        naming the state and what to do) for a move the table does not allow, unknown names included."""
        try:
            return self.table[(state, event)]
        except KeyError:
            raise InvalidTransition(self.refusal(state, event)) from None

    def allows(self, state: str, event: str) -> bool:
        return (state, event) in self.table

    def refusal(self, state: str, event: str) -> str:
        info = self.states.get(state)
        label = info.label.lower() if info else repr(state)
        verb = self.verbs.get(event, f"take {event!r}")
        article = "An" if label[:1] in "aeiou" else "A"
        hint = f": {info.hint}" if info and info.hint else ""
        return f"{article} {label} {self.noun} cannot {verb}{hint}."

    def allowed_events(self, state: str) -> list[str]:
        """The events valid from ``state``, sorted; pure."""
        return sorted(event for (s, event) in self.table if s == state)

    def badges(self) -> dict[str, tuple[str, str]]:
        return {name: (info.label, info.colour) for name, info in self.states.items()}


REQUESTED = "requested"
PROVISIONING = "provisioning"
RUNNING = "running"
RECONFIGURING = "reconfiguring"
UPGRADING = "upgrading"
DEGRADED = "degraded"
FAILED = "failed"
DELETING = "deleting"
DELETED = "deleted"

STATES: dict[str, StateInfo] = {
    REQUESTED: StateInfo("Requested", "grey", "wait until it has been created"),
    PROVISIONING: StateInfo("Provisioning", "blue", "wait until it has started"),
    RUNNING: StateInfo("Running", "green"),
    RECONFIGURING: StateInfo("Reconfiguring", "blue", "wait until its configuration is applied"),
    UPGRADING: StateInfo("Upgrading", "blue", "wait until its upgrade ends"),
    DEGRADED: StateInfo("Degraded", "amber"),
    FAILED: StateInfo("Failed", "red", "restart it first"),
    DELETING: StateInfo("Deleting", "blue", "it is being deleted"),
    DELETED: StateInfo("Deleted", "grey", "it no longer exists"),
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

HUB = Machine(
    noun="hub", states=STATES, table=TABLE, terminal=TERMINAL,
    verbs={"provision": "be started", "ready": "be marked ready", "reconfigure": "be reconfigured",
           "upgrade": "be upgraded", "unhealthy": "be marked unhealthy", "healthy": "be marked healthy",
           "fail": "be marked failed", "delete": "be deleted", "removed": "be marked removed"})


def next_state(state: str, event: str) -> str:
    """Return the state a hub in ``state`` moves to on ``event``.

    Pure; raises :class:`InvalidTransition` when the move is not in :data:`TABLE` (unknown names too), its message a
    sentence for a person ("A failed hub cannot be upgraded: restart it first.").
    """
    return HUB.next_state(state, event)


def allowed_events(state: str) -> list[str]:
    """The events valid from ``state``, sorted; pure."""
    return HUB.allowed_events(state)
