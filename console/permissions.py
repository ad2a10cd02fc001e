"""Who may do what, declared once: each role grants a set of actions over a reach of objects.

``ROLES`` is the table.  An action is allowed on an object when the user's role grants the action and the object is
within the role's reach (an operator's reach is the fleet; an institution admin's is their own institution).  The
same table decides what is *visible*: an object is visible when the role grants its kind's view action
(``KINDS``) and the object is within reach.  Loaders (``console.services.scope``) answer 404 for an object that is
not visible and 403 (:class:`PermissionDenied`) for one that is visible but whose action is not granted; services
call :func:`require`; templates ask ``can(action, obj)``; every route names its action with :func:`requires`, and
``tests/console/test_permissions.py`` derives the role × route matrix from this table.

A new role is one more row of ``ROLES`` (with a new ``Reach`` if it reaches objects differently).  A name that is
not an action in ``ACTIONS`` is refused when this module is imported or when a route declares it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from flask import g, has_request_context
from sqlalchemy import ColumnElement, false, select, true

from console.extensions import db
from console.models import (INSTITUTION_ADMIN, MEMBER, OPERATOR, Alert, ApiToken, Cluster, Hub, Institution,
                            Invitation, Membership, Operation, Release, Rollout, User, WebhookTarget)
from console.models import ROLES as ROLE_NAMES

ACTIONS: dict[str, str] = {
    "hub.view": "See hubs, their status, charts, operations and rendered config.",
    "hub.use": "Open the hubs one is a member of and see them in My hubs.",
    "hub.create": "Create a hub.",
    "hub.restart": "Start, stop, restart or check a hub (queue work on it).",
    "hub.upgrade": "Choose what a hub is upgraded to: its channel, its pin, its canary mark.",
    "hub.delete": "Delete a hub.",
    "hub.manifests": "See every object the backend applies for a hub on Kubernetes (secret values masked).",
    "institution.view": "See institutions and their page.",
    "institution.create": "Create an institution.",
    "config.view": "See an institution's login, environment and the policy limiting them (never secret values).",
    "config.edit": "Draft, preview and apply an institution's login and environment.",
    "policy.set": "Set an institution's policy (its limits).",
    "idp.set": "Set or remove the identity provider an institution's people log into the console with.",
    "blackout.set": "Set the times an institution's hubs must not be touched.",
    "release.view": "See release names and notes (an institution admin: of releases their hubs run).",
    "release.manage": "Publish, retract, retry and delete releases; see their config and preparation.",
    "rollout.view": "See rollouts.",
    "rollout.manage": "Plan, start, pause, resume and abort rollouts; retry or skip their hubs.",
    "cluster.view": "See clusters and their plans.",
    "cluster.manage": "Provision, register, re-plan, approve, check and destroy clusters.",
    "alert.view": "See alerts and webhooks.",
    "webhook.add": "Add, edit, test and delete webhooks.",
    "user.invite": "See, invite, disable and remove people.",
    "token.manage": "Create, list and revoke one's own API tokens.",
    "audit.view": "Read the audit trail.",
    "fleet.export": "Scrape the fleet's metrics (Prometheus).",
    "fleet.apply": "Plan and apply a fleet document (the fleet as code) and reconcile a hub that drifted.",
    "usage.view": "See usage and estimated cost (an institution admin: of their own institution's hubs).",
    "usage.price": "Set a cluster's prices (per server-hour, CPU-hour, GB-hour).",
    "decommission.request": "Ask for a hub to be decommissioned (archived, then removed).",
    "hub.decommission": "Approve or refuse a decommission request; decommission a hub.",
    "archive.manage": "List, download, restore and purge hub archives.",
    "contact.edit": "Add, change and remove an institution's and its hubs' contacts.",
}


class UnknownAction(LookupError):
    """A name that is not in ``ACTIONS``: a typo that would otherwise silently allow or refuse."""


class PermissionDenied(Exception):
    """The user sees the object but may not do this to it; answered 403 (``console/errors.py``)."""

    def __init__(self, action: str, message: str | None = None):
        super().__init__(message or f"You may not do this ({action}).")
        self.action = action


def _known(actions) -> frozenset[str]:
    unknown = set(actions) - ACTIONS.keys()
    if unknown:
        raise UnknownAction(f"unknown action(s) {sorted(unknown)}; known: {sorted(ACTIONS)}")
    return frozenset(actions)


# -- what belongs where ---------------------------------------------------------------------------------------------

def _hubs_of(institution_id) -> Any:
    return select(Hub.id).where(Hub.institution_id == institution_id)


def _runs(release: Release, institution_id) -> bool:
    return db.session.execute(select(Hub.id).where(Hub.release_id == release.id, Hub.institution_id == institution_id,
                                                   Hub.state != "deleted").limit(1)).first() is not None


@dataclass(frozen=True)
class Kind:
    """A kind of object: the action that makes it visible (None: visible to everyone), and how one belongs to an
    institution (as a query condition and for one loaded object).  A kind without ``in_institution`` is
    fleet-wide."""

    view: str | None
    in_institution: Callable[[Any], ColumnElement] | None = None
    belongs: Callable[[Any, Any], bool] | None = None


class Fleet:
    """Something fleet-wide that is not a row: a fleet webhook, say (``can(user, "webhook.add", FLEET)``)."""


FLEET = Fleet()

KINDS: dict[type, Kind] = {
    Institution: Kind("institution.view", lambda i: Institution.id == i, lambda o, i: o.id == i),
    Hub: Kind("hub.view", lambda i: Hub.institution_id == i, lambda o, i: o.institution_id == i),
    # hub operations belong to the hub's institution; cluster and release operations are fleet-wide
    Operation: Kind("hub.view", lambda i: Operation.hub_id.in_(_hubs_of(i)),
                    lambda o, i: o.hub is not None and o.hub.institution_id == i),
    Alert: Kind("alert.view", lambda i: Alert.hub_id.in_(_hubs_of(i)), lambda o, i: o.hub.institution_id == i),
    WebhookTarget: Kind("alert.view", lambda i: WebhookTarget.institution_id == i,
                        lambda o, i: o.institution_id == i),
    Release: Kind("release.view", lambda i: Release.id.in_(
        select(Hub.release_id).where(Hub.institution_id == i, Hub.state != "deleted")), _runs),
    Rollout: Kind("rollout.view", lambda i: Rollout.institution_id == i, lambda o, i: o.institution_id == i),
    Cluster: Kind("cluster.view"),
    User: Kind("user.invite", lambda i: User.institution_id == i, lambda o, i: o.institution_id == i),
    Invitation: Kind("user.invite", lambda i: Invitation.institution_id == i, lambda o, i: o.institution_id == i),
    # a membership of a hub belongs to the hub's institution; one of all its hubs to the institution
    Membership: Kind("user.invite", lambda i: Membership.hub_id.in_(_hubs_of(i)) | (Membership.institution_id == i),
                     lambda o, i: (o.hub.institution_id if o.hub_id is not None else o.institution_id) == i),
    Fleet: Kind(None),
}
_known(kind.view for kind in KINDS.values() if kind.view)

# Kinds that are their owner's alone, whatever the role: {kind: the owner's column}.
OWN = {ApiToken: ApiToken.user_id}


def _kind(obj_or_model) -> Kind:
    model = obj_or_model if isinstance(obj_or_model, type) else type(obj_or_model)
    if model not in KINDS:
        raise LookupError(f"permissions know no kind {model.__name__}; add it to KINDS")
    return KINDS[model]


# -- reaches and roles ---------------------------------------------------------------------------------------------

class Reach(Protocol):
    """The objects a role's actions apply to."""

    def where(self, user: User, model: type) -> ColumnElement:
        """A query condition selecting the rows of ``model`` within ``user``'s reach."""
        ...

    def sees(self, user: User, obj: Any) -> bool:
        """Whether the loaded ``obj`` is within ``user``'s reach."""
        ...


