import hashlib

from flask import Blueprint, current_app, flash, g, make_response, redirect, render_template, request, url_for
from markupsafe import Markup
from tenants.auth import login_label
from werkzeug.exceptions import BadRequest, NotFound, TooManyRequests

from console import htmx, status
from console.errors import shown
from console.extensions import db
from console.permissions import can, requires
from console.services import FieldErrors, history, scope
from console.services import config as config_service
from console.services import fleet as fleet_service
from console.services import monitoring
from console.services import hubs as hub_service
from console.services import memberships as membership_service
from console.services import operations
from console.services import troubleshooting
from console.services import contacts as contact_service
from console.services import decommission
from console.services import slurm_view

bp = Blueprint("fleet", __name__)
bp.add_app_template_global(login_label, "auth_label")  # how pages name a login, "closed" included


@bp.app_template_global("hub_status")
def hub_status(hub, op=None) -> status.Status:
    """``status.hub_status`` for templates, with the supervisor's restart limit; its reason as the viewer may read
    it (``errors.shown``)."""
    found = status.hub_status(hub, op, max_restarts=int(current_app.config["MAX_RESTARTS"]))
    return found._replace(reason=shown(found.reason))


@bp.get("/")
@requires("hub.view")
def index():
    """The fleet: counts by status, search, filters, sorting and one page of hubs (``services.fleet``).  Its table
    polls itself with the same query and, while nothing it shows has changed, is answered 204 (htmx keeps it)."""
    try:
        query = fleet_service.parse_query(request.args)
    except fleet_service.BadQuery as exc:
        raise BadRequest(str(exc)) from None
    found = fleet_service.overview(g.user, query)
    ids = [hub.id for hub in found.hubs]
    table, etag = _fingerprinted("fleet/_overview.html", overview=found, hubs=found.hubs,
                                 charts=monitoring.series(ids), current_ops=operations.current_by_hub(ids))
    if htmx.wants_fragment():
        response = make_response(("", 204) if etag in request.if_none_match else table)
        response.set_etag(etag)
    else:
        response = make_response(render_template("fleet/index.html", overview=found, table=table,
                                                 statuses=fleet_service.STATUS_CHOICES,
                                                 choices=fleet_service.filter_choices(g.user)))
    response.vary.add("HX-Request")
    return response


_ETAG_SLOT = Markup("<etag/>")  # escaped wherever data could hold it, so only the template's own slot is raw


def _fingerprinted(template: str, **context) -> tuple[Markup, str]:
    """``template`` rendered, and a digest of everything it shows: the ETag its next poll sends back as
    If-None-Match (``hx-headers`` on its root, where ``etag`` goes).  The digest is taken with a placeholder in that
    slot, since the fragment cannot hold a digest of itself.  A 304 would not do for htmx, which swaps in its empty
    body; a 204 it leaves alone."""
    html = render_template(template, etag=_ETAG_SLOT, **context)
    etag = hashlib.blake2b(html.encode(), digest_size=16).hexdigest()
    return Markup(html.replace(_ETAG_SLOT, etag, 1)), etag


def gone(found: history.Gone, back_url: str, back_label: str):
    """The page for a link to something that no longer exists: a 404 that says what happened to it.  A page polling
    it (htmx) reloads whole, so it shows this instead of keeping the last fragment it had."""
    return htmx.render("fleet/gone.html", "fleet/gone.html", status=404, refresh_page=True, gone=found,
                       back_url=back_url, back_label=back_label)


def _create_form(values: dict, errors: dict, status: int = 200):
    return render_template(
        "fleet/new_hub.html", values=values, errors=errors,
        institutions=db.session.execute(scope.institutions(g.user).order_by("slug")).scalars().all(),
        clusters=db.session.execute(scope.clusters(g.user).order_by("name")).scalars().all(),
        slug_rule=hub_service.SLUG_RULE), status


@bp.route("/hubs/new", methods=["GET", "POST"])
@requires("hub.create")
def new_hub():
    if request.method == "GET":
        return _create_form({"institution": request.args.get("institution", "")}, {})
    values = {k: request.form.get(k, "") for k in ("slug", "institution", "cluster")}
    try:
        op = hub_service.create_hub(g.user, **values)
    except FieldErrors as exc:
        return _create_form(values, exc.errors, 422)
    if op.first_admin:  # shown once, in this answer only: never stored by a browser or a proxy
        page = render_template("fleet/hub_created.html", hub=op.hub, first_admin=op.first_admin)
        return page, 201, {"Cache-Control": "no-store"}
    return redirect(url_for("fleet.hub", slug=op.hub.slug))


