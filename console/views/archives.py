"""Decommission and archives: a hub's decommission request, its approval (the hub's slug typed) or refusal, the
archives of decommissioned hubs (download, restore into a new hub, purge), and the same over the API.

Archive routes take the archive from the form or query (``archive=<id>``), as a field: one that names no archive
is a field error (422), never a page that confirms or denies anything to somebody who may not manage archives
(they are refused first, 403).
"""
from __future__ import annotations

import base64

from flask import Blueprint, flash, g, redirect, render_template, request, send_file, url_for
from flask.views import MethodView
from flask_smorest import Blueprint as ApiBlueprint
from marshmallow import Schema, fields, validate

from console.extensions import db
from console.models import ARCHIVE_STATES, DECOMMISSION_STATES, Cluster
from console.permissions import actor_label, requires
from console.services import FieldErrors, scope
from console.services import decommission as service
from console.services import hubs as hub_service

bp = Blueprint("archives", __name__)


@bp.app_template_filter("archive_size")
def archive_size(count: int | None) -> str:
    """Bytes as a person reads them: "812 B", "4.2 MB", "1.3 GB" (powers of 1000, as disks are sold)."""
    if count is None:
        return "—"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return ""


def _decommission_page(hub, errors: dict | None = None, values: dict | None = None, status: int = 200):
    return render_template("archives/decommission.html", hub=hub, errors=errors or {}, values=values or {},
                           **service.hub_section(g.user, hub)), status


@bp.get("/hubs/<slug>/decommission")
@requires("decommission.request")
def decommission(slug):
    """The hub's decommission request and, for operators, its approval: a page of its own (the hub page has the
    same forms in its Decommission section)."""
    return _decommission_page(scope.get_hub(g.user, slug, "decommission.request"))


@bp.post("/hubs/<slug>/decommission")
@requires("decommission.request")
def request_decommission(slug):
    """Ask for the hub to be decommissioned, with a reason."""
    hub = scope.get_hub(g.user, slug, "decommission.request")
    try:
        service.request(g.user, hub, request.form.get("reason"))
    except FieldErrors as exc:
        return _decommission_page(hub, exc.errors, {"reason": request.form.get("reason", "")}, 422)
    flash(f"Decommissioning {hub.slug} was requested; an operator approves or refuses it.")
    return redirect(url_for("fleet.hub", slug=hub.slug))


@bp.post("/hubs/<slug>/decommission/approve")
@requires("hub.decommission")
def approve(slug):
    """Approve the request (or decommission at once, with a reason): archive the hub, then remove it."""
    hub = scope.get_hub(g.user, slug, "hub.decommission")
    try:
        asked = service.approve(g.user, hub, request.form.get("confirm"), request.form.get("reason"))
    except FieldErrors as exc:
        return _decommission_page(hub, exc.errors, {"reason": request.form.get("reason", "")}, 422)
    return redirect(url_for("fleet.operation", operation_id=asked.operation_id))


@bp.post("/hubs/<slug>/decommission/refuse")
@requires("hub.decommission")
def refuse(slug):
    """Refuse the pending request, saying why."""
    hub = scope.get_hub(g.user, slug, "hub.decommission")
    service.refuse(g.user, hub, request.form.get("note", ""))
    flash(f"The request to decommission {hub.slug} was refused.")
    return redirect(url_for("fleet.hub", slug=hub.slug))


def _index(errors: dict | None = None, values: dict | None = None, status: int = 200):
    clusters = db.session.execute(scope.clusters(g.user).where(Cluster.backend == "kubernetes")
                                  .order_by(Cluster.name)).scalars().all()
    return render_template("archives/index.html", archives=service.archives(g.user), clusters=clusters,
                           errors=errors or {}, values=values or {}), status


@bp.get("/archives")
@requires("archive.manage")
def index():
    """Every archive of a decommissioned hub: size, sha256, retention date; download, restore, purge.  Below, where
    each Kubernetes cluster's archive Jobs write."""
    return _index()