class FleetReach(Reach):
    """Every object."""

    def where(self, user, model):
        return true()

    def sees(self, user, obj):
        return True


class InstitutionReach(Reach):
    """The objects of the user's own institution; nothing fleet-wide."""

    def where(self, user, model):
        kind = _kind(model)
        return kind.in_institution(user.institution_id) if kind.in_institution else false()

    def sees(self, user, obj):
        kind = _kind(obj)
        return kind.belongs is not None and user.institution_id is not None and kind.belongs(obj, user.institution_id)


def member_hubs(user_id) -> Any:
    """The ids of the hubs ``user_id`` holds an active membership of: the hub's own, or all of an institution's."""
    active = (Membership.user_id == user_id) & Membership.active_clause()
    return select(Hub.id).where(
        Hub.id.in_(select(Membership.hub_id).where(active, Membership.hub_id.is_not(None)))
        | Hub.institution_id.in_(select(Membership.institution_id).where(active,
                                                                          Membership.institution_id.is_not(None))))


class MemberReach(Reach):
    """The hubs of the person's active memberships (a hub's, or every hub of an institution's); nothing else."""

    def where(self, user, model):
        return Hub.id.in_(member_hubs(user.id)) if model is Hub else false()

    def sees(self, user, obj):
        if not isinstance(obj, Hub) or user.id is None:
            return False
        return db.session.execute(member_hubs(user.id).where(Hub.id == obj.id)).first() is not None


@dataclass(frozen=True)
class Role:
    label: str  # "an operator": how the role is named where a person of it is not shown
    reach: Reach
    actions: frozenset[str]


