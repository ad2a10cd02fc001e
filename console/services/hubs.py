"""Hubs: create, restart, delete, list; the one writer of ``Hub.state``."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clusters import lifecycle
from clusters.base import Backend, BackendError, get_backend
from flask import current_app
from sqlalchemy.orm import lazyload, selectinload
from tenants.auth import first_admin
from werkzeug.exceptions import Conflict

from console.crypto import decrypt_json, service_key
from console.extensions import db
from console.models import Cluster, Hub, Institution, Operation, Release, User, utcnow
from console.permissions import require
from console.services import FieldErrors, audit, operations, scope
from console.services import clusters as cluster_service
from console.services import config as config_service
from console.services.releases import chart_problem, newest_release

SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")
SLUG_RULE = "3 to 40 characters: lower-case letters, digits and hyphens, starting with a letter"


def transition(hub: Hub, event: str) -> None:
    """Move ``hub`` along the lifecycle table; raises ``lifecycle.InvalidTransition``. The caller commits."""
    hub.state = lifecycle.next_state(hub.state, event)
    if hub.state == lifecycle.DELETED:
        hub.deleted_at = utcnow()


def observe_hub(hub: Hub, health: str, reason: str, result, now) -> None:
    """Write what was observed of ``hub`` (health and why, version, users, servers, probe time): the one writer of
    the observed columns, called by monitoring for probes and by the worker when a hub it started answers.

    ``result`` is a ``clusters.probe.ProbeResult``.  The caller commits.
    """
    if health != hub.health:
        hub.health_since = now
    hub.health, hub.observed_at = health, now
    hub.status_message = f"{reason}: {result.error}" if result.error else reason
    hub.probe_seconds = round(result.duration, 3)
    if result.up:
        hub.jupyterhub_version = result.version or hub.jupyterhub_version
        hub.user_count = result.total_users if result.total_users is not None else hub.user_count
        hub.running_servers = result.running_servers if result.running_servers is not None else hub.running_servers
        hub.active_users = result.active_users.get("24h", hub.active_users)


def mark_failed(hub: Hub, reason: str) -> None:
    """The hub has failed for ``reason`` (its status says so until it is observed again); the caller commits."""
    if hub.state != lifecycle.FAILED and lifecycle.HUB.allows(hub.state, "fail"):
        transition(hub, "fail")
    hub.status_message = reason


def list_hubs(user: User, institution: Institution | None = None) -> list[Hub]:
    """The live hubs ``user`` may see (of one institution if given), with their institution, cluster and release.

    Those three are loaded once each by a second query (``selectinload``), not joined to every hub row: a fleet of
    200 hubs has a few dozen institutions, and their JSON columns would otherwise be decoded once per hub."""
    query = (scope.hubs(user).join(Hub.institution).order_by(Institution.slug, Hub.slug)
             .options(selectinload(Hub.institution), selectinload(Hub.cluster), selectinload(Hub.release)))
    if institution is not None:
        query = query.where(Hub.institution_id == institution.id)
    return list(db.session.execute(query).unique().scalars())


def gauges(user: User) -> list[Any]:
    """What /metrics exposes of each live hub ``user`` sees, by institution and hub: rows of (slug, institution,
    cluster, health, running_servers, active_users, user_count, probe_seconds).  One statement; no hub, institution
    or cluster is loaded (a scrape of 200 hubs would decode all their JSON columns)."""
    return db.session.execute(
        scope.hubs(user).with_only_columns(
            Hub.slug, Institution.slug.label("institution"), Cluster.name.label("cluster"), Hub.health,
            Hub.running_servers, Hub.active_users, Hub.user_count, Hub.probe_seconds, maintain_column_froms=False)
        .select_from(Hub).join(Hub.institution).join(Hub.cluster).order_by(Institution.slug, Hub.slug)).all()


def backend_for(cluster: Cluster) -> Backend:
    """The backend that runs ``cluster``'s hubs, built from its settings (and, for Kubernetes, its kubeconfig,
    decrypted, and the key its hubs' service tokens are derived from)."""
    settings = dict(cluster.settings or {})
    if cluster.backend in ("local", "slurm"):  # a slurm hub is a local hub on the submit host
        settings.setdefault("environments", current_app.config["RELEASE_ENVIRONMENTS"])
    if cluster.backend == "kubernetes":
        settings["kubeconfig"] = decrypt_json(cluster.kubeconfig).get("kubeconfig") if cluster.kubeconfig else None
        settings["service_key"] = service_key()
    return get_backend(cluster.backend, **settings)


