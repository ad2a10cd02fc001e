"""Who is asking, and what they may reach.

Pages authenticate with a session (Flask-Login); the API only with a bearer token, so a browser's cookie can never
drive the API and the API needs no CSRF token.  Every route needs one or the other except the few in
``PUBLIC_ENDPOINTS``; the check runs before every request, so a new route is protected by default.

A page's session is a row (``console.services.sessions``): the cookie carries its random key, and the user loader
accepts only a live row, so logout and a password change end a session even for someone who copied the cookie.
The cookie is HttpOnly and SameSite=Lax always, and Secure whenever the request came over https (behind a proxy
that terminates TLS, set ``PROXY_COUNT`` so its X-Forwarded-Proto is believed).
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, g, has_request_context, jsonify, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_login import current_user, login_user
from werkzeug.middleware.proxy_fix import ProxyFix

from console.extensions import login_manager
from console.models import User
from console.passwords import check_password, hash_password  # noqa: F401 (the names callers import from here)
from console.permissions import SIGNED_IN, action_of
from console.services import sessions, tokens
from console.services.memberships import home_endpoint
from console.services.tokens import new_api_token  # noqa: F401 (test fixtures make tokens through this)

# the login form, an institution login and its return, the health check, an invitation link's page
# and the OpenID provider's endpoints hubs call (console/views/oidc.py)
PUBLIC_ENDPOINTS = frozenset({"auth.login", "auth.idp_login", "auth.idp_callback", "healthz", "people.invitation",
                              "oidc.discovery", "oidc.jwks", "oidc.token", "oidc.userinfo", "favicon"})
SESSION_KEY = "hubfleet_session"  # the key of the session's row, inside Flask's signed cookie
ANY_TOKEN_ENDPOINTS = frozenset({"api-docs.openapi_json"})  # the API's description: any live token reads it


def init_app(app) -> None:
    """Cookies marked Secure over https, and (``PROXY_COUNT`` > 0) the client's address and scheme taken from that
    many proxies' X-Forwarded-For and X-Forwarded-Proto headers."""
    app.session_interface = SessionInterface()
    count = int(app.config["PROXY_COUNT"])
    if count > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count, x_port=count)


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, Secure whenever the request came over https, not only when configured so."""

    def get_cookie_secure(self, app) -> bool:
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


def is_api_request() -> bool:
    """The API, and Prometheus' /metrics: bearer tokens, JSON errors, no cookies."""
    return request.path.startswith("/api/") or request.path == "/metrics"


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    row = sessions.live_session(session.get(SESSION_KEY))
    if row is None or str(row.user_id) != user_id:
        return None
    g.login_session = row
    return row.user


def start_session(user: User, key: str) -> None:
    """Put a new session's key in a fresh cookie: nothing of an earlier visit carries over but the CSRF token, so
    forms open in other tabs still submit."""
    csrf_token = session.get("csrf_token")
    session.clear()
    if csrf_token:
        session["csrf_token"] = csrf_token
    session[SESSION_KEY] = key
    login_user(user)


def clear_session() -> None:
    """Empty the cookie, and forget the CSRF token Flask-WTF cached from it for this request."""
    session.clear()
    g.pop("csrf_token", None)


def _unauthorized(message: str, status: int = 401):
    response = jsonify(code=status, status="Unauthorized" if status == 401 else "Forbidden", message=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="hubfleet"'
    return response


def _authenticate_token():
    """Set ``g.user`` and ``g.token`` from the bearer token, or answer 401 (no live token) or 403 (the token's
    scopes do not include the action the route declares; a route that declares none needs all of its owner's)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return _unauthorized("a valid bearer token is required")
    token, problem = tokens.authenticate(value.strip())
    if token is None:
        return _unauthorized(problem)
    # Only what the token was given is checked here; the owner's role is checked where the route loads its object
    # (console.permissions), so that an object the owner may not see is 404 whatever the token's scopes.
    allowed = frozenset().union(*(tokens.GROUPS.get(scope, {scope}) for scope in token.scopes))
    action = SIGNED_IN if request.endpoint in ANY_TOKEN_ENDPOINTS else \
        action_of(current_app, request.endpoint, request.method) if request.endpoint else None
    needed = {action} if action else tokens.actions_of(["write"], token.user)
    if action != SIGNED_IN and not needed <= allowed:
        return _unauthorized(f"this token's scopes do not include {action or 'every action of its owner'}", 403)
    g.user, g.token = token.user, token
    return None


def require_login():
    """``before_request`` hook: set ``g.user`` or refuse (401 JSON for the API, a login redirect for pages)."""
    g.user = g.token = g.login_session = None
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if is_api_request():
        return _authenticate_token()
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))
    g.user = current_user._get_current_object()
    return None


def home() -> str:
    """The logged-in person's landing page: My hubs for a member, the fleet for everyone else."""
    user = current_user if current_user and current_user.is_authenticated else None
    return url_for(home_endpoint(user) if user is not None else "fleet.index")


def safe_next(target: str | None) -> str:
    """A post-login redirect target that stays on this site: a path only, no scheme or host.  Browsers drop tabs and
    new lines from a URL and read a backslash as a slash, so ``/\\t/evil.example`` would leave the site: any control
    character, space or backslash refuses the target."""
    unsafe = any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c == "\\" for c in target or "")
    if not target or unsafe or len(target) > 2000 or target.startswith("//"):
        return home()
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
        return home()
    return target

