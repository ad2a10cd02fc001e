"""The fleet as code (plan and apply a fleet document, through the API) and drift (the report and Reconcile)."""
from flask import Blueprint, g, redirect, render_template, url_for
from flask.views import MethodView
from flask_smorest import Blueprint as ApiBlueprint
from marshmallow import INCLUDE, Schema, fields

from console.permissions import requires
from console.services import drift, fleet_code, scope

bp = Blueprint("fleet_code", __name__)


@bp.app_template_global("hub_drift")
def hub_drift(hub) -> drift.Drift:
    """The hub page's Drift section for templates: whether the hub runs what the console would deploy."""
    return drift.of(hub)


@bp.get("/fleet/drift")
@requires("hub.view")
def drift_report():
    """Every hub one may see, drifted ones first, with the digests compared and a Reconcile button (operators)."""
    return render_template("fleet/drift.html", report=drift.report(g.user))


@bp.post("/hubs/<slug>/reconcile")
@requires("fleet.apply")
def reconcile(slug):
    """Queue a reconcile of a hub (operators): its configuration is deployed again; the operation's page follows."""
    op = drift.reconcile(g.user, scope.get_hub(g.user, slug, "fleet.apply"))
    return redirect(url_for("fleet.operation", operation_id=op.id))


api_blp = ApiBlueprint("fleet_code_api", __name__, url_prefix="/api/v1", description="The fleet as code")


class FleetDocumentSchema(Schema):
    """A fleet document as ``hubfleet export`` writes it; checked field by field by the plan (422 with paths)."""

    class Meta:
        unknown = INCLUDE  # the plan names an unknown field by its path, like every other error

    version = fields.Raw(metadata={"description": "1"})
    institutions = fields.Raw(metadata={"description": '[{"slug", "name", "policy", "config", "blackouts"}]; '
                                                      'secret fields as {"secret": "stored"} or {"env": "NAME"}'})
    releases = fields.Raw(metadata={"description": '[{"name", "jupyterhub_version", "channel", "chart_version", '
                                                  '"hub_image", "config", "notes", "retracted"}]'})
    hubs = fields.Raw(metadata={"description": '[{"slug", "institution", "cluster", "channel", "pinned", "canary", '
                                              '"release" (pinned hubs)}]'})


class PlanSchema(Schema):
    digest = fields.String(metadata={"description": "the fleet the plan was made against: send it to apply"})
    changes = fields.List(fields.Dict(), metadata={
        "description": '[{"kind", "name", "action": create|change|delete, "fields": {field: {"before", "after"}}}]'})
    summary = fields.Dict(metadata={"description": '{"create": n, "change": n, "delete": n}'})


class ApplySchema(Schema):
    document = fields.Dict(required=True, metadata={"description": "the document that was planned"})
    digest = fields.String(required=True, metadata={"description": "the plan's digest"})


class AppliedSchema(Schema):
    applied = fields.List(fields.Dict())
    operations = fields.List(fields.Integer(), metadata={"description": "hub creations and deletions queued"})
    first_admins = fields.Dict(metadata={
        "description": "the first admin of each hub created for an institution without a login; shown only here"})
    digest = fields.String(metadata={"description": "the fleet's digest after applying"})


@api_blp.route("/fleet")
class FleetDocument(MethodView):
    @requires("fleet.apply")
    @api_blp.response(200, FleetDocumentSchema)
    def get(self):
        """The fleet as a document (operators): what ``hubfleet export`` prints."""
        return fleet_code.export_document()


@api_blp.route("/fleet/plan")
class FleetPlan(MethodView):
    @requires("fleet.apply")
    @api_blp.arguments(FleetDocumentSchema)
    @api_blp.response(200, PlanSchema)
    def post(self, document):
        """What applying the document would create, change and delete (operators); 422 with every error by field
        path. Changes nothing."""
        return fleet_code.plan(g.user, document).as_dict()


@api_blp.route("/fleet/apply")
class FleetApply(MethodView):
    @requires("fleet.apply")
    @api_blp.arguments(ApplySchema)
    @api_blp.response(200, AppliedSchema)
    def post(self, data):
        """Apply a planned document (operators): 409 when the fleet changed since the plan (plan again), 422 for an
        invalid document (nothing changed)."""
        return fleet_code.apply(g.user, data["document"], data["digest"]).as_dict()