@bp.post("/clusters/<name>/archive-location")
@requires("cluster.manage")
def archive_location(name):
    """Set (or clear) the NFS server and path a Kubernetes cluster's archive Jobs write to."""
    cluster = scope.get_cluster(g.user, name, "cluster.manage")
    values = {"server": request.form.get("server", ""), "path": request.form.get("path", "")}
    try:
        service.set_archive_location(g.user, cluster, **values)
    except FieldErrors as exc:
        return _index({f"{name}-{field}": message for field, message in exc.errors.items()},
                      {f"{name}-{field}": value for field, value in values.items()}, 422)
    flash(f"Archives of hubs on {cluster.name} go to {values['server']}:{values['path']}." if values["server"] else
          f"Cluster {cluster.name} has no archive location any more: its hubs cannot be decommissioned.")
    return redirect(url_for("archives.index"))


@bp.get("/archives/download")
@requires("archive.manage")
def download():
    """The archive's file, streamed, its sha256 in ``X-Archive-SHA256`` (and ``Repr-Digest``)."""
    found = service.get_archive(g.user, request.args.get("archive"))
    path = service.download_path(g.user, found)
    response = send_file(path, mimetype="application/gzip", as_attachment=True, download_name=path.name,
                         conditional=False, etag=False)
    response.headers["X-Archive-SHA256"] = found.sha256
    response.headers["Repr-Digest"] = f"sha-256=:{base64.b64encode(bytes.fromhex(found.sha256)).decode()}:"
    response.headers["Cache-Control"] = "no-store"
    return response


def _restore_form(archive, values: dict, errors: dict, status: int = 200):
    return render_template(
        "archives/restore.html", archive=archive, values=values, errors=errors, slug_rule=hub_service.SLUG_RULE,
        institutions=db.session.execute(scope.institutions(g.user).order_by("slug")).scalars().all(),
        clusters=db.session.execute(scope.clusters(g.user).order_by("name")).scalars().all()), status


@bp.route("/archives/restore", methods=["GET", "POST"])
@requires("archive.manage")
def restore():
    """A new hub from an archive: its slug, institution and cluster (the archive's by default)."""
    found = service.get_archive(g.user, request.values.get("archive"))
    if request.method == "GET":
        return _restore_form(found, {"slug": found.hub_slug, "institution": found.institution.slug,
                                     "cluster": found.cluster.name}, {})
    values = {k: request.form.get(k, "") for k in ("slug", "institution", "cluster")}
    try:
        op = service.restore(g.user, found, **values)
    except FieldErrors as exc:
        return _restore_form(found, values, exc.errors, 422)
    if op.first_admin:  # shown once, as for a new hub
        page = render_template("fleet/hub_created.html", hub=op.hub, first_admin=op.first_admin)
        return page, 201, {"Cache-Control": "no-store"}
    return redirect(url_for("fleet.operation", operation_id=op.id))


@bp.post("/archives/purge")
@requires("archive.manage")
def purge():
    """Delete an archive for good, before its retention date."""
    found = service.purge(g.user, service.get_archive(g.user, request.form.get("archive")))
    flash(f"Archive {found.id} of {found.hub_slug} was purged.")
    return redirect(url_for("archives.index"))


# -- the API ----------------------------------------------------------------------------------------------------------

api_blp = ApiBlueprint("archives_api", __name__, url_prefix="/api/v1", description="Decommission and archives")


class DecommissionSchema(Schema):
    action = fields.String(load_default="request", validate=validate.OneOf(("request", "approve", "refuse")),
                           metadata={"description": "request (the default: an institution admin or an operator); "
                                                    "approve or refuse (operators)"})
    reason = fields.String(metadata={"description": "why: required to request, and to approve without a request"})
    confirm = fields.String(metadata={"description": "approve: the hub's slug, typed"})
    note = fields.String(metadata={"description": "refuse: why not"})


