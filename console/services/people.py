"""People: who may use the console, invited by link, disabled, enabled again and removed by admins.

Operators invite operators and institution admins of any institution; an institution admin invites admins of their
own institution.  An invitation is a random token of which only a hash is kept; redeeming it is one conditional
UPDATE whose rowcount says whether this request got a use, so two requests with the same link at once make exactly
one account, on SQLite and PostgreSQL alike.  People are loaded like every other object: what a user may not see is
not found (404).
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Callable

from sqlalchemy import Select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import Conflict, Gone, NotFound

from console.extensions import db
from console.models import (INSTITUTION_ADMIN, OPERATOR, ApiToken, ConfigDraft, Identity, Institution, Invitation,
                            Membership, OAuthCode, OAuthToken, User, UserSession, utcnow)
from console.permissions import FLEET, can, require, visible
from console.security import hash_password
from console.services import FieldErrors, audit, scope
from console.services.sessions import end_sessions
from console.services.users import email_problem, password_problem

INVITATION_DAYS = 7  # how long a link lasts unless the inviter says otherwise
MAX_INVITATION_DAYS = 30
MAX_USES = 100  # one link for a whole team at most; the default is one person
ROLE_LABELS = {OPERATOR: "operator", INSTITUTION_ADMIN: "institution admin", "member": "member"}
# The roles an account invitation creates; members join hubs by a hub's own invitation (services/memberships.py).
ROLES = (OPERATOR, INSTITUTION_ADMIN)
# Rows that are an account's own and go with it when it is removed (a test checks that no other table points at
# accounts but ``Invitation.created_by``, which is cleared instead).
OWNED_BY_ACCOUNT = (UserSession, ApiToken, ConfigDraft, Membership, Identity, OAuthToken, OAuthCode)


# -- who sees whom, who may do what (console.permissions: "user.invite") -----------------------------------------


def people(user: User) -> Select:
    """Accounts ``user`` may see: operators see everyone; an institution admin their own institution's people only
    (never an operator)."""
    return db.select(User).where(visible(user, User)).order_by(User.email)


def get_person(user: User, person_id: int, action: str = "user.invite") -> User:
    """The account ``person_id``: NotFound unless ``user`` may see it, PermissionDenied unless they may ``action``."""
    return scope.load(people(user).where(User.id == person_id), "person", user, action)


def invitations(user: User) -> Select:
    """Invitations ``user`` may see (operators all, an institution admin their institution's), newest first."""
    return db.select(Invitation).where(visible(user, Invitation)).order_by(Invitation.created_at.desc(),
                                                                           Invitation.id.desc())


def open_invitations(user: User) -> Select:
    """The account invitations ``user`` may see that can still be used (a hub's are listed on its page)."""
    return invitations(user).where(Invitation.hub_id.is_(None), Invitation.revoked_at.is_(None), Invitation.expires_at > utcnow(),
                                   Invitation.use_count < Invitation.max_uses)


def get_invitation(user: User, invitation_id: int, action: str = "user.invite") -> Invitation:
    """An invitation: NotFound unless ``user`` may see it, PermissionDenied unless they may ``action``."""
    return scope.load(invitations(user).where(Invitation.id == invitation_id), "invitation", user, action)


def _reach_of(role: str, institution: Institution | None):
    """What an account of ``role`` would reach, as the permission table knows objects: the fleet for an operator,
    its institution for an institution admin.  Inviting someone needs "user.invite" on that."""
    return FLEET if role == OPERATOR else institution


def invitable_roles(user: User) -> tuple[str, ...]:
    """Roles ``user`` may invite people to (an institution admin: only their own, for their own institution)."""
    return tuple(role for role in ROLES
                 if can(user, "user.invite", _reach_of(role, user.institution)))


def invitable_institutions(user: User) -> list[Institution]:
    """Institutions ``user`` may invite admins of."""
    return [institution for institution in db.session.execute(scope.institutions(user).order_by(Institution.name))
            .scalars() if can(user, "user.invite", institution)]


# -- invitations --------------------------------------------------------------------------------------------------


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bounded_int(value, field: str, low: int, high: int, errors: dict[str, str]) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        errors[field] = f"Enter a whole number from {low} to {high}."
        return low
    if not low <= number <= high:
        errors[field] = f"Enter a whole number from {low} to {high}."
    return number


def invite(actor: User, role: str | None, institution: str | None = None, email: str | None = None,
           days=INVITATION_DAYS, max_uses=1) -> tuple[Invitation, str]:
    """Create an invitation and return it with its token, which is shown once and never stored.

    ``institution`` is a slug (an institution admin's own institution when left out); ``email``, when given, is the
    only address the new account may have.  Raises PermissionDenied when ``actor`` may not invite to ``role``,
    FieldErrors (nothing written) for bad input.  Commits.
    """
    role = (role or "").strip()
    institution = (institution or "").strip() or None
    email = (email or "").strip().lower() or None
    if role == OPERATOR:
        require(actor, "user.invite", FLEET)
    errors: dict[str, str] = {}
    if role not in ROLES:
        errors["role"] = f"Choose one of {', '.join(ROLES)}."
    target = None
    if role == INSTITUTION_ADMIN:
        if institution is None and actor.institution is not None:  # an institution admin's own by default
            institution = actor.institution.slug
        if institution is None:
            errors["institution"] = "Choose the institution the new admin belongs to."
        else:
            # Another institution is simply not there for an institution admin, as everywhere else.
            target = db.session.execute(scope.institutions(actor).where(Institution.slug == institution)
                                        ).scalar_one_or_none()
            if target is None:
                errors["institution"] = f"There is no institution {institution!r}."
            else:
                require(actor, "user.invite", target)
    elif role == OPERATOR and institution is not None:
        errors["institution"] = "Operators are not bound to an institution."
    if email is not None:
        if problem := email_problem(email):
            errors["email"] = problem
        elif db.session.execute(people(actor).where(User.email == email)).first():
            # Only accounts the actor may see are named; any other clash is refused when the link is used.
            errors["email"] = f"An account {email!r} exists already."
    days = _bounded_int(days, "days", 1, MAX_INVITATION_DAYS, errors)
    max_uses = _bounded_int(max_uses, "max_uses", 1, MAX_USES, errors)
    if max_uses > 1 and email is not None:
        errors.setdefault("max_uses", "A link for one email address can be used once.")
    if errors:
        raise FieldErrors(errors)
    token = secrets.token_urlsafe(24)  # 192 random bits
    invitation = Invitation(token_hash=_hash(token), role=role, institution=target, email=email,
                            expires_at=utcnow() + timedelta(days=days), max_uses=max_uses, created_by=actor)
    db.session.add(invitation)
    db.session.flush()
    audit(actor.email, "invitation.create", email or f"invitation {invitation.id}", target.id if target else None,
          role=role, expires_at=f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC", max_uses=max_uses)
    db.session.commit()
    return invitation, token


def take_use(invitation: Invitation, why: Callable[[Invitation], str | None], used_up: str) -> None:
    """Take one use of ``invitation`` with one conditional UPDATE, so of two people taking its last use at the same
    moment exactly one wins.  Raises Gone with ``why(invitation)`` (or ``used_up``) when no use was left; the
    caller's transaction is rolled back then.  The caller commits otherwise."""
    taken = db.session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.use_count < Invitation.max_uses,
               Invitation.revoked_at.is_(None), Invitation.expires_at > utcnow())
        .values(use_count=Invitation.use_count + 1)
        .execution_options(synchronize_session=False))
    if taken.rowcount != 1:
        db.session.rollback()
        db.session.refresh(invitation)
        raise Gone(why(invitation) or used_up)


