"""Decommission: a hub is archived (its JupyterHub database and every user's home), then removed; the archive is
kept until its retention date, can be downloaded, restored into a new hub, and is purged after.

An institution admin or an operator asks (``decommission.request``, with a reason); an operator refuses or approves
(``hub.decommission``), typing the hub's slug.  Approval is refused while the hub is in a rollout that is not over
or has an operation in flight.  It queues one "decommission" operation (:func:`run`): first the archive, recorded as
an :class:`Archive` row, and only then the hub's existing removal path (``Worker.ensure_deleted``).  An archive that
fails stops the operation before anything is removed: the hub keeps running and the request says why.

Archives (``archive.manage``, operators): :func:`archives`, :func:`download_path`, :func:`restore` (a new hub whose
first start finds the archive's database and homes, :func:`run_restore`), :func:`purge`; :func:`purge_expired`
runs in the monitor's periodic retention pass.  Everything is audited.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from clusters.base import BackendError, backend_class
from flask import current_app
from sqlalchemy.orm import lazyload
from tenants.auth import first_admin
from werkzeug.exceptions import Conflict

from console.extensions import db
from console.models import (Archive, Cluster, DecommissionRequest, Hub, Operation, Rollout,
                            RolloutHub, User, utcnow)
from console.permissions import can, require
from console.services import FieldErrors, audit, operations
from console.services import config as config_service
from console.services import hubs as hub_service

SYSTEM_ACTOR = "hubfleet-retention"
NFS_SERVER_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")  # a host name or an IPv4 address
NFS_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]{0,500}$")
OPEN = ("pending", "running")  # requests not yet decided or not yet carried out
ROLLOUT_BUSY = ("planned", "running", "paused")  # a hub in such a rollout is not decommissioned
MAX_REASON = 2000


# -- asking and deciding --------------------------------------------------------------------------------------------

def open_request(hub: Hub) -> DecommissionRequest | None:
    """The hub's request still pending or being carried out, or None."""
    return db.session.execute(db.select(DecommissionRequest).options(lazyload(DecommissionRequest.hub)).where(
        DecommissionRequest.hub_id == hub.id, DecommissionRequest.state.in_(OPEN))
        .order_by(DecommissionRequest.id.desc()).limit(1)).unique().scalar_one_or_none()


def latest_request(hub: Hub) -> DecommissionRequest | None:
    return db.session.execute(db.select(DecommissionRequest).options(lazyload(DecommissionRequest.hub))
                              .where(DecommissionRequest.hub_id == hub.id)
                              .order_by(DecommissionRequest.id.desc()).limit(1)).unique().scalar_one_or_none()


def _reason(reason: Any, field: str = "reason") -> str:
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        raise FieldErrors({field: "Say why the hub should be decommissioned."})
    if len(reason) > MAX_REASON:
        raise FieldErrors({field: f"Keep it under {MAX_REASON} characters."})
    return reason


def request(user: User, hub: Hub, reason: Any) -> DecommissionRequest:
    """Ask for ``hub`` to be decommissioned (decommission.request); ``reason`` is required.  A hub with an open
    request keeps that one (returned as it is).  Commits.  Raises FieldErrors (nothing written)."""
    require(user, "decommission.request", hub)
    reason = _reason(reason)
    found = open_request(hub)
    if found is not None:
        return found
    asked = DecommissionRequest(hub=hub, requested_by=user.email, reason=reason, state="pending")
    db.session.add(asked)
    audit(user.email, "hub.decommission_request", hub.slug, hub.institution_id, reason=reason)
    db.session.commit()
    return asked


def refuse(user: User, hub: Hub, note: Any = "") -> DecommissionRequest:
    """Refuse the hub's pending request (hub.decommission), saying why in ``note`` (optional).  Conflict (409) when
    none is pending.  Commits."""
    require(user, "hub.decommission", hub)
    found = open_request(hub)
    if found is None or found.state != "pending":
        raise Conflict(f"Hub {hub.slug} has no pending decommission request to refuse.")
    found.state, found.decided_by, found.decided_at = "refused", user.email, utcnow()
    found.note = note.strip()[:MAX_REASON] if isinstance(note, str) else ""
    audit(user.email, "hub.decommission_refuse", hub.slug, hub.institution_id, request=found.id, note=found.note)
    db.session.commit()
    return found