@dataclass(frozen=True)
class NewHub:
    """A request for a hub that passed validation: what :func:`create_hub` records and :func:`dry_run` shows."""

    slug: str
    institution: Institution
    cluster: Cluster
    release: Release | None  # the newest ready release of the stable channel (None: the platform default)


def validate_new_hub(user: User, slug: str | None, institution: str | None, cluster: str | None,
                     dry_run: bool = False) -> NewHub:
    """Check a request for a new hub as ``user`` may make it; FieldErrors naming each field at fault.  Reads only.

    The cluster must be ready for hubs; a Kubernetes cluster must have passed its onboarding check (the refusal
    names the failed checks), except for a ``dry_run``, which shows any Kubernetes cluster's objects, onboarded or
    not.  A hub on Kubernetes also needs a release that names a chart version.
    """
    slug, institution, cluster = (v.strip() if isinstance(v, str) else v for v in (slug, institution, cluster))
    errors: dict[str, str] = {}
    if not slug:
        errors["slug"] = "A slug is required."
    elif not SLUG_RE.match(slug):
        errors["slug"] = f"Use {SLUG_RULE}."
    elif db.session.execute(scope.hubs(user).where(Hub.slug == slug)).first():
        errors["slug"] = f"A hub named {slug!r} already exists."
    inst = clus = None
    if not institution:
        errors["institution"] = "Choose an institution."
    else:
        inst = db.session.execute(scope.institutions(user).filter_by(slug=institution)).scalar_one_or_none()
        if inst is None:
            errors["institution"] = f"There is no institution {institution!r}."
    release = newest_release("stable")
    if not cluster:
        errors["cluster"] = "Choose a cluster."
    else:
        clus = db.session.execute(scope.clusters(user).filter_by(name=cluster)).scalar_one_or_none()
        if clus is None:
            errors["cluster"] = f"There is no cluster {cluster!r}."
        elif clus.backend == "kubernetes":
            problem = None if dry_run else cluster_service.onboarding_problem(clus)
            problem = problem or chart_problem(release, clus)
            if problem:
                errors["cluster"] = problem
        elif clus.backend == "slurm" and cluster_service.onboarding_problem(clus):
            errors["cluster"] = cluster_service.onboarding_problem(clus)
        elif clus.state != "ready":
            errors["cluster"] = f"Cluster {cluster!r} is {clus.state}, not ready for hubs."
    if errors:
        raise FieldErrors(errors)
    return NewHub(slug=slug, institution=inst, cluster=clus, release=release)


def _hub_of(new: NewHub, admin: dict | None) -> Hub:
    """The Hub row for ``new``, not added to the session (the caller adds it, or never does for a dry run)."""
    return Hub(slug=new.slug, institution=new.institution, cluster=new.cluster, desired="running",
               state=lifecycle.REQUESTED, spec={"first_admin": admin} if admin else {}, channel="stable",
               release=new.release)


def create_hub(user: User, slug: str | None, institution: str | None, cluster: str | None) -> Operation:
    """Record a new hub and queue its creation; returns the operation.  Commits.

    While the institution has configured no login, the hub admits only its first admin: the operation carries
    ``first_admin`` = (username, password), to show once to the creator (only the password's hash is kept, in the
    hub's spec); None otherwise.

    Raises PermissionDenied without hub.create, FieldErrors for bad input (nothing is written then).
    """
    require(user, "hub.create")
    new = validate_new_hub(user, slug, institution, cluster)
    admin, password = first_admin() if not new.institution.auth else (None, None)
    hub = _hub_of(new, admin)
    db.session.add(hub)
    op = operations.enqueue(hub, "create", user.email)
    audit(user.email, "hub.create", new.slug, new.institution.id, cluster=new.cluster.name,
          first_admin=admin["username"] if admin else None)
    db.session.commit()
    op.first_admin = (admin["username"], password) if admin else None
    return op


