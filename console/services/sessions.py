"""A person's own credentials: logging in (throttled), the sessions a login starts, and their password.

A session is a row whose random key the browser's cookie holds (only its hash is stored).  Flask's signed cookie
alone would stay valid after logout for anyone who copied it; the row is what logout and a password change end.

Failed logins are counted per account (the email as typed, known or not) and per address, in the database so that
every console process sees the same counts.  Each attempt is counted before the password is checked, by a
compare-and-set on the count, so parallel attempts cannot slip past it; a success takes its count back.  After
``free`` failures in a row, the next attempt waits 1 s, then 2 s, 4 s, ... up to ``LOGIN_DELAY_MAX_SECONDS``.
"""
from __future__ import annotations

import hashlib
import ipaddress
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from console.extensions import db
from console.models import LoginThrottle, User, UserSession, utcnow
from console.passwords import check_password, hash_password
from console.services import FieldErrors, audit
from console.services.users import password_problem

ACCOUNT, ADDRESS = "account", "address"
# scope -> (setting that holds how many failures in a row are free, how the message names it)
THROTTLE_SCOPES = {ACCOUNT: ("LOGIN_FAILURES_PER_ACCOUNT", "for this account"),
                   ADDRESS: ("LOGIN_FAILURES_PER_ADDRESS", "from your address")}
FORGET_FAILURES_AFTER = timedelta(days=1)  # a count with no failure for this long starts again from zero
TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often: not a write per request


