"""Usage showback pages: the fleet's (operators) or one institution's usage by month and day, its CSV and JSON
downloads, and a cluster's prices."""
from flask import Blueprint, Response, flash, g, jsonify, redirect, render_template, request, url_for

from console.extensions import db
from console.permissions import requires
from console.services import FieldErrors, scope
from console.services import usage

bp = Blueprint("usage", __name__)
FORMATS = ("html", "csv", "json")


@bp.get("/usage")
@requires("usage.view")
def index():
    """Usage of the hubs the user may see for a month (?month=YYYY-MM, default this one), narrowed to one institution
    (?institution=slug) or hub (?hub=slug); ?format=csv or json downloads it."""
    wanted = request.args.get("format", "html")
    if wanted not in FORMATS:
        return _page({"format": "Choose html, csv or json."}, 422)
    try:
        start, end = usage.parse_month(request.args.get("month"))
    except FieldErrors as exc:
        return _page(exc.errors, 422)
    institution = scope.get_institution(g.user, request.args["institution"], "usage.view") \
        if request.args.get("institution") else None
    hub = scope.get_hub(g.user, request.args["hub"], "usage.view") if request.args.get("hub") else None
    found = usage.report(g.user, start, end, institution=institution, hub=hub)
    name = "usage-" + "-".join(filter(None, (found["month"], institution and institution.slug, hub and hub.slug)))
    if wanted == "csv":
        return Response(usage.csv_text(found), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    if wanted == "json":
        response = jsonify(found)
        response.headers["Content-Disposition"] = f'attachment; filename="{name}.json"'
        return response
    return _page({}, 200, found=found, start=start, institution=institution, hub=hub)


def _page(errors: dict, status: int, found=None, start=None, institution=None, hub=None):
    institutions = db.session.execute(scope.institutions(g.user).order_by("slug")).scalars().all()
    return render_template("usage/index.html", errors=errors, found=found, institution=institution, hub=hub,
                           month_label=usage.month_label(start) if start else "", months=usage.month_choices(),
                           institutions=institutions, price_labels=usage.PRICE_LABELS,
                           query={k: v for k, v in (("month", found and found["month"]),
                                                    ("institution", institution and institution.slug),
                                                    ("hub", hub and hub.slug)) if v}), status


@bp.route("/clusters/<name>/prices", methods=["GET", "POST"])
@requires("usage.price")
def prices(name):
    """A cluster's prices (operators): the form, and its answer; 422 with the errors beside their fields."""
    cluster = scope.get_cluster(g.user, name, "usage.price")
    if request.method == "GET":
        return render_template("usage/prices.html", cluster=cluster, errors={}, values=cluster.prices or {})
    values = {key: request.form.get(key, "") for key in ("currency", *usage.PRICE_FIELDS)}
    try:
        usage.set_prices(g.user, cluster, values)
    except FieldErrors as exc:
        return render_template("usage/prices.html", cluster=cluster, errors=exc.errors, values=values), 422
    flash("Prices saved: usage reports estimate costs with them." if cluster.prices else "Prices cleared.")
    return redirect(url_for("clusters.detail", name=cluster.name))
