"""Durable operations: queued by services, claimed by workers under a lease, logged line by line.

An operation is worked on in steps.  A step that must wait for the outside world (a hub answering, a Helm release
settling) does not sleep: it records where it is and asks to be looked at again later (:func:`requeue`), which frees
the worker for other operations, the way a Kubernetes controller requeues.  Operations of one hub (or one cluster, or
one release) still run one at a time, in the order they were queued.
"""
from __future__ import annotations

import functools
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, bindparam, exists, or_, true, update
from sqlalchemy.orm import aliased, lazyload
from werkzeug.exceptions import TooManyRequests

from console.extensions import db
from console.models import (FAILED, OPERATION_PENDING, OUTCOME_FAILED, OUTCOME_SKIPPED, OUTCOME_SUCCEEDED, OUTCOMES,
                            QUEUED, RUNNING, SUCCEEDED, WAITING, Cluster, Hub, Operation, OperationLog, Release,
                            utcnow)


def enqueue(hub: Hub | None, kind: str, actor: str, cluster: Cluster | None = None,
            release: Release | None = None, data: dict | None = None) -> Operation:
    """Add a queued operation for ``hub`` (or ``cluster``, or ``release``) to the session; the caller commits."""
    op = Operation(hub=hub, cluster=cluster, release=release, kind=kind, actor=actor, state=QUEUED,
                   data=dict(data or {}))
    db.session.add(op)
    return op


REQUESTED_KINDS = ("restart", "synthetic-check")
"""What an institution's people queue at will, and so what :func:`admit` bounds per institution."""


def admit(hub: Hub) -> None:
    """Refuse a person's restart or check of ``hub`` while its institution has ``MAX_PENDING_OPERATIONS`` of them
    unfinished: one institution cannot fill the queue that every institution shares.  Raises TooManyRequests (429)
    with a sentence; the count is not locked, so two requests at once may pass it by one."""
    limit = int(current_app.config["MAX_PENDING_OPERATIONS"])
    count = db.session.execute(
        db.select(db.func.count(Operation.id)).join(Hub, Operation.hub_id == Hub.id)
        .where(Hub.institution_id == hub.institution_id, Operation.kind.in_(REQUESTED_KINDS),
               Operation.state.in_(OPERATION_PENDING))).scalar_one()
    if count >= limit:
        raise TooManyRequests(f"{hub.institution.name} has {count} restarts and checks waiting already, the most "
                              f"one institution may queue: try again when some have finished.")


def pending(hub: Hub, kind: str | None = None) -> Operation | None:
    """The hub's oldest operation not yet finished (of ``kind`` if given), or None."""
    query = db.select(Operation).where(Operation.hub_id == hub.id, Operation.state.in_(OPERATION_PENDING))
    if kind:
        query = query.where(Operation.kind == kind)
    return db.session.execute(query.order_by(Operation.id).limit(1)).unique().scalar_one_or_none()


def current_by_hub(hub_ids: list[int]) -> dict[int, Operation]:
    """Each hub's current operation (its oldest unfinished one, else its newest one) by hub id, in one query: what
    ``console.status.hub_status`` reads.  Hubs without operations are left out."""
    if not hub_ids:
        return {}
    mine = Operation.hub_id.in_(hub_ids)
    oldest_unfinished = db.select(db.func.min(Operation.id)).where(mine, Operation.state.in_(OPERATION_PENDING)) \
        .group_by(Operation.hub_id)
    newest = db.select(db.func.max(Operation.id)).where(mine).group_by(Operation.hub_id)
    found: dict[int, Operation] = {}
    # Related rows load on access (the hubs are in the session already): one statement, however many hubs.
    for op in db.session.execute(db.select(Operation).options(lazyload("*")).where(
            or_(Operation.id.in_(oldest_unfinished), Operation.id.in_(newest))).order_by(Operation.id)).scalars():
        held = found.get(op.hub_id)
        if held is None or held.state not in OPERATION_PENDING:
            found[op.hub_id] = op  # by id: an unfinished one comes before any later one and is kept
    return found


LANES = ("hubs", "clusters")  # see claim_next