def refusal(invitation: Invitation | None) -> str | None:
    """Why an invitation cannot be used now (the sentence its invitee reads), or None when it can."""
    if invitation is None:
        return "This invitation link is not valid. Check that you copied all of it, or ask for a new one."
    if invitation.revoked_at is not None:
        return "This invitation was withdrawn. Ask whoever invited you for a new one."
    if invitation.use_count >= invitation.max_uses:
        return "This invitation link has been used already. Log in, or ask for a new invitation."
    if invitation.expires_at <= utcnow():
        return (f"This invitation expired on {invitation.expires_at:%Y-%m-%d %H:%M} UTC. "
                "Ask whoever invited you for a new one.")
    return None


def invitation_for_token(token: str) -> Invitation:
    """The usable invitation behind ``token``.  Raises NotFound for a token that is not one, Gone (with the
    sentence to show) for one that was withdrawn, used up or expired."""
    invitation = db.session.execute(db.select(Invitation).filter_by(token_hash=_hash(token or ""), hub_id=None)
                                    ).unique().scalar_one_or_none()
    reason = refusal(invitation)
    if reason:
        raise (NotFound if invitation is None else Gone)(reason)
    return invitation


def redeem(token: str, email: str | None, password: str | None, confirm: str | None) -> User:
    """Create the invited account and count the use.  The email is the invitation's when it fixes one.

    Race-safe: the use is taken by one conditional UPDATE (still unused, unexpired, not withdrawn) and the account is
    created in the same transaction only if that UPDATE changed a row.  Raises NotFound / Gone as
    ``invitation_for_token`` does (also when another request took the last use meanwhile), FieldErrors (nothing
    written) for bad input.  Commits.
    """
    invitation = invitation_for_token(token)
    email = invitation.email or (email or "").strip().lower()
    errors: dict[str, str] = {}
    if problem := email_problem(email):
        errors["email"] = problem
    elif db.session.execute(db.select(User.id).filter_by(email=email)).first():
        errors["email"] = "An account with this email exists already: log in instead."
    if problem := password_problem(password):
        errors["password"] = problem
    elif password != confirm:
        errors["confirm"] = "The two passwords differ."
    if errors:
        raise FieldErrors(errors)
    password_hash = hash_password(password)  # slow by design: before the write, so the write lock is held briefly
    take_use(invitation, refusal, "This invitation link has been used already.")
    user = User(email=email, role=invitation.role, institution_id=invitation.institution_id,
                password_hash=password_hash)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:  # the same email registered by another request a moment ago
        db.session.rollback()
        raise FieldErrors({"email": "An account with this email exists already: log in instead."}) from None
    audit(email, "invitation.redeem", email, invitation.institution_id, invitation=invitation.id,
          role=invitation.role)
    db.session.commit()
    return user