class Throttled(Exception):
    """Too many failed logins: refuse, and say when to try again."""

    def __init__(self, scope: str, seconds: int):
        self.scope, self.seconds = scope, seconds
        super().__init__(f"Too many failed logins {THROTTLE_SCOPES[scope][1]}. "
                         f"Try again in {seconds} second{'s' if seconds != 1 else ''}.")


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def address_key(address: str | None) -> str:
    """The address failures are counted for: an IPv4 address, or the /64 an IPv6 address is in (one machine's
    usual share, which it could otherwise walk through)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or ""
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


# -- login throttling ---------------------------------------------------------------------------------------------


def _delay(failures: int, free: int) -> timedelta | None:
    """How long the attempt after ``failures`` failures in a row waits."""
    if failures < free:
        return None
    return timedelta(seconds=min(int(current_app.config["LOGIN_DELAY_MAX_SECONDS"]), 2 ** min(failures - free, 30)))


def _claim(scope: str, key_hash: str, now: datetime) -> None:
    """Count one attempt as failed (a success takes it back), unless the scope must wait: raises Throttled."""
    free = int(current_app.config[THROTTLE_SCOPES[scope][0]])
    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    for _ in range(100):  # a pass loses only to another attempt that counted itself: the count moves on
        row = db.session.execute(db.select(LoginThrottle).filter_by(scope=scope, key_hash=key_hash)
                                 .execution_options(populate_existing=True)).scalar_one_or_none()
        if row is None:
            delay = _delay(1, free)
            added = db.session.execute(insert(LoginThrottle).values(
                scope=scope, key_hash=key_hash, failures=1, last_failure_at=now,
                blocked_until=now + delay if delay else None).on_conflict_do_nothing().returning(LoginThrottle.id))
            if added.first() is not None:
                return
            continue
        if row.blocked_until and row.blocked_until > now:
            raise Throttled(scope, max(1, math.ceil((row.blocked_until - now).total_seconds())))
        failures = 1 if now - row.last_failure_at > FORGET_FAILURES_AFTER else row.failures + 1
        delay = _delay(failures, free)
        counted = db.session.execute(
            update(LoginThrottle).where(LoginThrottle.id == row.id, LoginThrottle.failures == row.failures)
            .values(failures=failures, last_failure_at=now, blocked_until=now + delay if delay else None))
        if counted.rowcount == 1:
            return
    raise Throttled(scope, 1)


def _waiting(scope: str, key_hash: str, now: datetime) -> None:
    """Raise Throttled if ``scope`` must wait, without counting anything."""
    blocked_until = db.session.execute(db.select(LoginThrottle.blocked_until)
                                       .filter_by(scope=scope, key_hash=key_hash)).scalar_one_or_none()
    if blocked_until and blocked_until > now:
        raise Throttled(scope, max(1, math.ceil((blocked_until - now).total_seconds())))


def _count_attempt(keys: dict[str, str]) -> None:
    """Count an attempt for every scope in ``keys`` (scope -> key hash); nothing is counted if one must wait.
    Commits, so other processes see the count before the password is checked."""
    now = utcnow()
    try:
        for scope, key_hash in keys.items():
            _waiting(scope, key_hash, now)
        for scope, key_hash in keys.items():
            _claim(scope, key_hash, now)
    finally:
        db.session.commit()


def _take_back(keys: dict[str, str]) -> None:
    """A success: the account starts again from zero; the address only loses this attempt (one good password must
    not wipe out an address's failures on other accounts)."""
    if ACCOUNT in keys:
        db.session.execute(update(LoginThrottle).filter_by(scope=ACCOUNT, key_hash=keys[ACCOUNT])
                           .values(failures=0, blocked_until=None))
    if ADDRESS in keys:
        db.session.execute(update(LoginThrottle).filter_by(scope=ADDRESS, key_hash=keys[ADDRESS])
                           .where(LoginThrottle.failures > 0).values(failures=LoginThrottle.failures - 1))


def _throttle_keys(email: str, address: str | None) -> dict[str, str]:
    return {ACCOUNT: _hash(email), ADDRESS: _hash(address_key(address))}


# -- logging in and out -------------------------------------------------------------------------------------------


def log_in(email: str, password: str, address: str | None, user_agent: str) -> tuple[User, str] | None:
    """Check a login; on success start a session and return (user, the session's key for the cookie).

    Returns None for a wrong email or password (one answer for both).  Raises Throttled (nothing checked) when the
    account or the address must wait.  Commits."""
    email = (email or "").strip().lower()
    keys = _throttle_keys(email, address)
    _count_attempt(keys)
    user = db.session.execute(db.select(User).filter_by(email=email)).unique().scalar_one_or_none()
    if not check_password(user, password or "") or not user.is_active:
        return None
    _take_back(keys)
    return user, open_session(user, address, user_agent)


def open_session(user: User, address: str | None, user_agent: str) -> str:
    """Start a session for ``user`` (whose credentials were checked: a password, an institution login); returns
    its key for the cookie. Commits."""
    key = secrets.token_urlsafe(32)
    db.session.add(UserSession(user=user, key_hash=_hash(key), user_agent=(user_agent or "")[:300],
                               address=(address or "")[:64]))
    db.session.commit()
    return key


def live_session(key: str | None) -> UserSession | None:
    """The session whose key the cookie holds, if it has not ended and was used recently.  Commits (a minute's
    last-seen time), so call it before anything else is written."""
    if not key or not isinstance(key, str):
        return None
    now = utcnow()
    idle = timedelta(hours=float(current_app.config["SESSION_IDLE_HOURS"]))
    row = db.session.execute(db.select(UserSession).filter_by(key_hash=_hash(key), ended_at=None)
                             .where(UserSession.last_seen_at > now - idle)).unique().scalar_one_or_none()
    if row is None or not row.user.is_active:
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        db.session.commit()
    return row


def log_out(row: UserSession | None) -> None:
    """End the session a browser logs out of. Commits."""
    if row is not None and row.ended_at is None:
        row.ended_at, row.ended_reason = utcnow(), "logged out"
        db.session.commit()


# -- a person's sessions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionView:
    row: UserSession
    current: bool


def list_sessions(user: User, current: UserSession | None) -> list[SessionView]:
    """The user's live sessions, newest first, the one asking marked."""
    rows = db.session.execute(db.select(UserSession).filter_by(user_id=user.id, ended_at=None)
                              .where(UserSession.last_seen_at > utcnow() - timedelta(
                                  hours=float(current_app.config["SESSION_IDLE_HOURS"])))
                              .order_by(UserSession.id.desc())).unique().scalars().all()
    return [SessionView(row, current is not None and row.id == current.id) for row in rows]


def end_sessions(user: User, reason: str = "account disabled", keep: UserSession | None = None) -> int:
    """End every session of ``user`` (except ``keep``): at a password change, or when the account is disabled.
    Returns how many ended.  Does not commit: the change that calls for it does."""
    query = update(UserSession).where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
    if keep is not None:
        query = query.where(UserSession.id != keep.id)
    return db.session.execute(query.values(ended_at=utcnow(), ended_reason=reason[:40])).rowcount


def end_session(user: User, session_id: str | int | None, current: UserSession | None) -> None:
    """End one of the user's own sessions from the sessions page.  Raises FieldErrors (nothing written) for a
    session that is not theirs or not live. Commits."""
    row = None
    if str(session_id or "").isdigit() and len(str(session_id)) < 19:
        row = db.session.execute(db.select(UserSession).filter_by(id=int(session_id), user_id=user.id,
                                                                  ended_at=None)).unique().scalar_one_or_none()
    if row is None:
        raise FieldErrors({"session": "That session has ended already, or is not yours."})
    row.ended_at, row.ended_reason = utcnow(), "ended by its owner"
    audit(user.email, "session.end", user.email, user.institution_id, session=row.id,
          current=current is not None and row.id == current.id)
    db.session.commit()


def end_other_sessions(user: User, current: UserSession | None) -> int:
    """End all the user's sessions but the one asking. Commits."""
    ended = end_sessions(user, "ended by its owner", keep=current)
    audit(user.email, "session.end_others", user.email, user.institution_id, ended=ended)
    db.session.commit()
    return ended


# -- password -----------------------------------------------------------------------------------------------------


def change_password(user: User, current_password: str, new_password: str, confirm: str,
                    current: UserSession | None, address: str | None) -> int:
    """Set a new password (the current one required) and end the user's other sessions; returns how many ended.

    A wrong current password counts as a failed login for the account and the address.  Raises FieldErrors
    (nothing written) for bad input, Throttled (nothing checked) when the account must wait; a person who logs in
    only through an institution (no password) has none to change. Commits."""
    if not user.password_hash:
        raise FieldErrors({"current_password": "You log in through your institution and have no password here."})
    keys = _throttle_keys(user.email, address)
    _count_attempt(keys)
    if not check_password(user, current_password or ""):
        raise FieldErrors({"current_password": "That is not your current password."})
    _take_back(keys)
    errors = {}
    problem = password_problem(new_password)
    if problem:
        errors["new_password"] = problem
    elif new_password == current_password:
        errors["new_password"] = "Choose a password different from the current one."
    elif confirm != new_password:
        errors["confirm"] = "The two new passwords differ."
    if errors:
        db.session.commit()  # the attempt taken back: the current password was right
        raise FieldErrors(errors)
    user.password_hash = hash_password(new_password)
    ended = end_sessions(user, "password changed", keep=current)
    audit(user.email, "user.password_change", user.email, user.institution_id, sessions_ended=ended)
    db.session.commit()
    return ended
