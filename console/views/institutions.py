from flask import Blueprint, g, redirect, render_template, request, url_for

from console.extensions import db
from console.services import FieldErrors, scope
from console.services import hubs as hub_service
from console.services import institutions as institution_service

bp = Blueprint("institutions", __name__)


def _page(values: dict, errors: dict, status: int = 200):
    rows = db.session.execute(scope.institutions(g.user).order_by("slug")).scalars().all()
    return render_template("institutions/index.html", institutions=rows, values=values, errors=errors), status


@bp.get("/institutions")
def index():
    return _page({}, {})


@bp.post("/institutions")
def create():
    values = {k: request.form.get(k, "") for k in ("slug", "name")}
    try:
        institution_service.create_institution(g.user, **values)
    except FieldErrors as exc:
        return _page(values, exc.errors, 422)
    return redirect(url_for("institutions.index"))


@bp.get("/institutions/<slug>")
def detail(slug):
    institution = scope.get_institution(g.user, slug)
    return render_template("institutions/detail.html", institution=institution,
                           hubs=hub_service.list_hubs(g.user, institution=institution))
