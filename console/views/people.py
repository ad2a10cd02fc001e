"""People: the people page (invite, disable, enable, remove, withdraw an invitation), the public page an invitation
link opens, and the same over the API."""
from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint as ApiBlueprint
from marshmallow import Schema, fields, validate
from werkzeug.exceptions import Gone, NotFound

from console import permissions
from console.extensions import db
from console.models import ROLES
from console.permissions import actor_label, requires
from console.security import start_session
from console.services import FieldErrors, sessions
from console.services import people as people_service

bp = Blueprint("people", __name__)


def _page(values: dict | None = None, errors: dict | None = None, link: str | None = None, status: int = 200):
    user = g.user
    return render_template(
        "people/index.html", people=db.session.execute(people_service.people(user)).unique().scalars().all(),
        invitations=db.session.execute(people_service.open_invitations(user)).unique().scalars().all(),
        roles=people_service.invitable_roles(user), role_labels=people_service.ROLE_LABELS,
        institutions=people_service.invitable_institutions(user),
        values=values or {"days": people_service.INVITATION_DAYS},
        errors=errors or {}, link=link, max_days=people_service.MAX_INVITATION_DAYS), status


def _link(token: str) -> str:
    return url_for("people.invitation", token=token, _external=True)


@bp.get("/people")
@requires("user.invite")
def index():
    """Everyone the user may manage, and the invitations still open."""
    return _page()


@bp.post("/people/invitations")
@requires("user.invite")
def invite():
    """Make an invitation link; the page shows it once."""
    values = {key: request.form.get(key, "") for key in ("as", "email", "days")}
    role, _, institution = values["as"].partition(":")  # "operator" or "institution_admin:<slug>": one choice
    try:
        _, token = people_service.invite(g.user, role, institution, values["email"], values["days"])
    except FieldErrors as exc:
        return _page(values, {"as" if field in ("role", "institution") else field: message
                              for field, message in exc.errors.items()}, status=422)
    return _page(link=_link(token), status=201)


@bp.post("/people/invitations/<int:invitation_id>/revoke")
@requires("user.invite")
def revoke(invitation_id):
    """Withdraw an invitation: its link stops working."""
    invitation = people_service.revoke_invitation(g.user, people_service.get_invitation(g.user, invitation_id))
    if invitation.hub is not None:
        flash(f"The invitation {invitation.id} to {invitation.hub.slug} was revoked: its link no longer works.")
        return redirect(url_for("fleet.hub", slug=invitation.hub.slug))
    flash(f"The invitation{' for ' + invitation.email if invitation.email else ''} was withdrawn: its link no longer "
          "works.")
    return redirect(url_for("people.index"))


@bp.post("/people/<int:person_id>/disable")
@requires("user.invite")
def disable(person_id):
    """Disable an account: no login, its sessions and tokens end."""
    person = people_service.disable(g.user, people_service.get_person(g.user, person_id))
    flash(f"{person.email} is disabled: their sessions and API tokens have ended.")
    return redirect(url_for("people.index"))


@bp.post("/people/<int:person_id>/enable")
@requires("user.invite")
def enable(person_id):
    """Let a disabled account log in again."""
    person = people_service.enable(g.user, people_service.get_person(g.user, person_id))
    flash(f"{person.email} can log in again.")
    return redirect(url_for("people.index"))


@bp.route("/people/<int:person_id>/remove", methods=["GET", "POST"])
@requires("user.invite")
def remove(person_id):
    """Ask, then delete an account."""
    person = people_service.get_person(g.user, person_id)
    if request.method == "GET":
        return render_template("people/remove.html", person=person, role_labels=people_service.ROLE_LABELS)
    email = person.email
    people_service.remove(g.user, person)
    flash(f"{email} was removed.")
    return redirect(url_for("people.index"))


@bp.route("/invitations/<token>", methods=["GET", "POST"])
def invitation(token):
    """Public: the page an invitation link opens, where the invitee sets their email and password."""
    try:
        found = people_service.invitation_for_token(token)
        if request.method == "GET":
            return _invitation_page(found, {"email": found.email or ""}, {})
        user = people_service.redeem(token, request.form.get("email"), request.form.get("password"),
                                     request.form.get("confirm"))
    except (NotFound, Gone) as exc:
        return render_template("people/invitation_refused.html", reason=exc.description), exc.code
    except FieldErrors as exc:
        return _invitation_page(found, {"email": found.email or request.form.get("email", "")}, exc.errors, 422)
    _log_in(user, request.form["password"])
    return redirect(url_for("fleet.index"))


def _log_in(user, password: str) -> None:
    """Log the new account in as the login form would (a session row, a fresh cookie); if logins from this address
    must wait, the account exists all the same and the login page says how long."""
    try:
        found = sessions.log_in(user.email, password, request.remote_addr, request.user_agent.string)
    except sessions.Throttled:
        found = None
    if found:
        start_session(*found)
    else:
        flash("Your account is ready: log in with your new password.")