def revoke_invitation(actor: User, invitation: Invitation) -> Invitation:
    """Withdraw an invitation (load it with ``get_invitation``) so its link stops working; again: nothing changes.
    Commits."""
    require(actor, "user.invite", invitation)
    if invitation.revoked_at is not None:
        return invitation
    invitation.revoked_at = utcnow()
    audit(actor.email, "invitation.revoke", invitation.email or f"invitation {invitation.id}",
          invitation.institution_id, role=invitation.role)
    db.session.commit()
    return invitation


# -- disable, enable, remove --------------------------------------------------------------------------------------


def _lock_operators() -> None:
    """Lock the active operators' rows (PostgreSQL; in id order, so two of these never deadlock) before changing
    one, so two operators disabling each other at once are served one after the other.  SQLite ignores the lock:
    there the change itself takes the database's only write lock, and ``_refuse_no_operator_left`` reads after it."""
    db.session.execute(db.select(User.id).where(User.role == OPERATOR, User.disabled_at.is_(None))
                       .order_by(User.id).with_for_update())


def _refuse_no_operator_left(email: str, verb: str) -> None:
    """After a change to an operator was flushed: undo it and raise Conflict if no active operator is left."""
    if not db.session.execute(db.select(User.id).where(User.role == OPERATOR, User.disabled_at.is_(None))).first():
        db.session.rollback()
        raise Conflict(f"{email} is the last active operator: {verb} would leave nobody to run the console.")


def _refuse_self(actor: User, person: User, verb: str) -> None:
    if actor.id == person.id:
        raise Conflict(f"You cannot {verb} your own account.")


def _end_access(person: User, reason: str) -> None:
    """End the person's sessions and revoke their API tokens and the tokens hubs hold for them, so a disabled
    account is out at once (of hubs too, at their next refresh)."""
    end_sessions(person, reason)
    for model in (ApiToken, OAuthToken):
        db.session.execute(update(model).where(model.user_id == person.id, model.revoked_at.is_(None))
                           .values(revoked_at=utcnow()).execution_options(synchronize_session=False))


def disable(actor: User, person: User) -> User:
    """Disable an account (load it with ``get_person``): it can no longer log in, its sessions end and its API
    tokens are revoked.  Raises Conflict for one's own account or the last active operator.  Commits."""
    require(actor, "user.invite", person)
    _refuse_self(actor, person, "disable")
    if person.disabled_at is not None:
        return person
    if person.role == OPERATOR:
        _lock_operators()
    person.disabled_at = utcnow()
    db.session.flush()
    if person.role == OPERATOR:
        _refuse_no_operator_left(person.email, "disabling them")
    _end_access(person, "account disabled")
    audit(actor.email, "user.disable", person.email, person.institution_id, role=person.role)
    db.session.commit()
    return person


def enable(actor: User, person: User) -> User:
    """Let a disabled account log in again (with its password; its old sessions and tokens stay ended).  Commits."""
    require(actor, "user.invite", person)
    if person.disabled_at is None:
        return person
    person.disabled_at = None
    audit(actor.email, "user.enable", person.email, person.institution_id, role=person.role)
    db.session.commit()
    return person


def remove(actor: User, person: User) -> None:
    """Delete an account with its sessions, tokens and drafts; invitations it sent stay, without a sender.  Raises
    Conflict for one's own account or the last active operator.  Commits."""
    require(actor, "user.invite", person)
    _refuse_self(actor, person, "remove")
    email, role, institution_id = person.email, person.role, person.institution_id
    if role == OPERATOR:
        _lock_operators()
    for model in (Invitation, Membership):
        db.session.execute(update(model).where(model.created_by_id == person.id).values(created_by_id=None)
                           .execution_options(synchronize_session=False))
    for model in OWNED_BY_ACCOUNT:
        db.session.execute(db.delete(model).where(model.user_id == person.id)
                           .execution_options(synchronize_session=False))
    db.session.delete(person)
    db.session.flush()
    if role == OPERATOR:
        _refuse_no_operator_left(email, "removing them")
    audit(actor.email, "user.remove", email, institution_id, role=role)
    db.session.commit()