ROLES: dict[str, Role] = {
    OPERATOR: Role("an operator", FleetReach(), _known(ACTIONS)),
    INSTITUTION_ADMIN: Role("an institution admin", InstitutionReach(), _known({
        "hub.view", "hub.restart", "institution.view", "config.view", "config.edit", "blackout.set",
        "release.view", "alert.view", "webhook.add", "user.invite", "token.manage", "audit.view", "hub.use",
        "usage.view", "decommission.request", "contact.edit"})),
    # Members keep to My hubs; operators and institution admins also hold memberships (listed in their My hubs),
    # which add nothing to their role's reach over the fleet pages.
    MEMBER: Role("a member", MemberReach(), _known({"hub.use", "token.manage"})),
}
if set(ROLES) != set(ROLE_NAMES):
    raise LookupError(f"console.models.ROLES {ROLE_NAMES} and the permission table {sorted(ROLES)} differ")


def role_of(user: User) -> Role:
    return ROLES[user.role]


# -- asking --------------------------------------------------------------------------------------------------------

def can(user: User, action: str, obj: Any = None) -> bool:
    """Whether ``user`` may do ``action`` (to ``obj``, when given: it must be within the role's reach)."""
    _known((action,))
    role = role_of(user)
    if action not in role.actions:
        return False
    if obj is None:
        return True
    if type(obj) in OWN:
        return getattr(obj, OWN[type(obj)].key) == user.id
    return role.reach.sees(user, obj)


def require(user: User, action: str, obj: Any = None) -> None:
    """Raise :class:`PermissionDenied` unless :func:`can`."""
    if not can(user, action, obj):
        raise PermissionDenied(action)


def visible(user: User, model: type) -> ColumnElement:
    """The query condition for the ``model`` rows ``user`` may see (false when the role lacks the kind's view)."""
    if model in OWN:
        return OWN[model] == user.id
    kind = _kind(model)
    role = role_of(user)
    if kind.view not in role.actions:
        return false()
    return role.reach.where(user, model)


def sees(user: User, obj: Any) -> bool:
    """Whether ``obj`` is visible to ``user`` (the object-level twin of :func:`visible`)."""
    if type(obj) in OWN:
        return getattr(obj, OWN[type(obj)].key) == user.id
    view = _kind(obj).view
    return view is None or can(user, view, obj)


def actor_label(viewer: User, actor: str) -> str:
    """Who did something, as ``viewer`` may read it: a person's email only when that person is within the viewer's
    reach (so operators' emails never reach an institution admin); otherwise their role ("an operator").  Names of
    the console's own processes ("monitor", "hubfleet-rollout") are not emails and are shown as they are."""
    if not actor or "@" not in actor or isinstance(role_of(viewer).reach, FleetReach):
        return actor
    cache = g.setdefault("_actor_labels", {}) if has_request_context() else {}
    if actor not in cache:
        person = db.session.execute(select(User).filter_by(email=actor)).unique().scalar_one_or_none()
        if person is not None and role_of(viewer).reach.sees(viewer, person):
            cache[actor] = actor
        else:
            cache[actor] = ROLES[person.role].label if person is not None else "a former user"
    return cache[actor]


# -- routes --------------------------------------------------------------------------------------------------------

# URL arguments that name what to do rather than an object (``/rollouts/<id>/<action>``).
VERB_ARGS = frozenset({"action"})
# Declared by a route every signed-in person may use for themselves (signing out, say): no action to check.
SIGNED_IN = "signed-in"


def requires(action: str):
    """Declare the action a view (or an API method) needs; ``action_of`` reads it back for tests.

    A route whose URL names no object is checked here (the role alone decides: 403).  A route that loads an object
    passes the same action to its ``scope`` loader, which answers 404 or 403 for that object.  ``SIGNED_IN``: any
    signed-in person.
    """
    if action != SIGNED_IN:
        _known((action,))

    def decorate(view):
        @functools.wraps(view)
        def checked(*args, **kwargs):
            if action != SIGNED_IN and not kwargs.keys() - VERB_ARGS:
                require(g.user, action)
            return view(*args, **kwargs)

        checked.permission = action
        return checked

    return decorate


def action_of(app, endpoint: str, method: str) -> str | None:
    """The action a route declared with :func:`requires` (None: it declared none)."""
    view = app.view_functions[endpoint]
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        view = getattr(view_class, method.lower(), None)
    return getattr(view, "permission", None)


def template_can(action: str, obj: Any = None) -> bool:
    """``can`` for templates, about the signed-in user: ``{% if can("hub.delete", hub) %}``."""
    return g.get("user") is not None and can(g.user, action, obj)


def template_actor(actor: str) -> str:
    """``actor_label`` for templates: ``{{ actor(op.actor) }}``."""
    return actor_label(g.user, actor) if g.get("user") is not None else actor