class DecommissionRequestSchema(Schema):
    id = fields.Integer()
    hub = fields.String(attribute="hub.slug")
    state = fields.String(validate=validate.OneOf(DECOMMISSION_STATES))
    reason = fields.String()
    requested_by = fields.Function(lambda r: actor_label(g.user, r.requested_by), metadata={"type": "string"})
    requested_at = fields.DateTime()
    decided_by = fields.Function(lambda r: actor_label(g.user, r.decided_by) if r.decided_by else None,
                                 metadata={"type": "string", "nullable": True})
    decided_at = fields.DateTime(allow_none=True)
    note = fields.String()
    operation = fields.Integer(attribute="operation_id", allow_none=True,
                               metadata={"description": "approved: poll GET /api/v1/operations/{id}"})
    archive = fields.Integer(attribute="archive_id", allow_none=True)


class ArchiveUserSchema(Schema):
    name = fields.String()
    bytes = fields.Integer()
    files = fields.Integer()


class ArchiveSchema(Schema):
    id = fields.Integer()
    hub = fields.String(attribute="hub_slug")
    institution = fields.String(attribute="institution.slug")
    cluster = fields.String(attribute="cluster.name")
    location = fields.String()
    size = fields.Integer(metadata={"description": "bytes"})
    sha256 = fields.String()
    state = fields.String(validate=validate.OneOf(ARCHIVE_STATES))
    users = fields.Function(lambda a: a.manifest.get("users", []), metadata={"type": "array"})
    database = fields.Function(lambda a: a.manifest.get("database", {}), metadata={"type": "object"})
    created_by = fields.String()
    created_at = fields.DateTime()
    retain_until = fields.DateTime(metadata={"description": "purged automatically after this"})
    purged_at = fields.DateTime(allow_none=True)


@api_blp.route("/hubs/<slug>/decommission")
class HubDecommission(MethodView):
    @requires("decommission.request")
    @api_blp.arguments(DecommissionSchema)
    @api_blp.response(200, DecommissionRequestSchema)
    def post(self, data, slug):
        """Request, approve or refuse decommissioning a hub.  Approve (operators) needs ``confirm`` = the hub's
        slug and queues the operation that archives the hub, then removes it; 409 while the hub is in a rollout
        or has an operation in flight."""
        hub = scope.get_hub(g.user, slug, "decommission.request")
        if data["action"] == "request":
            return service.request(g.user, hub, data.get("reason"))
        if data["action"] == "refuse":
            return service.refuse(g.user, hub, data.get("note", ""))
        return service.approve(g.user, hub, data.get("confirm"), data.get("reason"))


@api_blp.route("/archives")
class Archives(MethodView):
    @requires("archive.manage")
    @api_blp.response(200, ArchiveSchema(many=True))
    def get(self):
        """Archives of decommissioned hubs, newest first (operators)."""
        return service.archives(g.user)


class ArchiveLocationSchema(Schema):
    server = fields.String(load_default="", metadata={"description": "the NFS server's host name or address"})
    path = fields.String(load_default="", metadata={"description": "the export's absolute path; both empty clear it"})


class ClusterArchiveLocationSchema(Schema):
    cluster = fields.String(attribute="name")
    archive_nfs = fields.Function(lambda c: (c.settings or {}).get("archive_nfs"),
                                  metadata={"type": "object", "nullable": True})


@api_blp.route("/clusters/<name>/archive-location")
class ClusterArchiveLocation(MethodView):
    @requires("cluster.manage")
    @api_blp.arguments(ArchiveLocationSchema)
    @api_blp.response(200, ClusterArchiveLocationSchema)
    def put(self, data, name):
        """Set where a Kubernetes cluster's archive Jobs write decommissioned hubs' archives: an NFS server and
        path (operators).  422 for a malformed one; 409 for a cluster that is not Kubernetes."""
        return service.set_archive_location(g.user, scope.get_cluster(g.user, name, "cluster.manage"), **data)