def dry_run(user: User, slug: str | None, institution: str | None, cluster: str | None) -> dict[str, Any]:
    """What creating this hub would make, without making anything: validated exactly as :func:`create_hub`
    (FieldErrors alike), then {"slug", "institution", "cluster", "backend"} with, for a Kubernetes cluster,
    "objects" (every object its backend would apply, secrets masked) and otherwise "config" (the rendered
    configuration, secrets masked).

    No row, operation or audit entry is written and no cluster is contacted: the hub is built in memory, never
    added to the session (and expunged should anything have cascaded it in), and rendered with autoflush off.
    """
    require(user, "hub.create")
    new = validate_new_hub(user, slug, institution, cluster, dry_run=True)
    admin, _ = first_admin() if not new.institution.auth else (None, None)
    hub = _hub_of(new, admin)
    # Kubernetes names embed the hub's id, given when its row is written: shown with the next one (a guess: a
    # hub created meanwhile takes it).  Set on this object only; it is never added to the session.
    hub.id = (db.session.execute(db.select(db.func.max(Hub.id))).scalar() or 0) + 1
    answer: dict[str, Any] = {"slug": new.slug, "institution": new.institution.slug, "cluster": new.cluster.name,
                              "backend": new.cluster.backend}
    try:
        with db.session.no_autoflush:
            if new.cluster.backend == "kubernetes":
                answer["objects"] = _manifests_of(hub)
            else:
                answer["config"] = config_service.render(hub, config_service.target_of(hub))
    finally:
        if hub in db.session:
            db.session.expunge(hub)
    return answer


def manifests(user: User, hub: Hub) -> list[dict[str, Any]]:
    """Every object the backend applies for ``hub`` (hub.manifests), secret values masked, computed from the hub's
    spec without contacting its cluster.  Conflict (409) for a hub whose cluster is not Kubernetes: its
    configuration is what ``/api/v1/hubs/SLUG/rendered`` shows."""
    require(user, "hub.manifests", hub)
    if hub.cluster.backend != "kubernetes":
        raise Conflict(f"Hub {hub.slug} runs on cluster {hub.cluster.name} ({hub.cluster.backend} backend): only "
                       f"hubs on Kubernetes clusters have manifests; see its rendered configuration instead.")
    return _manifests_of(hub)


def _manifests_of(hub: Hub) -> list[dict[str, Any]]:
    """The backend's masked objects for ``hub``; Conflict with the backend's reason when its spec cannot make them
    (a release's hub image without a tag, say)."""
    try:
        return backend_for(hub.cluster).manifests(config_service.hub_spec(hub))
    except BackendError as exc:
        raise Conflict(f"The objects of hub {hub.slug} cannot be made: {exc}.") from None


def restart_hub(user: User, hub: Hub) -> Operation:
    """Queue a restart of the hub (hub.restart)."""
    require(user, "hub.restart", hub)
    operations.admit(hub)
    op = operations.enqueue(hub, "restart", user.email)
    audit(user.email, "hub.restart", hub.slug, hub.institution_id)
    db.session.commit()
    return op


def set_release_policy(user: User, hub: Hub, channel: str | None = None, pinned: bool | None = None,
                       canary: bool | None = None) -> Hub:
    """The channel a hub follows, whether it is pinned to its release, whether it is a canary (hub.upgrade)."""
    require(user, "hub.upgrade", hub)
    if channel is not None:
        if channel not in ("stable", "beta"):
            raise FieldErrors({"channel": "Choose stable or beta."})
        hub.channel = channel
    if pinned is not None:
        hub.pinned = bool(pinned)
    if canary is not None:
        hub.canary = bool(canary)
    audit(user.email, "hub.release_policy", hub.slug, hub.institution_id, channel=hub.channel, pinned=hub.pinned,
          canary=hub.canary)
    db.session.commit()
    return hub


def check_hub(user: User, hub: Hub) -> Operation:
    """Queue a synthetic check of the hub (hub.restart): a test user's server started and stopped, timed."""
    require(user, "hub.restart", hub)
    operations.admit(hub)
    op = operations.enqueue(hub, "synthetic-check", user.email)
    audit(user.email, "hub.check", hub.slug, hub.institution_id)
    db.session.commit()
    return op


def delete_hub(user: User, hub: Hub) -> Operation:
    """Mark the hub for deletion and queue it (hub.delete). Calling it twice queues one deletion."""
    require(user, "hub.delete", hub)
    pending = db.session.execute(db.select(Operation).where(
        Operation.hub_id == hub.id, Operation.kind == "delete", Operation.state.in_(("queued", "running")))
    ).unique().scalars().first()
    if pending is not None:
        return pending
    hub.desired = "deleted"
    op = operations.enqueue(hub, "delete", user.email)
    audit(user.email, "hub.delete", hub.slug, hub.institution_id)
    db.session.commit()
    return op


def recent_operations(hub: Hub, limit: int = 20) -> list[Operation]:
    return list(db.session.execute(
        db.select(Operation).options(lazyload(Operation.hub)).where(Operation.hub_id == hub.id)
        .order_by(Operation.id.desc()).limit(limit)
    ).unique().scalars())
