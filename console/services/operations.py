"""Durable operations: queued by services, claimed by workers under a lease, logged line by line."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, exists, or_, update
from sqlalchemy.orm import aliased

from console.extensions import db
from console.models import FAILED, QUEUED, RUNNING, SUCCEEDED, Cluster, Hub, Operation, OperationLog, utcnow


def enqueue(hub: Hub | None, kind: str, actor: str, cluster: Cluster | None = None) -> Operation:
    """Add a queued operation for ``hub`` (or ``cluster``) to the session; the caller commits."""
    op = Operation(hub=hub, cluster=cluster, kind=kind, actor=actor, state=QUEUED)
    db.session.add(op)
    return op


def claim_next(owner: str, lease_seconds: float) -> Operation | None:
    """Claim the oldest runnable operation: queued, or running under an expired lease (its worker died).

    Operations of one hub (or one cluster) run one at a time, in the order they were queued.  On PostgreSQL the row is locked with
    SKIP LOCKED so several workers never claim the same one; SQLite runs one worker.  Commits; returns the claimed
    operation or None.
    """
    now = utcnow()
    earlier = aliased(Operation)
    same_target = or_(and_(Operation.hub_id.is_not(None), earlier.hub_id == Operation.hub_id),
                      and_(Operation.cluster_id.is_not(None), earlier.cluster_id == Operation.cluster_id))
    blocked = exists().where(and_(same_target, earlier.id < Operation.id, earlier.state.in_((QUEUED, RUNNING))))
    query = (db.select(Operation)
             .where(or_(Operation.state == QUEUED,
                        and_(Operation.state == RUNNING, Operation.lease_expires < now)))
             .where(~blocked)
             .order_by(Operation.id).limit(1)
             .with_for_update(skip_locked=True, of=Operation))
    op = db.session.execute(query).unique().scalar_one_or_none()
    if op is None:
        db.session.rollback()
        return None
    op.state = RUNNING
    op.attempts += 1
    op.lease_owner = owner
    op.lease_expires = now + timedelta(seconds=lease_seconds)
    op.started_at = op.started_at or now
    db.session.commit()
    return op


def renew_lease(operation_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend the lease if ``owner`` still holds it; commits; returns whether it did."""
    result = db.session.execute(
        update(Operation).where(Operation.id == operation_id, Operation.lease_owner == owner,
                                Operation.state == RUNNING)
        .values(lease_expires=utcnow() + timedelta(seconds=lease_seconds)))
    db.session.commit()
    return result.rowcount == 1


def append_log(op: Operation, line: str) -> None:
    """Add a line to the operation's log and commit, so pages show it at once."""
    db.session.add(OperationLog(operation_id=op.id, line=line.rstrip()[:4000]))
    db.session.commit()


def finish(op: Operation, succeeded: bool, error: str = "") -> None:
    op.state = SUCCEEDED if succeeded else FAILED
    op.error = error
    op.finished_at = utcnow()
    op.lease_owner = None
    op.lease_expires = None
    db.session.commit()


def log_lines(op: Operation, after_id: int = 0) -> list[OperationLog]:
    return list(db.session.execute(
        db.select(OperationLog).where(OperationLog.operation_id == op.id, OperationLog.id > after_id)
        .order_by(OperationLog.id)).scalars())
