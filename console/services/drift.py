"""Drift: whether each hub runs the configuration the console would deploy now, and the one action that fixes it.

The backend reports a digest of the configuration a hub runs (``HubStatus.config_digest``: a local hub's record of
the settings it loaded at start, a Kubernetes hub's HelmRelease values); the worker and the monitor keep it on the hub
(:func:`observe`, :func:`observe_running`).  The console's side is the digest of what it would deploy now
(``clusters.base.wanted_digest`` over ``config_service.hub_spec``), computed by the same function.  Equal: in sync.
Different: drifted, someone changed the hub behind the console's back (or it missed a change); a reconcile deploys
the console's configuration again.  Without a reported digest (a hub that is down, or started before hubs reported
one) the answer is "unknown", never "drifted".
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import lazyload

from clusters import health as health_rules
from clusters import lifecycle
from clusters.base import HubStatus, wanted_digest

from console.extensions import db
from console.models import OPERATION_PENDING, Hub, Operation, User, utcnow
from console.permissions import require
from console.services import audit, operations
from console.services import config as config_service
from console.services import hubs as hub_service

IN_SYNC, DRIFTED, UNKNOWN = "in-sync", "drifted", "unknown"
BADGES = {IN_SYNC: ("In sync", "green"), DRIFTED: ("Drifted", "amber"), UNKNOWN: ("Unknown", "grey")}


@dataclass(frozen=True)
class Drift:
    """One hub's drift: ``state`` (in-sync, drifted or unknown) and why, with both digests (None: not known)."""

    hub: Hub
    state: str
    reason: str
    running: str | None
    wanted: str | None
    observed_at: datetime | None
    reconciling: Operation | None  # a reconcile queued or under way

    @property
    def label(self) -> str:
        return BADGES[self.state][0]

    @property
    def colour(self) -> str:
        return BADGES[self.state][1]


def observe(hub: Hub, status: HubStatus, now: datetime | None = None) -> None:
    """Keep the digest ``status`` reports of the configuration ``hub`` runs (None unless it runs); the caller
    commits."""
    hub.config_digest = status.config_digest if status.running else None
    hub.config_digest_at = now or utcnow()


def observe_running(hubs: list[Hub], backend, statuses: dict[int, HubStatus], now: datetime | None = None) -> None:
    """Keep the running digest of each of ``hubs`` (all on ``backend``): from its status where one was read in this
    sweep (``statuses`` by hub id), else from the backend's cheap ``running_digest`` (a local hub's record, no
    request); hubs of a backend with neither keep what they had.  The caller commits."""
    now = now or utcnow()
    cheap = getattr(backend, "running_digest", None)
    for hub in hubs:
        if hub.id in statuses:
            observe(hub, statuses[hub.id], now)
        elif cheap is not None:
            hub.config_digest, hub.config_digest_at = cheap(hub.backend_state or {}), now


def wanted(hub: Hub) -> str | None:
    """The digest of the configuration the console would deploy to ``hub`` now (None: its backend reports none)."""
    return wanted_digest(hub.cluster.backend, config_service.hub_spec(hub))


def _reconciling(hub: Hub) -> Operation | None:
    return db.session.execute(db.select(Operation).options(lazyload(Operation.hub)).where(
        Operation.hub_id == hub.id, Operation.kind == "reconcile", Operation.state.in_(OPERATION_PENDING))
        .order_by(Operation.id).limit(1)).unique().scalar_one_or_none()


def of(hub: Hub) -> Drift:
    """``hub``'s drift now.  Reads only (rendering a hub with federated login may make its client at the console's
    OpenID provider, as any render of it does)."""
    reconciling = _reconciling(hub)
    want = wanted(hub)
    running = hub.config_digest
    if hub.state not in lifecycle.SERVING:
        state, reason = UNKNOWN, f"The hub is {hub.state}: only a serving hub reports what it runs."
    elif hub.health == health_rules.DOWN:
        state, reason = UNKNOWN, "The hub is down: what it reported last may not be what it runs."
    elif want is None:
        state, reason = UNKNOWN, f"Hubs on {hub.cluster.backend} clusters report no configuration digest."
    elif running is None:
        state, reason = UNKNOWN, ("The hub has not reported the configuration it runs (it is down, or it was "
                                  "started before hubs reported one).")
    elif running == want:
        state, reason = IN_SYNC, "The hub runs the configuration the console would deploy."
    else:
        state, reason = DRIFTED, ("The hub runs another configuration than the console would deploy: it was "
                                  "changed behind the console's back. Reconcile to deploy the console's again.")
    return Drift(hub=hub, state=state, reason=reason, running=running, wanted=want,
                 observed_at=hub.config_digest_at, reconciling=reconciling)


def report(user: User) -> list[Drift]:
    """The drift of every live hub ``user`` may see, drifted ones first, then unknown, then in sync (by slug)."""
    order = {DRIFTED: 0, UNKNOWN: 1, IN_SYNC: 2}
    found = [of(hub) for hub in hub_service.list_hubs(user)]
    return sorted(found, key=lambda d: (order[d.state], d.hub.slug))


def reconcile(user: User, hub: Hub) -> Operation:
    """Queue a reconcile of ``hub`` (fleet.apply): the worker deploys the configuration the console wants, and a
    local hub whose settings differ restarts with them.  One at a time: while one is queued or under way it is
    returned instead.  Audited; commits."""
    require(user, "fleet.apply", hub)
    pending = _reconciling(hub)
    if pending is not None:
        return pending
    op = operations.enqueue(hub, "reconcile", user.email)
    audit(user.email, "hub.reconcile", hub.slug, hub.institution_id, running=hub.config_digest,
          wanted=wanted(hub))
    db.session.commit()
    return op
