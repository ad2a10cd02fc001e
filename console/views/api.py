"""The JSON API under /api/v1: the same service functions as the pages, bearer tokens only."""
from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from console.services import scope
from console.services import hubs as hub_service

blp = Blueprint("api", __name__, url_prefix="/api/v1", description="Hubs and their operations")


class HubSchema(Schema):
    slug = fields.String()
    institution = fields.String(attribute="institution.slug")
    cluster = fields.String(attribute="cluster.name")
    state = fields.String()
    health = fields.String()
    jupyterhub_version = fields.String(allow_none=True)
    url = fields.String(allow_none=True)
    user_count = fields.Integer(allow_none=True)
    status_message = fields.String()
    observed_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class HubCreateSchema(Schema):
    slug = fields.String(required=True, metadata={"description": hub_service.SLUG_RULE})
    institution = fields.String(required=True, metadata={"description": "the institution's slug"})
    cluster = fields.String(required=True, metadata={"description": "the cluster's name"})


class AcceptedSchema(Schema):
    operation = fields.Integer(metadata={"description": "poll GET /api/v1/operations/{id}"})


class OperationSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    hub = fields.String(attribute="hub.slug")
    actor = fields.String()
    state = fields.String(validate=validate.OneOf(("queued", "running", "succeeded", "failed")))
    error = fields.String()
    attempts = fields.Integer()
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    log = fields.Function(lambda op: [entry.line for entry in op.lines], metadata={"type": "array"})


@blp.route("/hubs")
class Hubs(MethodView):
    @blp.response(200, HubSchema(many=True))
    def get(self):
        """List the hubs you may see."""
        return hub_service.list_hubs(g.user)

    @blp.arguments(HubCreateSchema)
    @blp.response(202, AcceptedSchema)
    def post(self, data):
        """Create a hub (operators). Returns the operation that brings it up."""
        return {"operation": hub_service.create_hub(g.user, **data).id}


@blp.route("/hubs/<slug>")
class HubItem(MethodView):
    @blp.response(200, HubSchema)
    def get(self, slug):
        """One hub."""
        return scope.get_hub(g.user, slug)

    @blp.response(202, AcceptedSchema)
    def delete(self, slug):
        """Delete a hub (operators). Returns the operation that removes it."""
        return {"operation": hub_service.delete_hub(g.user, scope.get_hub(g.user, slug)).id}


@blp.route("/hubs/<slug>/restart")
class HubRestart(MethodView):
    @blp.response(202, AcceptedSchema)
    def post(self, slug):
        """Restart a hub."""
        return {"operation": hub_service.restart_hub(g.user, scope.get_hub(g.user, slug)).id}


@blp.route("/operations/<int:operation_id>")
class OperationItem(MethodView):
    @blp.response(200, OperationSchema)
    def get(self, operation_id):
        """An operation, with its log."""
        return scope.get_operation(g.user, operation_id)