def _invitation_page(found, values, errors, status=200):
    return render_template("people/invitation.html", invitation=found, values=values, errors=errors,
                           invited_as=permissions.ROLES[found.role].label), status


# -- API ----------------------------------------------------------------------------------------------------------

api_blp = ApiBlueprint("people_api", __name__, url_prefix="/api/v1", description="People and invitations")


class PersonSchema(Schema):
    id = fields.Integer()
    email = fields.String()
    username = fields.String(metadata={"description": "the person's name on hubs: minted once, never reused"})
    role = fields.String(validate=validate.OneOf(ROLES))
    institution = fields.String(attribute="institution.slug", allow_none=True)
    created_at = fields.DateTime()
    disabled_at = fields.DateTime(allow_none=True, metadata={"description": "null while the account may log in"})


class InvitationSchema(Schema):
    id = fields.Integer()
    role = fields.String(validate=validate.OneOf(ROLES))
    institution = fields.String(attribute="institution.slug", allow_none=True)
    email = fields.String(allow_none=True, metadata={"description": "the only address the account may have"})
    expires_at = fields.DateTime()
    max_uses = fields.Integer()
    use_count = fields.Integer()
    created_at = fields.DateTime()
    created_by = fields.Function(
        lambda inv: actor_label(g.user, inv.created_by.email) if inv.created_by else "a former user",
        metadata={"type": "string", "description": "who invited (an operator's email only to operators)"})


class NewInvitationSchema(Schema):
    invitation = fields.Nested(InvitationSchema)
    token = fields.String(metadata={"description": "shown once: only its hash is kept"})
    link = fields.String(metadata={"description": "the page the invitee opens; shown once"})


class InviteSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    institution = fields.String(load_default=None, validate=validate.Length(max=63), metadata={
        "description": "the institution's slug (an institution admin: their own when left out)"})
    email = fields.String(load_default=None, validate=validate.Length(max=254),
                          metadata={"description": "fix the new account's email"})
    days = fields.Integer(load_default=people_service.INVITATION_DAYS,
                          validate=validate.Range(1, people_service.MAX_INVITATION_DAYS),
                          metadata={"description": "how long the link lasts"})
    max_uses = fields.Integer(load_default=1, validate=validate.Range(1, people_service.MAX_USES))


@api_blp.route("/people")
class People(MethodView):
    @requires("user.invite")
    @api_blp.response(200, PersonSchema(many=True))
    def get(self):
        """List the people you may manage (an institution admin: their institution's admins)."""
        return db.session.execute(people_service.people(g.user)).unique().scalars().all()


@api_blp.route("/people/<int:person_id>")
class PersonItem(MethodView):
    @requires("user.invite")
    @api_blp.response(200, PersonSchema)
    def get(self, person_id):
        """One person."""
        return people_service.get_person(g.user, person_id)

    @requires("user.invite")
    @api_blp.response(204)
    def delete(self, person_id):
        """Remove an account, with its sessions and tokens (never your own, never the last active operator)."""
        people_service.remove(g.user, people_service.get_person(g.user, person_id))


@api_blp.route("/people/<int:person_id>/disable")
class PersonDisable(MethodView):
    @requires("user.invite")
    @api_blp.response(200, PersonSchema)
    def post(self, person_id):
        """Disable an account: it cannot log in, its sessions end and its API tokens are revoked."""
        return people_service.disable(g.user, people_service.get_person(g.user, person_id))


@api_blp.route("/people/<int:person_id>/enable")
class PersonEnable(MethodView):
    @requires("user.invite")
    @api_blp.response(200, PersonSchema)
    def post(self, person_id):
        """Let a disabled account log in again."""
        return people_service.enable(g.user, people_service.get_person(g.user, person_id))


@api_blp.route("/invitations")
class Invitations(MethodView):
    @requires("user.invite")
    @api_blp.response(200, InvitationSchema(many=True))
    def get(self):
        """Invitations that can still be used."""
        return db.session.execute(people_service.open_invitations(g.user)).unique().scalars().all()

    @requires("user.invite")
    @api_blp.arguments(InviteSchema)
    @api_blp.response(201, NewInvitationSchema)
    def post(self, data):
        """Invite someone: returns the link (and its token) once."""
        invitation, token = people_service.invite(g.user, **data)
        return {"invitation": invitation, "token": token, "link": _link(token)}


@api_blp.route("/invitations/<int:invitation_id>")
class InvitationItem(MethodView):
    @requires("user.invite")
    @api_blp.response(204)
    def delete(self, invitation_id):
        """Withdraw an invitation."""
        people_service.revoke_invitation(g.user, people_service.get_invitation(g.user, invitation_id))