def busy_reason(hub: Hub) -> str | None:
    """Why ``hub`` cannot be decommissioned now (a rollout not over, an operation in flight), or None."""
    rollout = db.session.execute(db.select(Rollout.id).join(RolloutHub, RolloutHub.rollout_id == Rollout.id).where(
        RolloutHub.hub_id == hub.id, Rollout.state.in_(ROLLOUT_BUSY)).limit(1)).scalar()
    if rollout is not None:
        return (f"Hub {hub.slug} is part of rollout {rollout}, which is not over: finish or abort it (or skip the "
                f"hub) first.")
    pending = operations.pending(hub)
    if pending is not None:
        return f"Hub {hub.slug} has a {pending.kind} operation in flight ({pending.id}): wait until it ends."
    return None


def approve(user: User, hub: Hub, confirm: Any, reason: Any = None) -> DecommissionRequest:
    """Decommission ``hub`` (hub.decommission): approve its pending request, or (an operator deciding alone) make
    one with ``reason``.  ``confirm`` must be the hub's slug.  Queues the "decommission" operation.

    Idempotent: a request already being carried out is returned as it is.  Raises FieldErrors for a wrong
    confirmation or a missing reason and Conflict (409) while the hub is in a rollout or has an operation in
    flight; nothing is written then.  Commits.
    """
    require(user, "hub.decommission", hub)
    if (confirm.strip() if isinstance(confirm, str) else "") != hub.slug:
        raise FieldErrors({"confirm": f"Type the hub's slug, {hub.slug}, to confirm."})
    found = open_request(hub)
    if found is not None and found.state == "running":
        return found
    if found is None:
        found = DecommissionRequest(hub=hub, requested_by=user.email, reason=_reason(reason), state="pending")
    problem = busy_reason(hub)
    if problem:
        raise Conflict(problem)
    db.session.add(found)
    found.state, found.decided_by, found.decided_at, found.note = "running", user.email, utcnow(), ""
    db.session.flush()
    found.operation = operations.enqueue(hub, "decommission", user.email, data={"request": found.id})
    audit(user.email, "hub.decommission", hub.slug, hub.institution_id, request=found.id, reason=found.reason)
    db.session.commit()
    return found


def hub_section(user: User, hub: Hub) -> dict:
    """The hub page's Decommission section (``decommission``: the open request and the latest one), for a user who
    may request one; {} for anyone else (the page shows no section)."""
    if not can(user, "decommission.request", hub):
        return {}
    return {"decommission": {"open": open_request(hub), "latest": latest_request(hub)}}


# -- the operation --------------------------------------------------------------------------------------------------

def archive_name(hub: Hub, op: Operation) -> str:
    """The archive's file name: the same for every attempt of one operation, so a re-run writes it afresh."""
    return f"{hub.slug}-hub{hub.id}-op{op.id}.tar.gz"


def run(worker, op: Operation, log) -> None:
    """The "decommission" operation: archive the hub (step ""), then remove it (step "remove") through the existing
    removal path.  Where it is lives in ``op.step`` and ``op.data["archive"]``, so a worker that died half-way is
    followed by one that archives again (the same file, written afresh) or goes on removing.  An archive that fails
    ends the operation refused: the hub untouched and still running, the request failed with the reason."""
    from console.worker import LeaseLost, Refused, Skipped

    hub = op.hub
    asked = db.session.get(DecommissionRequest, op.data.get("request"))
    if op.step != "remove":
        if hub.state == "deleted":
            raise Skipped("the hub is gone already")
        if "archive" not in op.data:
            backend = hub_service.backend_for(hub.cluster)
            try:
                result = backend.archive(hub.backend_state or {}, archive_name(hub, op), log)
            except BackendError as exc:
                if asked is not None:
                    asked.state, asked.note = "failed", f"archiving failed: {exc}"
                db.session.commit()
                raise Refused(f"archiving failed: {exc}; nothing was removed and the hub keeps running") from None
            days = int(current_app.config["ARCHIVE_RETENTION_DAYS"])
            kept = Archive(hub_id=hub.id, hub_slug=hub.slug, institution_id=hub.institution_id, cluster=hub.cluster,
                           backend=hub.cluster.backend, location=result.location, size=result.size,
                           sha256=result.sha256, manifest=result.manifest, state="kept",
                           created_by=asked.decided_by if asked and asked.decided_by else op.actor,
                           retain_until=utcnow() + timedelta(days=days))
            db.session.add(kept)
            db.session.flush()
            if asked is not None:
                asked.archive = kept
            op.data = {**op.data, "archive": kept.id}
            audit(op.actor, "archive.create", hub.slug, hub.institution_id, archive=kept.id, size=kept.size,
                  sha256=kept.sha256, users=len(result.manifest.get("users", [])))
            db.session.commit()
        hub.desired = "deleted"
        op.step = "remove"
        db.session.commit()
        log("the archive is complete; removing the hub")
    try:
        if hub.state != "deleted":  # a worker that died right after removing it left only the request to close
            worker.ensure_deleted(op, log)
    except LeaseLost:
        raise
    except Exception as exc:
        db.session.rollback()
        if asked is not None:
            asked.state, asked.note = "failed", f"removal failed after the archive was made: {exc}"
            db.session.commit()
        raise
    if asked is not None:
        asked.state = "done"
    db.session.commit()


