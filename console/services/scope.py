"""Queries scoped to what a user may reach: operators see everything, an institution admin only their institution.

Every page and API route loads objects through these, so an object of another institution is simply not found (404),
never "forbidden" (which would confirm it exists).
"""
from __future__ import annotations

from sqlalchemy import Select
from werkzeug.exceptions import NotFound

from console.extensions import db
from console.models import Cluster, Hub, Institution, Operation, Rollout, User


def _limit(query: Select, user: User, institution_column) -> Select:
    if user.is_operator:
        return query
    return query.where(institution_column == user.institution_id)


def hubs(user: User) -> Select:
    """Live (not deleted) hubs the user may see, with institution and cluster loaded in the same query."""
    return _limit(db.select(Hub).where(Hub.state != "deleted"), user, Hub.institution_id)


def deleted_hubs(user: User) -> Select:
    """Deleted hubs the user may see, so a link to one can say what happened to it (never another institution's)."""
    return _limit(db.select(Hub).where(Hub.state == "deleted"), user, Hub.institution_id)


def institutions(user: User) -> Select:
    return _limit(db.select(Institution), user, Institution.id)


def clusters(user: User) -> Select:
    """Clusters are the operators' alone."""
    query = db.select(Cluster).where(Cluster.state != "destroyed")
    return query if user.is_operator else query.where(db.false())


def operations(user: User) -> Select:
    """Hub operations of what the user may see; cluster operations for operators only."""
    return _limit(db.select(Operation).outerjoin(Operation.hub), user, Hub.institution_id)


def _one(query: Select, what: str):
    found = db.session.execute(query).unique().scalar_one_or_none()
    if found is None:
        raise NotFound(f"no {what} here by that name")
    return found


def get_hub(user: User, slug: str) -> Hub:
    return _one(hubs(user).where(Hub.slug == slug), "hub")


def get_operation(user: User, operation_id: int) -> Operation:
    return _one(operations(user).where(Operation.id == operation_id), "operation")


def get_cluster(user: User, name: str) -> Cluster:
    return _one(clusters(user).where(Cluster.name == name), "cluster")


def get_rollout(user: User, rollout_id: int) -> Rollout:
    """Rollouts are the operators' alone."""
    query = db.select(Rollout).where(Rollout.id == rollout_id)
    return _one(query if user.is_operator else query.where(db.false()), "rollout")


def get_institution(user: User, slug: str) -> Institution:
    return _one(institutions(user).where(Institution.slug == slug), "institution")
