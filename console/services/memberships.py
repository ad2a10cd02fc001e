"""Memberships: which hubs a person belongs to, granted by invitation links, institution rules or operators.

A membership makes a person a member (or hub admin) of one hub, or of every hub of an institution.  It is active
while neither revoked nor expired.  Hub invitations are ``Invitation`` rows with a hub: a logged-in person who opens
the link joins the hub.  Redeeming takes one use with one conditional UPDATE whose rowcount says whether this request
got it, so a link for five people admits exactly five however many try at once, on SQLite and PostgreSQL alike.

"My hubs" (``my_hubs``) reads memberships, the hubs they reach and the servers the monitoring sweep last saw
(``ServerSnapshot``): two queries, never a call to a hub.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_
from sqlalchemy.orm import lazyload
from werkzeug.exceptions import Gone, NotFound

from clusters import lifecycle
from tenants.auth import FEDERATED
from console.extensions import db
from console.models import (INSTITUTION_ADMIN, MEMBER, MEMBERSHIP_ROLES, MEMBERSHIP_SOURCES, Hub, Institution,
                            Invitation, Membership, ServerSnapshot, User, utcnow)
from console.permissions import require
from console.services import FieldErrors, audit, federation, operations
from console.services.people import take_use

MIN_EXPIRES_IN = 3600  # seconds: a hub invitation lasts at least an hour ...
MAX_EXPIRES_IN = 90 * 86400  # ... and at most 90 days; it must expire
MAX_USES = 1000
EXPIRY_CHOICES = ((3600, "1 hour"), (86400, "1 day"), (7 * 86400, "7 days"), (30 * 86400, "30 days"),
                  (90 * 86400, "90 days"))
ROLE_RANK = {"member": 0, "hub-admin": 1, "institution admin": 2}


# -- grants ---------------------------------------------------------------------------------------------------------


def _active(now: datetime | None = None):
    return Membership.active_clause(now)


def grant(user: User, *, hub: Hub | None = None, institution: Institution | None = None, role: str = "member",
          source: str, ref: str = "", expires_at: datetime | None = None,
          created_by: User | None = None) -> Membership:
    """Make ``user`` ``role`` of ``hub`` or of every hub of ``institution`` (exactly one).

    Idempotent per (user, hub or institution, source, ref): an active grant with that key is updated (role,
    expiry) and returned; a revoked or expired one stays as it was, for the record, and a new one is made.  The
    caller checks who may grant and commits."""
    if (hub is None) == (institution is None):
        raise ValueError("a membership is of one hub or of one institution's hubs: give exactly one")
    if role not in MEMBERSHIP_ROLES or source not in MEMBERSHIP_SOURCES:
        raise ValueError(f"role must be one of {MEMBERSHIP_ROLES}, source one of {MEMBERSHIP_SOURCES}")
    where = Membership.hub_id == hub.id if hub is not None else Membership.institution_id == institution.id
    found = db.session.execute(db.select(Membership).where(
        Membership.user_id == user.id, where, Membership.source == source, Membership.ref == ref, _active())
        .order_by(Membership.id.desc()).limit(1)).unique().scalar_one_or_none()
    if found is not None:
        found.role, found.expires_at = role, expires_at
        return found
    membership = Membership(user=user, hub=hub, institution=institution, role=role, source=source, ref=ref,
                            expires_at=expires_at, created_by_id=created_by.id if created_by else None)
    db.session.add(membership)
    db.session.flush()
    return membership


def _institution_of(membership: Membership) -> int | None:
    return membership.hub.institution_id if membership.hub is not None else membership.institution_id


def _target(membership: Membership) -> str:
    where = membership.hub.slug if membership.hub is not None else f"all hubs of {membership.institution.slug}"
    return f"{membership.user.username} in {where}"


def revoke(membership: Membership, actor: User) -> None:
    """End ``membership`` now, audited; again: nothing changes.  The caller checks that ``actor`` may (routes load
    the membership with ``get_membership``) and commits."""
    if membership.revoked_at is not None:
        return
    membership.revoked_at = utcnow()
    # Federated hubs the person no longer belongs to lose them: the tokens the hub holds stop working (its next
    # refresh asks for a new login, which it refuses) and their server there is stopped.
    lost = hubs_lost(membership)
    revoked = federation.revoke_tokens(membership.user_id, [federation.client_id_of(hub) for hub in lost]) \
        if lost else 0
    for hub in lost:
        operations.enqueue(hub, "stop-server", actor.email, data={"username": membership.user.username})
    audit(actor.email, "membership.revoke", _target(membership), _institution_of(membership),
          membership=membership.id, source=membership.source, role=membership.role, hub_tokens_revoked=revoked,
          servers_stopped=[hub.slug for hub in lost])


def hubs_lost(membership: Membership) -> list[Hub]:
    """The live federated hubs the ended ``membership`` reached and its person no longer belongs to (no other
    membership, not the institution's admin)."""
    if membership.hub is not None:
        hubs = [membership.hub]
    else:
        hubs = list(db.session.execute(db.select(Hub).where(Hub.institution_id == membership.institution_id))
                    .unique().scalars())
    return [hub for hub in hubs if hub.state != lifecycle.DELETED
            and (hub.institution.auth or {}).get("authenticator_class") == FEDERATED
            and federation.MEMBER_GROUP not in federation.groups_for(membership.user, hub)]


def active_memberships(user: User) -> list[Membership]:
    """``user``'s memberships that are neither revoked nor expired, oldest first."""
    return list(db.session.execute(db.select(Membership).where(Membership.user_id == user.id, _active())
                                   .order_by(Membership.id)).unique().scalars())


def hub_members(hub: Hub) -> list[Membership]:
    """The active memberships of ``hub`` itself (not those of all its institution's hubs), by username."""
    return list(db.session.execute(
        db.select(Membership).options(lazyload(Membership.hub)).join(User, User.id == Membership.user_id)
        .where(Membership.hub_id == hub.id, _active()).order_by(User.username, Membership.id)).unique().scalars())


def revoke_member(actor: User, hub: Hub, user_id: int) -> int:
    """End every active membership ``user_id`` holds of ``hub`` (load the hub for "user.invite").  Returns how many
    ended (0: none was active).  Raises NotFound when that person never was a member of the hub.  Commits."""
    require(actor, "user.invite", hub)
    held = db.session.execute(db.select(Membership).where(Membership.hub_id == hub.id,
                                                          Membership.user_id == user_id)).unique().scalars().all()
    if not held:
        raise NotFound("this person is not a member of this hub")
    ended = [m for m in held if m.active]
    for membership in ended:
        revoke(membership, actor)
    db.session.commit()
    return len(ended)


def end_membership(actor: User, membership: Membership) -> None:
    """``revoke`` for someone who may invite to the membership's hub or institution.  Commits."""
    require(actor, "user.invite", membership)
    revoke(membership, actor)
    db.session.commit()


def get_membership(actor: User, hub: Hub, membership_id: int) -> Membership:
    """A membership of ``hub`` (loaded for "user.invite"); NotFound for any other."""
    require(actor, "user.invite", hub)
    found = db.session.execute(db.select(Membership).where(Membership.id == membership_id,
                                                           Membership.hub_id == hub.id)).unique().scalar_one_or_none()
    if found is None:
        raise NotFound("no membership of this hub by that number")
    return found


# -- hub invitations ------------------------------------------------------------------------------------------------


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _bounded(value, field: str, low: int, high: int, message: str, errors: dict[str, str]) -> int:
    if isinstance(value, bool):
        value = None
    try:
        number = int(value) if not isinstance(value, str) or len(value.strip()) < 12 else None
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        errors[field] = message
        return low
    return number


def invite(actor: User, hub: Hub, expires_in, max_uses) -> tuple[Invitation, str]:
    """A link that makes up to ``max_uses`` (1..1000) logged-in people members of ``hub`` for ``expires_in``
    seconds (an hour to 90 days).  Returns it with its token, which is shown once and never stored.  Raises
    PermissionDenied unless ``actor`` may invite to the hub (an operator, or its institution's admin), FieldErrors
    (nothing written) for bad input.  Commits."""
    require(actor, "user.invite", hub)
    errors: dict[str, str] = {}
    seconds = _bounded(expires_in, "expires_in", MIN_EXPIRES_IN, MAX_EXPIRES_IN,
                       f"Enter a number of seconds from {MIN_EXPIRES_IN} (1 hour) to {MAX_EXPIRES_IN} (90 days).",
                       errors)
    uses = _bounded(max_uses, "max_uses", 1, MAX_USES, f"Enter a whole number from 1 to {MAX_USES}.", errors)
    if errors:
        raise FieldErrors(errors)
    token = secrets.token_urlsafe(24)  # 192 random bits
    invitation = Invitation(token_hash=_hash(token), role=MEMBER, hub=hub, institution_id=hub.institution_id,
                            expires_at=utcnow() + timedelta(seconds=seconds), max_uses=uses, created_by=actor)
    db.session.add(invitation)
    db.session.flush()
    audit(actor.email, "hub-invitation.create", f"invitation {invitation.id} to {hub.slug}", hub.institution_id,
          hub=hub.slug, expires_at=f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC", max_uses=uses)
    db.session.commit()
    return invitation, token


def hub_invitations(hub: Hub) -> list[Invitation]:
    """The invitations to ``hub`` that were not withdrawn (used up and expired ones too, to show), newest first."""
    return list(db.session.execute(
        db.select(Invitation).options(lazyload(Invitation.hub))
        .where(Invitation.hub_id == hub.id, Invitation.revoked_at.is_(None))
        .order_by(Invitation.id.desc())).unique().scalars())


def refusal(invitation: Invitation | None) -> str | None:
    """Why a hub invitation cannot be used now (the sentence its invitee reads), or None when it can."""
    if invitation is None:
        return "This invitation link is not valid. Check that you copied all of it, or ask for a new one."
    if invitation.revoked_at is not None:
        return "This invitation was revoked. Ask whoever invited you for a new one."
    if invitation.hub is not None and invitation.hub.state == lifecycle.DELETED:
        return f"The hub {invitation.hub.slug} this invitation is for was deleted."
    if invitation.use_count >= invitation.max_uses:
        return (f"This invitation is used up: all {invitation.max_uses} of its uses were taken. "
                "Ask whoever invited you for a new one.")
    if invitation.expires_at <= utcnow():
        return (f"This invitation expired on {invitation.expires_at:%Y-%m-%d %H:%M} UTC. "
                "Ask whoever invited you for a new one.")
    return None


def invitation_for_join(token: str) -> Invitation:
    """The usable hub invitation behind ``token``.  Raises NotFound for a token that is not one (an account
    invitation is not one either), Gone with the sentence to show for one revoked, used up or expired."""
    invitation = db.session.execute(db.select(Invitation).where(Invitation.token_hash == _hash(token or ""),
                                                                Invitation.hub_id.is_not(None))
                                    ).unique().scalar_one_or_none()
    reason = refusal(invitation)
    if reason:
        raise (NotFound if invitation is None else Gone)(reason)
    return invitation


def _held(user: User, invitation: Invitation) -> Membership | None:
    return db.session.execute(db.select(Membership).where(
        Membership.user_id == user.id, Membership.source == "invitation", Membership.ref == str(invitation.id),
        _active()).limit(1)).unique().scalar_one_or_none()


def join(user: User, token: str) -> tuple[Membership, bool]:
    """Make ``user`` a member of the invitation's hub; returns (membership, whether it is new).

    A person who joined with this link already keeps their membership and takes no use.  Otherwise one conditional
    UPDATE takes a use (still unused, unexpired, not revoked) and the membership is made in the same transaction
    only if it changed a row.  Raises NotFound / Gone as ``invitation_for_join`` does (also when others took the
    last use meanwhile).  Commits."""
    invitation = invitation_for_join(token)
    held = _held(user, invitation)
    if held is not None:
        return held, False
    take_use(invitation, refusal, "This invitation is used up. Ask whoever invited you for a new one.")
    membership = grant(user, hub=invitation.hub, source="invitation", ref=str(invitation.id),
                       created_by=invitation.created_by)
    audit(user.email, "hub-invitation.redeem", _target(membership), invitation.hub.institution_id,
          invitation=invitation.id, membership=membership.id)
    db.session.commit()
    return membership, True


def hub_section(hub: Hub) -> dict:
    """What the hub page shows, to whoever may invite to the hub, of its members and invitation links."""
    return {"members": hub_members(hub), "hub_invitations": hub_invitations(hub), "expiry_choices": EXPIRY_CHOICES,
            "max_uses": MAX_USES}


# -- My hubs --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MyHub:
    """One row of My hubs: a hub the person belongs to, how, and what the last sweep saw of their server."""

    hub_id: int
    slug: str
    institution: str  # the institution's name
    institution_slug: str
    role: str  # member | hub-admin | institution admin
    source: str  # invitation | rule | operator | institution (an institution admin's own hubs)
    expires_at: datetime | None
    server_state: str | None  # running | pending | stopped; None: the sweep never saw a server of theirs
    started: datetime | None
    last_activity: datetime | None
    launch_url: str | None  # None when it cannot be opened now (see launch_reason)
    launch_reason: str  # why Launch is disabled ("" when it is not)


def launch(hub: Hub) -> tuple[str | None, str]:
    """(the hub's JupyterLab link for whoever opens it, why it cannot be opened now); pure."""
    if not hub.url:
        return None, "The hub has no address yet."
    if hub.state not in lifecycle.SERVING:
        return None, f"The hub is {hub.state}, not running."
    base = hub.url if hub.url.endswith("/") else hub.url + "/"
    return f"{base}hub/user-redirect/lab", ""


def _stronger(row: MyHub, other: MyHub) -> bool:
    """Whether ``row`` says more than ``other`` about the same hub: a higher role, then a later (or no) expiry."""
    if ROLE_RANK[row.role] != ROLE_RANK[other.role]:
        return ROLE_RANK[row.role] > ROLE_RANK[other.role]
    return (row.expires_at is None) or (other.expires_at is not None and row.expires_at > other.expires_at)


def _row(hub: Hub, institution: Institution, role: str, source: str, expires_at, snapshot) -> MyHub:
    url, reason = launch(hub)
    return MyHub(hub.id, hub.slug, institution.name, institution.slug, role, source, expires_at,
                 snapshot.state if snapshot else None, snapshot.started if snapshot else None,
                 snapshot.last_activity if snapshot else None, url, reason)


def my_hubs(user: User) -> list[MyHub]:
    """Every live hub ``user`` belongs to, one row each, by institution and slug: their active memberships, and for
    an institution admin every hub of their institution.  An operator's fleet is not "theirs": only memberships
    count.  Two queries (memberships with their hubs and snapshots; an admin's own hubs), never a call to a hub."""
    snapshot = and_(ServerSnapshot.hub_id == Hub.id, ServerSnapshot.username == user.username)
    rows = db.session.execute(
        db.select(Membership.role, Membership.source, Membership.expires_at, Hub, Institution, ServerSnapshot)
        .join(Hub, or_(Hub.id == Membership.hub_id, Hub.institution_id == Membership.institution_id))
        .join(Institution, Institution.id == Hub.institution_id)
        .outerjoin(ServerSnapshot, snapshot)
        .where(Membership.user_id == user.id, _active(), Hub.state != lifecycle.DELETED)).unique().all()
    found = [_row(hub, institution, role, source, expires_at, snap)
             for role, source, expires_at, hub, institution, snap in rows]
    if user.role == INSTITUTION_ADMIN and user.institution_id is not None:
        found += [_row(hub, institution, "institution admin", "institution", None, snap)
                  for hub, institution, snap in db.session.execute(
                      db.select(Hub, Institution, ServerSnapshot)
                      .join(Institution, Institution.id == Hub.institution_id).outerjoin(ServerSnapshot, snapshot)
                      .where(Hub.institution_id == user.institution_id, Hub.state != lifecycle.DELETED)
                  ).unique().all()]
    best: dict[int, MyHub] = {}
    for row in found:
        if row.hub_id not in best or _stronger(row, best[row.hub_id]):
            best[row.hub_id] = row
    return sorted(best.values(), key=lambda r: (r.institution, r.slug))


def home_endpoint(user: User) -> str:
    """Where ``user`` lands after logging in: members on My hubs, everyone else on the fleet."""
    return "memberships.my_hubs" if user.role == MEMBER else "fleet.index"
