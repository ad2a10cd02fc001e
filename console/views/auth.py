from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import login_user, logout_user

from console.extensions import db
from console.models import User
from console.security import check_password, safe_next

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    email = request.form.get("email", "").strip().lower()
    if request.method == "POST":
        user = db.session.execute(db.select(User).filter_by(email=email)).unique().scalar_one_or_none()
        if check_password(user, request.form.get("password", "")):
            login_user(user)
            return redirect(safe_next(request.args.get("next")))
        error = "Wrong email or password."
    return render_template("auth/login.html", email=email, error=error), 401 if error else 200


@bp.post("/logout")
def logout():
    logout_user()
    return redirect(url_for("auth.login"))
