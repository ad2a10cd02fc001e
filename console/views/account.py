"""A person's own account: their sessions, their password, their API tokens."""
from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from console.permissions import SIGNED_IN, requires
from console.services import FieldErrors, identities, sessions, tokens
from console.services.users import MIN_PASSWORD

bp = Blueprint("account", __name__, url_prefix="/account")


@bp.get("/sessions")
@requires(SIGNED_IN)
def sessions_page():
    """Where one is logged in, with a way to end any of it."""
    return render_template("account/sessions.html", sessions=sessions.list_sessions(g.user, g.login_session))


@bp.post("/sessions/end")
@requires(SIGNED_IN)
def end_session():
    """End one session (this browser's too: then it is logged out)."""
    try:
        sessions.end_session(g.user, request.form.get("session_id"), g.login_session)
    except FieldErrors as exc:
        return render_template("account/sessions.html", errors=exc.errors,
                               sessions=sessions.list_sessions(g.user, g.login_session)), 422
    flash("Session ended.")
    return redirect(url_for("account.sessions_page"))


@bp.post("/sessions/end-others")
@requires(SIGNED_IN)
def end_other_sessions():
    """End every session but this browser's."""
    ended = sessions.end_other_sessions(g.user, g.login_session)
    flash(f"Ended {ended} other session{'s' if ended != 1 else ''}.")
    return redirect(url_for("account.sessions_page"))


def _logins_page(errors: dict | None = None, status: int = 200):
    return render_template("account/logins.html", identities=identities.identities_of(g.user),
                           institutions=identities.login_choices(), errors=errors or {}), status


@bp.get("/logins")
@requires(SIGNED_IN)
def logins():
    """The institution logins linked to one's account, a way to link another (after logging in there again), and to
    unlink one that is not one's last way to log in."""
    return _logins_page()


@bp.post("/logins/unlink")
@requires(SIGNED_IN)
def unlink_login():
    try:
        identities.unlink(g.user, request.form.get("identity_id"))
    except FieldErrors as exc:
        return _logins_page(exc.errors, 422)
    flash("That login is no longer linked to your account.")
    return redirect(url_for("account.logins"))


@bp.route("/password", methods=["GET", "POST"])
@requires(SIGNED_IN)
def password():
    """Change one's password (the current one required); every other session ends."""
    if request.method == "GET":
        return render_template("account/password.html", errors={}, min_password=MIN_PASSWORD)
    try:
        ended = sessions.change_password(g.user, request.form.get("current_password", ""),
                                         request.form.get("new_password", ""), request.form.get("confirm", ""),
                                         g.login_session, request.remote_addr)
    except FieldErrors as exc:
        return render_template("account/password.html", errors=exc.errors, min_password=MIN_PASSWORD), 422
    except sessions.Throttled as exc:
        return render_template("account/password.html", errors={"current_password": str(exc)},
                               min_password=MIN_PASSWORD), 429, \
            {"Retry-After": str(exc.seconds)}
    flash(f"Password changed. {ended} other session{'s' if ended != 1 else ''} ended.")
    return redirect(url_for("account.sessions_page"))


def _tokens_page(status: int = 200, errors: dict | None = None, values: dict | None = None, created=None):
    response = render_template("account/tokens.html", tokens=tokens.list_tokens(g.user), status_of=tokens.status,
                               choices=tokens.scope_choices(g.user), errors=errors or {},
                               values=values or {"scopes": ["read"], "expires_days": tokens.DEFAULT_DAYS},
                               created=created, max_days=tokens.MAX_DAYS)
    # A new token is on this page once: no cache may keep it.
    return response, status, {"Cache-Control": "no-store"}


@bp.get("/tokens")
@requires("token.manage")
def tokens_page():
    """One's API tokens: make one (shown once), see when each was last used, revoke."""
    return _tokens_page()


@bp.post("/tokens")
@requires("token.manage")
def create_token():
    values = {"name": request.form.get("name", ""), "scopes": request.form.getlist("scopes"),
              "expires_days": request.form.get("expires_days", "")}
    try:
        row, token = tokens.create_token(g.user, **values)
    except FieldErrors as exc:
        return _tokens_page(422, exc.errors, values)
    return _tokens_page(201, created=(row, token))


@bp.post("/tokens/revoke")
@requires("token.manage")
def revoke_token():
    """Revoke one of one's tokens (another person's is not found: 404)."""
    row = tokens.revoke_token(g.user, tokens.get_token(g.user, request.form.get("token_id", "")))
    flash(f"Token {row.name!r} revoked: it no longer works.")
    return redirect(url_for("account.tokens_page"))