# -- archives -------------------------------------------------------------------------------------------------------

def archives(user: User) -> list[Archive]:
    """Every archive, newest first, purged ones included (archive.manage)."""
    require(user, "archive.manage")
    return list(db.session.execute(db.select(Archive).order_by(Archive.id.desc())).unique().scalars())


def get_archive(user: User, archive_id: Any) -> Archive:
    """The archive a form or query names (archive.manage); FieldErrors("archive") when it names none."""
    require(user, "archive.manage")
    try:
        found = db.session.get(Archive, int(archive_id))
    except (TypeError, ValueError):
        found = None
    if found is None:
        raise FieldErrors({"archive": "Choose an archive." if not archive_id else f"There is no archive {archive_id}."})
    return found


def download_path(user: User, archive: Archive) -> Path:
    """The file to send for ``archive`` (archive.manage).  Conflict (409) for a purged archive, or one kept on a
    cluster's archive location the console cannot read (Kubernetes: fetch it from there).  Audited."""
    require(user, "archive.manage")
    if archive.state != "kept":
        raise Conflict(f"Archive {archive.id} of {archive.hub_slug} was purged on {archive.purged_at:%Y-%m-%d}.")
    path = Path(archive.location)
    if "://" in archive.location or not path.is_file():
        raise Conflict(f"Archive {archive.id} is kept at {archive.location}, which the console cannot read: fetch it "
                       f"from there.")
    audit(user.email, "archive.download", archive.hub_slug, archive.institution_id, archive=archive.id)
    db.session.commit()
    return path


def restore(user: User, archive: Archive, slug: Any, institution: Any, cluster: Any) -> Operation:
    """A new hub made from ``archive`` (archive.manage): validated as any new hub (FieldErrors per field, nothing
    written), on a cluster whose backend can restore an archive of this kind.  Queues a "restore" operation, which
    puts the archive in place and then starts the hub like "create".  ``op.first_admin`` as :func:`hubs.create_hub`
    gives it.  Conflict (409) for a purged archive.  Commits."""
    require(user, "archive.manage")
    require(user, "hub.create")
    if archive.state != "kept":
        raise Conflict(f"Archive {archive.id} of {archive.hub_slug} was purged: there is nothing to restore.")
    new = hub_service.validate_new_hub(user, slug, institution, cluster)
    if new.cluster.backend != archive.backend or not hasattr(backend_class(new.cluster.backend), "restore_archive"):
        raise FieldErrors({"cluster": f"An archive made on a {archive.backend} cluster is restored onto a "
                                      f"{archive.backend} cluster that can read it; {new.cluster.name} is "
                                      f"{new.cluster.backend}."})
    admin, password = first_admin() if not new.institution.auth else (None, None)
    hub = hub_service._hub_of(new, admin)
    hub.spec = {**hub.spec, "restored_from": archive.id}
    db.session.add(hub)
    op = operations.enqueue(hub, "restore", user.email, data={"archive": archive.id})
    audit(user.email, "archive.restore", new.slug, new.institution.id, archive=archive.id,
          from_hub=archive.hub_slug, cluster=new.cluster.name)
    db.session.commit()
    op.first_admin = (admin["username"], password) if admin else None
    return op


