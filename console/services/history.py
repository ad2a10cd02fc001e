"""What happened to a hub or a cluster that is gone, so that a link to one explains itself instead of a bare 404."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from console.extensions import db
from console.models import AuditEvent, Cluster, Hub, Operation, User
from console.permissions import actor_label, visible
from console.services import scope


@dataclass(frozen=True)
class Gone:
    """A hub or cluster that no longer exists: what ended it, when and by whom (when known)."""

    noun: str  # "hub" | "cluster"
    name: str
    verb: str  # "deleted" | "destroyed" | "forgotten"
    at: datetime | None
    by: str | None
    operation_id: int | None  # the operation that removed it, if one did

    @property
    def sentence(self) -> str:
        """"north-lab was deleted on 2026-11-29 13:02 UTC by ops@example.org." """
        when = f" on {self.at:%Y-%m-%d %H:%M} UTC" if self.at else ""
        who = f" by {self.by}" if self.by else ""
        return f"{self.name} was {self.verb}{when}{who}."


def _newest_operation(kinds: str | tuple[str, ...], **where) -> Operation | None:
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    return db.session.execute(db.select(Operation).filter_by(**where).where(Operation.kind.in_(kinds))
                              .order_by(Operation.id.desc()).limit(1)).unique().scalar_one_or_none()


def deleted_hub(user: User, slug: str) -> Gone | None:
    """The newest deleted hub named ``slug`` that ``user`` may see (an institution admin: only their own
    institution's), or None.  A slug is free again once its hub is deleted, so callers look for a live hub first."""
    hub = db.session.execute(scope.deleted_hubs(user).where(Hub.slug == slug)
                             .order_by(Hub.id.desc()).limit(1)).unique().scalar_one_or_none()
    if hub is None:
        return None
    op = _newest_operation(("delete", "decommission"), hub_id=hub.id)
    verb = "decommissioned" if op is not None and op.kind == "decommission" else "deleted"
    return Gone("hub", hub.slug, verb, hub.deleted_at or (op.finished_at if op else None),
                actor_label(user, op.actor) if op else None, op.id if op else None)


def destroyed_cluster(user: User, name: str) -> Gone | None:
    """A destroyed (or forgotten, if registered) cluster named ``name`` the user may see; None otherwise."""
    cluster = db.session.execute(db.select(Cluster).where(visible(user, Cluster))
                                 .filter_by(name=name, state="destroyed")).scalar_one_or_none()
    if cluster is None:
        return None
    op = _newest_operation("cluster-destroy", cluster_id=cluster.id)
    if op is not None:
        return Gone("cluster", name, "destroyed", op.finished_at, op.actor, op.id)
    # A registered cluster is forgotten without an operation: its audit event says when and by whom.
    event = db.session.execute(db.select(AuditEvent).filter_by(action="cluster.forget", target=name)
                               .order_by(AuditEvent.id.desc()).limit(1)).scalar_one_or_none()
    return Gone("cluster", name, "forgotten", event.at if event else None, event.actor if event else None, None)