@functools.cache
def _claimable(lane: str | None):
    """The id of the oldest operation a worker of ``lane`` may claim at ``:now``, locked (built once per lane:
    building it cost more than running it)."""
    now = bindparam("now")
    earlier = aliased(Operation)

    def earlier_pending(column):
        # one EXISTS per kind of target, so each can use that column's index
        return and_(getattr(Operation, column).is_not(None), exists().where(
            getattr(earlier, column) == getattr(Operation, column), earlier.id < Operation.id,
            earlier.state.in_(OPERATION_PENDING)))

    blocked = or_(earlier_pending("hub_id"), earlier_pending("cluster_id"), earlier_pending("release_id"))
    # Only the id; the operation with its hub is loaded by key after.  Selecting the row itself would join in every
    # hub (an operation's relationships load eagerly) before filtering.
    in_lane = {None: true(), "clusters": Operation.cluster_id.is_not(None), "hubs": Operation.cluster_id.is_(None)}
    # Fair share: the operation of the institution with the fewest operations in flight (started, not finished)
    # goes first, oldest first among equals; so one institution's flood of restarts waits behind the others'
    # requests instead of in front of them.  Operations of no hub (clusters, releases) count as none in flight.
    theirs, their_hub = aliased(Operation), aliased(Hub)
    in_flight = (db.select(their_hub.institution_id, db.func.count(theirs.id).label("count"))
                 .join(their_hub, theirs.hub_id == their_hub.id).where(theirs.state.in_((RUNNING, WAITING)))
                 .group_by(their_hub.institution_id).subquery())  # counted once per claim, not per candidate
    return (db.select(Operation.id).outerjoin(Hub, Operation.hub_id == Hub.id)
            .outerjoin(in_flight, in_flight.c.institution_id == Hub.institution_id)
            .where(in_lane[lane])
            .where(or_(Operation.state == QUEUED,
                       and_(Operation.state == WAITING, Operation.run_after <= now),
                       and_(Operation.state == RUNNING, Operation.lease_expires < now)))
            .where(~blocked)
            .order_by(db.func.coalesce(in_flight.c.count, 0), Operation.id).limit(1)
            .with_for_update(skip_locked=True, of=Operation))


def claim_next(owner: str, lease_seconds: float, lane: str | None = None) -> Operation | None:
    """Claim the oldest runnable operation of the institution with the fewest operations in flight: queued, waiting
    and due, or running under an expired lease (its worker died).

    An operation waits while an earlier one of the same hub (cluster, release) is not finished.  On PostgreSQL the row
    is locked with SKIP LOCKED so several workers never claim the same one; SQLite runs one worker.  ``attempts``
    counts claims of a queued or abandoned operation, not the returns of a waiting one.  ``lane`` "clusters" claims
    only cluster operations (Terraform runs, which hold their worker for minutes), "hubs" everything else, None
    both.  Commits; returns the claimed operation or None.
    """
    now = utcnow()
    op_id = db.session.execute(_claimable(lane), {"now": now}).scalar_one_or_none()
    if op_id is None:
        db.session.rollback()
        return None
    op = db.session.get(Operation, op_id, populate_existing=True)
    if op.state != WAITING:
        op.attempts += 1
    op.state = RUNNING
    op.run_after = None
    op.lease_owner = owner
    op.lease_expires = now + timedelta(seconds=lease_seconds)
    op.started_at = op.started_at or now
    db.session.commit()
    return op


def next_due_in(default: float) -> float:
    """Seconds until the soonest waiting operation is due (at most ``default``), for an idle worker's nap."""
    soonest = db.session.execute(db.select(db.func.min(Operation.run_after))
                                 .where(Operation.state == WAITING)).scalar()
    db.session.rollback()
    if soonest is None:
        return default
    return max(0.0, min(default, (soonest - utcnow()).total_seconds()))


def requeue(op: Operation, after: float, note: str = "") -> None:
    """Give the operation back: a worker claims it again ``after`` seconds from now.  Commits."""
    op.state = WAITING
    op.run_after = utcnow() + timedelta(seconds=max(0.0, after))
    op.note = note
    op.lease_owner = None
    op.lease_expires = None
    db.session.commit()


def renew_lease(operation_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend the lease if ``owner`` still holds it; commits; returns whether it did."""
    result = db.session.execute(
        update(Operation).where(Operation.id == operation_id, Operation.lease_owner == owner,
                                Operation.state == RUNNING)
        .values(lease_expires=utcnow() + timedelta(seconds=lease_seconds)))
    db.session.commit()
    return result.rowcount == 1


def append_log(op: Operation, line: str, commit: bool = True) -> None:
    """Add a line to the operation's log and commit, so pages show it at once (``commit=False``: the caller commits
    right after)."""
    db.session.add(OperationLog(operation_id=op.id, line=line.rstrip()[:4000]))
    if commit:
        db.session.commit()


def finish(op: Operation, outcome: str = OUTCOME_SUCCEEDED, error: str = "") -> None:
    """End the operation with a typed ``outcome`` (one of ``models.OUTCOMES``) and, unless it succeeded, why.

    Commits.  Succeeded and skipped operations are in state "succeeded", the others in state "failed".
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    op.state = SUCCEEDED if outcome in (OUTCOME_SUCCEEDED, OUTCOME_SKIPPED) else FAILED
    op.outcome = outcome
    op.error = error
    op.note = ""
    op.finished_at = utcnow()
    op.run_after = None
    op.lease_owner = None
    op.lease_expires = None
    db.session.commit()


def fail(op: Operation, error: str) -> None:
    """``finish(op, OUTCOME_FAILED, error)``."""
    finish(op, OUTCOME_FAILED, error)


def log_lines(op: Operation, after_id: int = 0) -> list[OperationLog]:
    return list(db.session.execute(
        db.select(OperationLog).where(OperationLog.operation_id == op.id, OperationLog.id > after_id)
        .order_by(OperationLog.id)).scalars())