def run_restore(worker, op: Operation, log):
    """The "restore" operation: put the archive into the new hub before its first start (once: ``op.data
    ["restored"]``), then bring the hub up as "create" does."""
    hub = op.hub
    if not op.data.get("restored") and hub.desired != "deleted":
        archive = db.session.get(Archive, op.data["archive"])
        if archive is None or archive.state != "kept":
            raise BackendError(f"archive {op.data['archive']} was purged before it could be restored")
        backend = hub_service.backend_for(hub.cluster)
        backend.restore_archive(config_service.hub_spec(hub), hub.backend_state or {}, archive.location, log,
                                sha256=archive.sha256)
        op.data = {**op.data, "restored": True}
        db.session.commit()
    return worker.ensure_running(op, log)


def purge(user: User | None, archive: Archive, actor: str | None = None) -> Archive:
    """Delete the archive's file for good and mark it purged (archive.manage; ``user`` None: the retention pass,
    as ``actor``).  Purging a purged archive changes nothing.  Conflict (409) when its backend cannot delete it
    (the row stays kept).  Commits."""
    if user is not None:
        require(user, "archive.manage")
    if archive.state == "purged":
        return archive
    lines: list[str] = []
    try:
        hub_service.backend_for(archive.cluster).purge_archive(archive.location, lines.append)
    except BackendError as exc:
        db.session.rollback()
        raise Conflict(f"Archive {archive.id} could not be purged: {exc}") from None
    archive.state, archive.purged_at = "purged", utcnow()
    audit(user.email if user else actor or SYSTEM_ACTOR, "archive.purge", archive.hub_slug, archive.institution_id,
          archive=archive.id, retained_until=archive.retain_until.isoformat(timespec="seconds"))
    db.session.commit()
    return archive


def purge_expired(now: datetime | None = None) -> int:
    """Purge every kept archive whose retention date has passed; returns how many were purged.  One that cannot
    be purged now is left kept (and tried again on the next pass).  Commits."""
    now = now or utcnow()
    due = db.session.execute(db.select(Archive).where(Archive.state == "kept", Archive.retain_until <= now)
                             .order_by(Archive.id)).unique().scalars().all()
    purged = 0
    for archive in due:
        try:
            purge(None, archive, SYSTEM_ACTOR)
            purged += 1
        except Conflict:
            continue
    return purged


def set_archive_location(user: User, cluster: Cluster, server: Any, path: Any) -> Cluster:
    """Where a Kubernetes cluster's archive Jobs write (cluster.manage): an NFS ``server`` (host name or address)
    and an absolute export ``path``; both empty clears it (decommissioning is then refused by the backend).  Kept in
    the cluster's settings as ``archive_nfs``.  Raises FieldErrors (nothing written); Conflict (409) for a cluster
    that is not Kubernetes (local clusters keep archives in the console's data directory).  Commits."""
    require(user, "cluster.manage", cluster)
    if cluster.backend != "kubernetes":
        raise Conflict(f"Cluster {cluster.name} is {cluster.backend}: its archives are kept in the console's data "
                       f"directory; only Kubernetes clusters have an archive location.")
    server = server.strip() if isinstance(server, str) else ""
    path = path.strip() if isinstance(path, str) else ""
    errors = {}
    if server or path:
        if not NFS_SERVER_RE.match(server):
            errors["server"] = "The NFS server's host name or address, e.g. nfs.example.org."
        if not NFS_PATH_RE.match(path) or "/../" in f"{path}/" or "//" in path:
            errors["path"] = "The export's absolute path, e.g. /exports/hubfleet-archives."
    if errors:
        raise FieldErrors(errors)
    settings = {k: v for k, v in (cluster.settings or {}).items() if k != "archive_nfs"}
    if server:
        settings["archive_nfs"] = {"server": server, "path": path.rstrip("/") or "/"}
    cluster.settings = settings
    audit(user.email, "cluster.archive_location", cluster.name, server=server, path=path)
    db.session.commit()
    return cluster
