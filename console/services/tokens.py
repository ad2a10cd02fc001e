"""API tokens: named, scoped no wider than their owner, expiring, revocable.  Only a token's sha256 is stored.

Scopes are actions of the permission table (``console.permissions.ACTIONS``) or one of two groups derived from it:
"read" (every action that only looks) and "write" (every action).  A token may do an action when its scopes include
it and its owner's role grants it, so a group never reaches beyond the owner, and a role that loses an action takes
it from the role's tokens too.  The API checks a request's token against the action its route declares
(``console.security.require_login``); the services then check the owner as for a page.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import update
from werkzeug.exceptions import NotFound

from console.extensions import db
from console.models import ApiToken, User, utcnow
from console.permissions import ACTIONS, require, role_of, visible
from console.services import FieldErrors, audit

DEFAULT_DAYS, MAX_DAYS = 90, 365
MAX_NAME = 100
USE_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often: not a write per request
GROUPS: dict[str, frozenset[str]] = {
    # reading too: a hub's manifests (computed, nothing changes), the fleet's metrics, one's own hubs
    "read": frozenset(action for action in ACTIONS if action.endswith(".view")) | {"fleet.export", "hub.manifests",
                                                                                  "hub.use"},
    "write": frozenset(ACTIONS),
}
GROUP_HELP = {"read": "everything you may see", "write": "everything you may do"}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def actions_of(scopes: list[str], user: User) -> frozenset[str]:
    """The actions ``scopes`` give a token of ``user``: never more than the user's role grants."""
    wanted = set()
    for scope in scopes:
        wanted |= GROUPS.get(scope, {scope})
    return frozenset(wanted) & role_of(user).actions


def scope_choices(user: User) -> list[tuple[str, str]]:
    """(scope, what it allows) for every scope ``user`` may give a token: the groups, then the role's actions."""
    actions = role_of(user).actions
    return ([(group, GROUP_HELP[group]) for group in GROUPS]
            + [(action, ACTIONS[action]) for action in sorted(actions)])


def _scopes_error(user: User, scopes, within: frozenset[str] | None) -> str | None:
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        return "Choose at least one scope."
    if len(scopes) > len(ACTIONS) + len(GROUPS):
        return "Name each scope once."
    unknown = sorted({s for s in scopes if s not in GROUPS and s not in ACTIONS})
    if unknown:
        return f"Unknown scope {unknown[0][:60]!r}: use read, write or an action such as hub.view."
    beyond = sorted({s for s in scopes if s in ACTIONS} - role_of(user).actions)
    if beyond:
        return f"Your role does not allow {', '.join(beyond)}: a token can do no more than its owner."
    if within is not None and not actions_of(scopes, user) <= within:
        return ("A token may only make tokens within its own scopes: "
                f"{', '.join(sorted(actions_of(scopes, user) - within))} is beyond them.")
    return None


def _days(value) -> int | str:
    """The expiry in days, or why it cannot be used."""
    if value is None or value == "":
        return DEFAULT_DAYS
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        return f"Enter a number of days from 1 to {MAX_DAYS}."
    days = int(value) if isinstance(value, int) or len(value.strip()) < 5 else MAX_DAYS + 1
    if not 1 <= days <= MAX_DAYS:
        return f"Enter a number of days from 1 to {MAX_DAYS}."
    return days


def new_api_token(user: User, name: str = "token", scopes: list[str] | None = None,
                  expires_at: datetime | None = None) -> str:
    """Add a token row (unchecked, unaudited: for ``create_token`` and test fixtures); returns the token."""
    token = "hf_" + secrets.token_urlsafe(32)
    db.session.add(ApiToken(user=user, token_hash=_hash(token), name=name, scopes=scopes or ["write"],
                            expires_at=expires_at or utcnow() + timedelta(days=DEFAULT_DAYS)))
    return token


def create_token(user: User, name: str, scopes, expires_days=None, actor: str | None = None,
                 within: frozenset[str] | None = None) -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns (its row, the token: shown once, never stored).  ``within`` bounds the
    scopes when a token makes a token.  Raises FieldErrors (nothing written). Commits."""
    name = (name or "").strip() if isinstance(name, str) else ""
    errors = {}
    if not name:
        errors["name"] = "Name the token after what uses it (a script, a dashboard...)."
    elif len(name) > MAX_NAME or not name.isprintable():
        errors["name"] = f"Use at most {MAX_NAME} printable characters."
    if problem := _scopes_error(user, scopes, within):
        errors["scopes"] = problem
    days = _days(expires_days)
    if isinstance(days, str):
        errors["expires_days"] = days
    if errors:
        raise FieldErrors(errors)
    scopes = list(dict.fromkeys(scopes))
    token = new_api_token(user, name, scopes, utcnow() + timedelta(days=days))
    db.session.flush()
    row = db.session.execute(db.select(ApiToken).filter_by(token_hash=_hash(token))).scalar_one()
    audit(actor or user.email, "token.create", f"{user.email}: {name}"[:200], user.institution_id,
          token=row.id, scopes=scopes, expires_at=row.expires_at.isoformat(timespec="minutes"))
    db.session.commit()
    return row, token


def list_tokens(user: User) -> list[ApiToken]:
    """The user's own tokens, newest first, ended ones too (so a person sees what stopped working and why)."""
    return db.session.execute(db.select(ApiToken).where(visible(user, ApiToken))
                              .order_by(ApiToken.id.desc())).unique().scalars().all()


def get_token(user: User, token_id) -> ApiToken:
    """One of the user's own tokens.  Raises NotFound for any other (another person's is never confirmed)."""
    if not str(token_id).isdigit() or len(str(token_id)) > 18:
        raise NotFound("no token here by that id")
    row = db.session.execute(db.select(ApiToken).where(visible(user, ApiToken), ApiToken.id == int(token_id))
                             ).unique().scalar_one_or_none()
    if row is None:
        raise NotFound("no token here by that id")
    require(user, "token.manage", row)
    return row


def revoke_token(user: User, token: ApiToken) -> ApiToken:
    """Revoke one of the user's tokens (again: nothing changes). Commits."""
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit(user.email, "token.revoke", f"{token.user.email}: {token.name}"[:200], user.institution_id,
              token=token.id)
        db.session.commit()
    return token


def status(token: ApiToken, now: datetime | None = None) -> str:
    """"active", "expired" or "revoked"."""
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.expires_at <= (now or utcnow()) else "active"


def authenticate(value: str) -> tuple[ApiToken | None, str]:
    """The live token ``value`` names, or (None, why not).  Commits (the minute it was last used), so call it
    before anything else is written."""
    row = db.session.execute(db.select(ApiToken).filter_by(token_hash=_hash(value))).unique().scalar_one_or_none()
    if row is None or not row.user.is_active:
        return None, "a valid bearer token is required"
    now = utcnow()
    state = status(row, now)
    if state != "active":
        return None, f"this token has {'expired' if state == 'expired' else 'been revoked'}"
    if row.last_used_at is None or now - row.last_used_at >= USE_EVERY:
        # Conditional, so processes that race on one token write once.
        db.session.execute(update(ApiToken).where(ApiToken.id == row.id, ApiToken.last_used_at.is_(None)
                                                  | (ApiToken.last_used_at <= now - USE_EVERY))
                           .values(last_used_at=now))
        db.session.commit()
    return row, ""