@bp.get("/hubs/<slug>")
@requires("hub.view")
def hub(slug):
    try:
        found = scope.get_hub(g.user, slug)
    except NotFound:
        deleted = history.deleted_hub(g.user, slug)
        if deleted is None:
            raise
        return gone(deleted, url_for("fleet.index"), "Back to the fleet")
    ops = hub_service.recent_operations(found)
    auth_class = config_service.effective(found)[0]["auth"].get("authenticator_class")
    return htmx.render("fleet/hub.html", "fleet/_hub.html", hub=found, operations=ops,
                       latest=ops[0] if ops else None,
                       current_op=operations.current_by_hub([found.id]).get(found.id),
                       charts=monitoring.hub_charts(found, request.args.get("range")),
                       login_label=login_label(auth_class),
                       **(membership_service.hub_section(found) if can(g.user, "user.invite", found) else {}),
                       **decommission.hub_section(g.user, found),
                       **contact_service.hub_section(found),
                       **(slurm_view.hub_section(found) if not htmx.wants_fragment() else {}))  # not on each poll


@bp.get("/hubs/<slug>/manifests")
@requires("hub.manifests")
def manifests(slug):
    """Every object the backend applies for a hub on Kubernetes, as YAML, secret values masked (operators); what
    ``GET /api/v1/hubs/SLUG/manifests`` answers as JSON.  409 for a hub on another backend."""
    found = scope.get_hub(g.user, slug, "hub.manifests")
    objects = hub_service.manifests(g.user, found)
    return render_template("fleet/manifests.html", hub=found, objects=objects,
                           text=config_service.readable_yaml(objects))


@bp.post("/hubs/<slug>/restart")
@requires("hub.restart")
def restart_hub(slug):
    try:
        op = hub_service.restart_hub(g.user, scope.get_hub(g.user, slug, "hub.restart"))
    except TooManyRequests as exc:  # the institution's share of the queue is full: say so on the hub's page
        flash(exc.description)
        return redirect(url_for("fleet.hub", slug=slug))
    return redirect(url_for("fleet.operation", operation_id=op.id))


@bp.post("/hubs/<slug>/release-policy")
@requires("hub.upgrade")
def release_policy(slug):
    hub = scope.get_hub(g.user, slug, "hub.upgrade")
    hub_service.set_release_policy(g.user, hub, channel=request.form.get("channel"),
                                   pinned=request.form.get("pinned") == "on", canary=request.form.get("canary") == "on")
    return redirect(url_for("fleet.hub", slug=slug))


@bp.post("/hubs/<slug>/check")
@requires("hub.restart")
def check_hub(slug):
    try:
        op = hub_service.check_hub(g.user, scope.get_hub(g.user, slug, "hub.restart"))
    except TooManyRequests as exc:  # the institution's share of the queue is full: say so on the hub's page
        flash(exc.description)
        return redirect(url_for("fleet.hub", slug=slug))
    return redirect(url_for("fleet.operation", operation_id=op.id))


@bp.route("/hubs/<slug>/delete", methods=["GET", "POST"])
@requires("hub.delete")
def delete_hub(slug):
    found = scope.get_hub(g.user, slug, "hub.delete")
    if request.method == "GET":
        return render_template("fleet/delete_hub.html", hub=found, error=None)
    if request.form.get("confirm", "").strip() != found.slug:
        return render_template("fleet/delete_hub.html", hub=found,
                               error=f"Type the hub's slug, {found.slug}, to confirm."), 422
    op = hub_service.delete_hub(g.user, found)
    return redirect(url_for("fleet.operation", operation_id=op.id))


@bp.get("/operations/<int:operation_id>")
@requires("hub.view")
def operation(operation_id):
    op = scope.get_operation(g.user, operation_id)
    # The panel stops polling once the operation ends; the page around it (hub state, health) reloads then.
    return htmx.render("fleet/operation.html", "fleet/_operation.html", refresh_page=op.terminal, op=op,
                       lines=operations.log_lines(op))


@bp.app_template_global("hub_troubleshooting")
def hub_troubleshooting(hub) -> troubleshooting.Overview:
    """The hub page's Troubleshooting section for templates: running servers as last seen, the hub's admin page."""
    return troubleshooting.overview(hub)


@bp.get("/hubs/<slug>/log")
@requires("hub.view")
def hub_log(slug):
    """The end of the hub's log, secrets blanked (and server paths, for institution admins): the fragment the hub
    page loads into its Troubleshooting section, or a page of its own."""
    found = scope.get_hub(g.user, slug, "hub.view")
    return htmx.render("fleet/hub_log.html", "fleet/_hub_log.html", hub=found,
                       log=troubleshooting.hub_log(g.user, found))
