"""Who is asking, and what they may reach.

Pages authenticate with a session (Flask-Login); the API only with a bearer token, so a browser's cookie can never
drive the API and the API needs no CSRF token.  Every route needs one or the other except the few in
``PUBLIC_ENDPOINTS``; the check runs before every request, so a new route is protected by default.
"""
from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import abort, g, jsonify, redirect, request, url_for
from flask_login import current_user

from console.extensions import db, login_manager
from console.models import ApiToken, User

PUBLIC_ENDPOINTS = frozenset({"auth.login", "healthz"})
_hasher = PasswordHasher()
# Verified against when the email is unknown, so a login costs the same either way.
_DUMMY_HASH = _hasher.hash("hubfleet-timing-equaliser")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(user: User | None, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    except (VerificationError, InvalidHashError):
        return False


def new_api_token(user: User) -> str:
    """Create and store (hashed) a new API token for ``user``; returns the token, shown once."""
    token = "hf_" + secrets.token_urlsafe(32)
    db.session.add(ApiToken(user=user, token_hash=_token_hash(token)))
    return token


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def user_for_token(token: str) -> User | None:
    row = db.session.execute(db.select(ApiToken).filter_by(token_hash=_token_hash(token))).scalar_one_or_none()
    return row.user if row else None


def is_api_request() -> bool:
    """The API, and Prometheus' /metrics: bearer tokens, JSON errors, no cookies."""
    return request.path.startswith("/api/") or request.path == "/metrics"


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


def require_login():
    """``before_request`` hook: set ``g.user`` or refuse (401 JSON for the API, a login redirect for pages)."""
    g.user = None
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if is_api_request():
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = user_for_token(token.strip()) if scheme.lower() == "bearer" and token else None
        if user is None:
            response = jsonify(code=401, status="Unauthorized", message="a valid bearer token is required")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="hubfleet"'
            return response
        g.user = user
        return None
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))
    g.user = current_user._get_current_object()
    return None


def require_operator(user: User) -> None:
    """Abort with 403 unless ``user`` is an operator (use after the object itself was found, or 404 first)."""
    if not user.is_operator:
        abort(403)


def safe_next(target: str | None) -> str:
    """A post-login redirect target that stays on this site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("fleet.index")

