"""Objects loaded as the user may reach them, by the permission table (``console.permissions``).

Lists hold only what the user may see.  A loader takes the action the caller is about to do: an object the user may
not see is simply not found (404, never "forbidden", which would confirm it exists); one they see but may not do
that action to is refused (``PermissionDenied``, 403).
"""
from __future__ import annotations

from sqlalchemy import Select
from sqlalchemy.orm import defaultload
from werkzeug.exceptions import NotFound

from console.extensions import db
from console.models import Alert, Cluster, Hub, Institution, Operation, Release, Rollout, User, WebhookTarget
from console.permissions import require, visible


def _visible(model, user: User) -> Select:
    return db.select(model).where(visible(user, model))


def hubs(user: User) -> Select:
    """Live (not deleted) hubs the user may see."""
    return _visible(Hub, user).where(Hub.state != "deleted")


def deleted_hubs(user: User) -> Select:
    """Deleted hubs the user may see, so a link to one can say what happened to it (never another institution's)."""
    return _visible(Hub, user).where(Hub.state == "deleted")


def institutions(user: User) -> Select:
    return _visible(Institution, user)


def clusters(user: User) -> Select:
    return _visible(Cluster, user).where(Cluster.state != "destroyed")


def operations(user: User) -> Select:
    """Hub operations of hubs the user may see; cluster and release operations with the fleet."""
    return _visible(Operation, user)


def releases(user: User) -> Select:
    """Releases the user may see (an institution admin: those their institution's hubs run), newest first."""
    return _visible(Release, user).order_by(Release.id.desc())


def rollouts(user: User) -> Select:
    return _visible(Rollout, user).order_by(Rollout.id.desc())


def alerts(user: User) -> Select:
    """The alerts ``user`` sees, newest first, with their hubs' own rows only: an alert shows no institution,
    cluster or release of its hub, and joining them had PostgreSQL plan a six-table join on every alerts page."""
    return _visible(Alert, user).options(defaultload(Alert.hub).lazyload("*")).order_by(Alert.id.desc())


def webhooks(user: User) -> Select:
    return _visible(WebhookTarget, user).order_by(WebhookTarget.id)


def load(query: Select, what: str, user: User, action: str | None):
    """The one object ``query`` finds: NotFound when there is none (not visible), PermissionDenied when ``user`` may
    not ``action`` it."""
    found = db.session.execute(query).unique().scalar_one_or_none()
    if found is None:
        raise NotFound(f"no {what} here by that name")
    if action is not None:
        require(user, action, found)
    return found


def get_hub(user: User, slug: str, action: str = "hub.view") -> Hub:
    return load(hubs(user).where(Hub.slug == slug), "hub", user, action)


def get_operation(user: User, operation_id: int, action: str = "hub.view") -> Operation:
    return load(operations(user).where(Operation.id == operation_id), "operation", user, action)


def get_cluster(user: User, name: str, action: str = "cluster.view") -> Cluster:
    return load(clusters(user).where(Cluster.name == name), "cluster", user, action)


def get_rollout(user: User, rollout_id: int, action: str = "rollout.view") -> Rollout:
    return load(_visible(Rollout, user).where(Rollout.id == rollout_id), "rollout", user, action)


def get_institution(user: User, slug: str, action: str = "institution.view") -> Institution:
    return load(institutions(user).where(Institution.slug == slug), "institution", user, action)


def get_release(user: User, name: str, action: str = "release.view") -> Release:
    return load(_visible(Release, user).where(Release.name == name), "release", user, action)


def get_webhook(user: User, webhook_id: int, action: str = "alert.view") -> WebhookTarget:
    """A webhook the user sees: an institution admin never sees the fleet's (404), nor another institution's."""
    return load(webhooks(user).where(WebhookTarget.id == webhook_id), "webhook", user, action)
