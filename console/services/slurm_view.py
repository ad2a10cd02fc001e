"""Hubs on Slurm clusters: their profiles as job options within the cluster's policy, the batch script each profile
submits, and the hub's live view of Slurm (nodes, its pending and failed jobs in words).

The policy is the cluster's settings (``partitions`` with their maxima, ``qos``), set by the operator when the
cluster is registered; :mod:`tenants.slurm_jobs` checks profiles against it and renders the script, and
:mod:`clusters.slurm_health` reads Slurm.  Only hubs whose cluster's backend is ``slurm`` pay for any of it.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from clusters import lifecycle
from clusters.slurm_health import SlurmView, client_env, hub_view, job_name_prefix
from flask import current_app
from tenants.slurm_jobs import batch_script, check_profiles, job_options
from werkzeug.exceptions import Conflict

from console.extensions import db
from console.models import Cluster, Hub, Institution, User
from console.permissions import require

BACKEND = "slurm"


def on_slurm(hub: Hub) -> bool:
    """Whether the hub's servers run as Slurm jobs."""
    return hub.cluster.backend == BACKEND


def slurm_clusters(institution: Institution) -> list[Cluster]:
    """The Slurm clusters the institution has hubs on (not deleted ones), by name."""
    if institution.id is None:
        return []
    used = db.select(Hub.cluster_id).where(Hub.institution_id == institution.id, Hub.state != lifecycle.DELETED)
    return list(db.session.execute(
        db.select(Cluster).where(Cluster.id.in_(used), Cluster.backend == BACKEND).order_by(Cluster.name)).scalars())


def profile_errors(institution: Institution, environment: dict[str, Any]) -> dict[str, str]:
    """What of ``environment``'s profiles the policy of a Slurm cluster the institution has hubs on does not allow,
    keyed like the config's field errors ("environment.profiles.1.slurm.time_minutes"); empty when all fit or the
    institution has no hub on Slurm.  With hubs on several Slurm clusters the message names the cluster."""
    clusters = slurm_clusters(institution)
    errors: dict[str, str] = {}
    for cluster in clusters:
        for key, message in check_profiles(environment, cluster.settings or {}).items():
            named = f"{message} (cluster {cluster.name})" if len(clusters) > 1 else message
            errors.setdefault(f"environment.{key}", named)
    return errors


class ProfileScript(NamedTuple):
    profile: str  # the profile's display name, or "" for a hub without profiles
    options: dict[str, Any]
    script: str


def batch_scripts(hub: Hub, environment: dict[str, Any]) -> list[ProfileScript]:
    """Per profile of ``environment`` (the hub's effective one), the job options and batch script its servers are
    submitted with on the hub's cluster; one entry for the defaults when there are no profiles.  Empty for a hub
    not on Slurm."""
    if not on_slurm(hub):
        return []
    settings = hub.cluster.settings or {}
    profiles = environment.get("profiles") or []
    if not profiles:
        options = job_options(None, settings)
        return [ProfileScript("", options, batch_script(options))]
    return [ProfileScript(p.get("display_name", ""), options, batch_script(options))
            for p in profiles for options in [job_options(p.get("slurm"), settings)]]


def view(hub: Hub) -> SlurmView:
    """The hub's live view of its Slurm cluster (``clusters.slurm_health.hub_view``), each command bounded by
    SLURM_TIMEOUT; a job pending over SLURM_STUCK_MINUTES is stuck.  Never raises for Slurm's failures: the view's
    ``error`` says "Slurm did not answer: ..."."""
    settings = hub.cluster.settings or {}
    longer = db.session.execute(db.select(Hub.slug).where(
        Hub.cluster_id == hub.cluster_id, Hub.id != hub.id, Hub.state != lifecycle.DELETED,
        Hub.slug.startswith(hub.slug + "-", autoescape=True))).scalars()
    partitions = tuple(p["name"] for p in settings.get("partitions") or [] if isinstance(p, dict) and p.get("name"))
    return hub_view(client_env(settings), job_name_prefix(hub.slug),
                    exclude_prefixes=tuple(job_name_prefix(slug) for slug in longer), partitions=partitions,
                    stuck_after=int(float(current_app.config["SLURM_STUCK_MINUTES"]) * 60),
                    timeout=float(current_app.config["SLURM_TIMEOUT"]))


def hub_section(hub: Hub) -> dict[str, Any]:
    """What the hub page's Slurm section shows: ``slurm`` (:func:`view`) for a hub on Slurm; {} for any other hub,
    which costs it nothing."""
    return {"slurm": view(hub)} if on_slurm(hub) else {}


def hub_slurm(user: User, hub: Hub) -> dict[str, Any]:
    """The hub's view of Slurm as data (hub.view), what ``GET /api/v1/hubs/SLUG/slurm`` answers.  Conflict (409)
    for a hub whose cluster is not a Slurm cluster."""
    require(user, "hub.view", hub)
    if not on_slurm(hub):
        raise Conflict(f"Hub {hub.slug} runs on cluster {hub.cluster.name} ({hub.cluster.backend} backend): only "
                       f"hubs on Slurm clusters have a view of Slurm.")
    return {"hub": hub.slug, "cluster": hub.cluster.name, **view(hub).as_dict()}
