"""Memberships: My hubs, joining a hub by an invitation link, and a hub's members and invitations (pages and API)."""
from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint as ApiBlueprint
from marshmallow import Schema, fields, validate
from werkzeug.exceptions import Gone, NotFound

from console.permissions import requires
from console.services import FieldErrors, scope
from console.services import memberships as service

bp = Blueprint("memberships", __name__)


def join_link(token: str) -> str:
    return url_for("memberships.join", token=token, _external=True)


@bp.get("/me/hubs")
@requires("hub.use")
def my_hubs():
    """Every hub the person belongs to, with their server as the last sweep saw it, and a Launch link."""
    return render_template("memberships/my_hubs.html", rows=service.my_hubs(g.user))


@bp.route("/join/<token>", methods=["GET", "POST"])
@requires("hub.use")
def join(token):
    """An invitation link to a hub: the page names the hub, its button joins it (a visitor logs in first)."""
    try:
        if request.method == "GET":
            return render_template("memberships/join.html", invitation=service.invitation_for_join(token))
        membership, new = service.join(g.user, token)
    except (NotFound, Gone) as exc:
        return render_template("people/invitation_refused.html", reason=exc.description, to_hub=True), exc.code
    flash(f"You are now a member of {membership.hub.slug}." if new else
          f"You are a member of {membership.hub.slug} already.")
    return redirect(url_for("memberships.my_hubs"))


@bp.post("/hubs/<slug>/invitations")
@requires("user.invite")
def invite(slug):
    """Make an invitation link to the hub; the answer shows it once."""
    hub = scope.get_hub(g.user, slug, "user.invite")
    values = {key: request.form.get(key, "") for key in ("expires_in", "max_uses")}
    try:
        invitation, token = service.invite(g.user, hub, values["expires_in"], values["max_uses"])
    except FieldErrors as exc:
        return render_template("memberships/invite.html", hub=hub, values=values, errors=exc.errors,
                               expiry_choices=service.EXPIRY_CHOICES, max_uses=service.MAX_USES), 422
    page = render_template("memberships/invitation_created.html", hub=hub, invitation=invitation,
                           link=join_link(token))
    return page, 201, {"Cache-Control": "no-store"}


@bp.post("/hubs/<slug>/members/<int:membership_id>/revoke")
@requires("user.invite")
def revoke_member(slug, membership_id):
    """End one membership of the hub."""
    hub = scope.get_hub(g.user, slug, "user.invite")
    membership = service.get_membership(g.user, hub, membership_id)
    service.end_membership(g.user, membership)
    flash(f"{membership.user.username} is no longer a member of {hub.slug} (by {membership.source}).")
    return redirect(url_for("fleet.hub", slug=hub.slug))


# -- API ----------------------------------------------------------------------------------------------------------

api_blp = ApiBlueprint("memberships_api", __name__, url_prefix="/api/v1", description="Memberships of hubs")


class MyHubSchema(Schema):
    hub = fields.String(attribute="slug")
    institution = fields.String(attribute="institution_slug")
    institution_name = fields.String(attribute="institution")
    role = fields.String(validate=validate.OneOf(tuple(service.ROLE_RANK)))
    source = fields.String(metadata={"description": "invitation | rule | operator | institution (an admin's own)"})
    expires_at = fields.DateTime(allow_none=True)
    server_state = fields.String(allow_none=True, metadata={"description": "running | pending | stopped; null: "
                                                                             "never seen"})
    started = fields.DateTime(allow_none=True)
    last_activity = fields.DateTime(allow_none=True)
    launch_url = fields.String(allow_none=True)
    launch_reason = fields.String(metadata={"description": "why launch_url is null"})


class HubInvitationInSchema(Schema):
    expires_in = fields.Integer(required=True, strict=True, validate=validate.Range(
        service.MIN_EXPIRES_IN, service.MAX_EXPIRES_IN), metadata={"description": "seconds: 3600 to 7776000"})
    max_uses = fields.Integer(required=True, strict=True, validate=validate.Range(1, service.MAX_USES))


class HubInvitationSchema(Schema):
    id = fields.Integer()
    hub = fields.String(attribute="hub.slug")
    expires_at = fields.DateTime()
    max_uses = fields.Integer()
    use_count = fields.Integer()


class NewHubInvitationSchema(Schema):
    invitation = fields.Nested(HubInvitationSchema)
    token = fields.String(metadata={"description": "shown once, never stored"})
    link = fields.String()


class MemberRemovedSchema(Schema):
    ended = fields.Integer(metadata={"description": "how many active memberships ended (0: none was active)"})


@api_blp.route("/me/hubs")
class MyHubs(MethodView):
    @requires("hub.use")
    @api_blp.response(200, MyHubSchema(many=True))
    def get(self):
        """The hubs the token's owner belongs to, as My hubs lists them."""
        return service.my_hubs(g.user)


@api_blp.route("/hubs/<slug>/invitations")
class HubInvitations(MethodView):
    @requires("user.invite")
    @api_blp.arguments(HubInvitationInSchema)
    @api_blp.response(201, NewHubInvitationSchema)
    def post(self, data, slug):
        """Make an invitation link to the hub (its token is in this answer only)."""
        hub = scope.get_hub(g.user, slug, "user.invite")
        invitation, token = service.invite(g.user, hub, data["expires_in"], data["max_uses"])
        return {"invitation": invitation, "token": token, "link": join_link(token)}


@api_blp.route("/hubs/<slug>/members/<int:user_id>")
class HubMember(MethodView):
    @requires("user.invite")
    @api_blp.response(200, MemberRemovedSchema)
    def delete(self, slug, user_id):
        """End every active membership the person holds of this hub (404: they never were a member)."""
        hub = scope.get_hub(g.user, slug, "user.invite")
        return {"ended": service.revoke_member(g.user, hub, user_id)}
