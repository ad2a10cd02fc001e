"""Logging in and out: with a password, or through an institution's identity provider."""
from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_login import current_user, logout_user

from console.permissions import SIGNED_IN, requires
from console.security import clear_session, safe_next, start_session
from console.services import identities, sessions

bp = Blueprint("auth", __name__)


def _login_page(email: str = "", error: str | None = None, status: int = 200, headers: dict | None = None):
    return render_template("auth/login.html", email=email, error=error, institutions=identities.login_choices(),
                           next=request.args.get("next", "")), status, headers or {}


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The login form, and a "Log in with <institution>" button per institution login; a wrong password is
    counted, and too many in a row answer 429 until the wait is over."""
    error, status, headers = None, 200, {}
    email = request.form.get("email", "").strip().lower()
    if request.method == "POST":
        try:
            found = sessions.log_in(email, request.form.get("password", ""), request.remote_addr,
                                    request.user_agent.string)
        except sessions.Throttled as exc:
            error, status, headers = str(exc), 429, {"Retry-After": str(exc.seconds)}
        else:
            if found:
                start_session(*found)
                return _continue(safe_next(request.args.get("next")))
            error, status = "Wrong email or password.", 401
    return _login_page(email, error, status, headers)


def _continue(target: str):
    """Go on to ``target`` after a login.  A hub's sign-in request (federated login) ends on the hub, another site,
    where a login form's policy (ours: ``form-action 'self'``; an IdP's own) may forbid the redirects that follow it
    to take the browser: it goes on from a page of ours instead."""
    if target.startswith(url_for("oidc.authorize")):
        return render_template("auth/continue.html", target=target)
    return redirect(target)


def _signed_in():
    return current_user._get_current_object() if current_user.is_authenticated else None


@bp.get("/login/idp/<slug>")
def idp_login(slug):
    """Send the browser to the institution's IdP.  ``link=1``: a logged-in person adds that login to their account
    (the IdP asks them to log in again).  ``next``: where to go afterwards (this site only)."""
    idp = identities.idp_by_slug(slug)
    if idp is None:
        return _login_page(error="There is no institution login by that name.", status=404)
    link_user = None
    if request.args.get("link") == "1":
        link_user = _signed_in()
        if link_user is None:
            return redirect(url_for("auth.login", next=url_for("account.logins")))
    target = request.args.get("next")
    next_url = target if target and safe_next(target) == target else ""  # unsafe: the person's home instead
    try:
        url = identities.begin(idp, url_for("auth.idp_callback", slug=slug, _external=True), next_url, link_user)
    except identities.IdpError as exc:
        return _login_page(error=str(exc), status=exc.status)
    return redirect(url)


@bp.get("/login/idp/<slug>/callback")
def idp_callback(slug):
    """Where the IdP sends the browser back: log the person in (or link the login to the one logged in)."""
    idp = identities.idp_by_slug(slug)
    if idp is None:
        return _login_page(error="There is no institution login by that name.", status=404)
    try:
        done = identities.finish(idp, request.args, _signed_in())
    except identities.IdpError as exc:
        return _login_page(error=str(exc), status=exc.status)
    if done.link:
        flash(f"Your login of {idp.institution.name} is linked to this account." if done.outcome == "linked"
              else f"That login of {idp.institution.name} was linked to this account already.")
        return redirect(url_for("account.logins"))
    start_session(done.user, sessions.open_session(done.user, request.remote_addr, request.user_agent.string))
    return _continue(safe_next(done.next_url))


@bp.post("/logout")
@requires(SIGNED_IN)
def logout():
    """End this browser's session for good: its cookie, even copied, no longer logs anyone in."""
    sessions.log_out(g.login_session)
    logout_user()
    clear_session()
    return redirect(url_for("auth.login"))
