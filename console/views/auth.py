"""Logging in and out."""
from flask import Blueprint, g, redirect, render_template, request, url_for
from flask_login import logout_user

from console.permissions import SIGNED_IN, requires
from console.security import clear_session, safe_next, start_session
from console.services import sessions

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The login form; a wrong password is counted, and too many in a row answer 429 until the wait is over."""
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
                return redirect(safe_next(request.args.get("next")))
            error, status = "Wrong email or password.", 401
    return render_template("auth/login.html", email=email, error=error), status, headers


@bp.post("/logout")
@requires(SIGNED_IN)
def logout():
    """End this browser's session for good: its cookie, even copied, no longer logs anyone in."""
    sessions.log_out(g.login_session)
    logout_user()
    clear_session()
    return redirect(url_for("auth.login"))
