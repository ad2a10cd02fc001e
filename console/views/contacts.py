"""Contacts of institutions and hubs (add, change, remove; pages and API) and the alert email's test button.

The institution page and the hub page show the lists and the add form (``templates/contacts/``); every form posts
here and comes back to the page it was for.  The fleet table and the alerts list name whom to call through the
Jinja global ``contacts_to_call`` (one query for all the hubs shown).
"""
from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint as ApiBlueprint
from marshmallow import Schema, fields, validate

from console.models import CONTACT_KINDS
from console.permissions import requires
from console.services import FieldErrors, scope
from console.services import alert_email
from console.services import contacts as service

bp = Blueprint("contacts", __name__)
bp.add_app_template_global(service.technical_by_hub, "contacts_to_call")
bp.add_app_template_global(alert_email.enabled, "alert_email_on")
bp.add_app_template_global(alert_email.server_label, "alert_email_server")


def _form_values() -> dict:
    """The contact form as typed; an unticked checkbox is absent from a form, so its absence means no."""
    values = {key: request.form.get(key, "") for key in ("kind", "name", "email", "phone", "hub")}
    values["receives_alerts"] = "receives_alerts" in request.form
    return values


def _back(institution, hub_slug: str | None):
    """The page a contact form came from: its hub's page, else the institution's."""
    if hub_slug:
        return redirect(url_for("fleet.hub", slug=hub_slug))
    return redirect(url_for("institutions.detail", slug=institution.slug))


def _form_page(institution, contact, values: dict, errors: dict, status: int = 200):
    return render_template("contacts/edit.html", institution=institution, contact=contact, values=values,
                           errors=errors, contact_kinds=service.KIND_LABELS,
                           contact_hubs=service.hub_choices(institution)), status


@bp.post("/institutions/<slug>/contacts")
@requires("contact.edit")
def add(slug):
    """Add a contact to the institution, or to one of its hubs (the form's ``hub``)."""
    institution = scope.get_institution(g.user, slug, "contact.edit")
    values = _form_values()
    try:
        contact = service.add(g.user, institution, values)
    except FieldErrors as exc:
        return _form_page(institution, None, values, exc.errors, 422)
    flash(f"{contact.name} was added as a {contact.kind} contact.")
    return _back(institution, contact.hub.slug if contact.hub else None)


@bp.get("/institutions/<slug>/contacts/<int:contact_id>")
@requires("contact.edit")
def edit_form(slug, contact_id):
    """The form that changes one contact."""
    institution = scope.get_institution(g.user, slug, "contact.edit")
    contact = service.get(institution, contact_id)
    values = {"kind": contact.kind, "name": contact.name, "email": contact.email, "phone": contact.phone,
              "receives_alerts": contact.receives_alerts, "hub": contact.hub.slug if contact.hub else ""}
    return _form_page(institution, contact, values, {})


@bp.post("/institutions/<slug>/contacts/<int:contact_id>")
@requires("contact.edit")
def edit(slug, contact_id):
    institution = scope.get_institution(g.user, slug, "contact.edit")
    contact = service.get(institution, contact_id)
    values = _form_values()
    try:
        service.edit(g.user, contact, values)
    except FieldErrors as exc:
        return _form_page(institution, contact, values, exc.errors, 422)
    flash(f"{contact.name} was saved.")
    return _back(institution, contact.hub.slug if contact.hub else None)


@bp.post("/institutions/<slug>/contacts/<int:contact_id>/delete")
@requires("contact.edit")
def remove(slug, contact_id):
    institution = scope.get_institution(g.user, slug, "contact.edit")
    contact = service.get(institution, contact_id)
    hub_slug, name = (contact.hub.slug if contact.hub else None), contact.name
    service.remove(g.user, contact)
    flash(f"{name} is no longer a contact.")
    return _back(institution, hub_slug)


@bp.post("/alerts/test-email")
@requires("contact.edit")
def test_email():
    """Email a test message to the signed-in person now, through the configured SMTP server."""
    problem = alert_email.send_test(g.user)
    flash(problem or f"A test email was sent to {g.user.email}.")
    return redirect(url_for("monitoring.alerts"))


# -- API ----------------------------------------------------------------------------------------------------------

api_blp = ApiBlueprint("contacts_api", __name__, url_prefix="/api/v1",
                       description="Contacts of institutions and their hubs")


class ContactSchema(Schema):
    id = fields.Integer()
    kind = fields.String(validate=validate.OneOf(CONTACT_KINDS))
    name = fields.String()
    email = fields.String()
    phone = fields.String()
    receives_alerts = fields.Boolean()
    hub = fields.Function(lambda c: c.hub.slug if c.hub else None, metadata={
        "type": "string", "nullable": True, "description": "the hub's slug; null: a contact for all its hubs"})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class ContactPatchSchema(Schema):
    kind = fields.String(validate=validate.OneOf(CONTACT_KINDS))
    name = fields.String(validate=validate.Length(max=service.MAX_NAME))
    email = fields.String(validate=validate.Length(max=254))
    phone = fields.String(validate=validate.Length(max=service.MAX_PHONE), metadata={"description": "may be empty"})
    receives_alerts = fields.Boolean(metadata={"description": "whether alerts are emailed to this contact "
                                                              "(docs/monitoring.md says who receives them)"})
    hub = fields.String(allow_none=True, validate=validate.Length(max=63),
                        metadata={"description": "one hub of the institution (its slug); null: all of them"})


@api_blp.route("/institutions/<slug>/contacts")
class Contacts(MethodView):
    @requires("institution.view")
    @api_blp.response(200, ContactSchema(many=True))
    def get(self, slug):
        """The institution's contacts: its own, then its hubs' ones."""
        return service.of_institution(scope.get_institution(g.user, slug))

    @requires("contact.edit")
    @api_blp.arguments(ContactPatchSchema)
    @api_blp.response(201, ContactSchema)
    def post(self, data, slug):
        """Add a contact for all the institution's hubs, or for one (``hub``): ``kind``, ``name`` and ``email`` are
        required (422 with a message for each one missing, once the institution is found)."""
        return service.add(g.user, scope.get_institution(g.user, slug, "contact.edit"), data)


@api_blp.route("/institutions/<slug>/contacts/<int:contact_id>")
class ContactItem(MethodView):
    @requires("contact.edit")
    @api_blp.arguments(ContactPatchSchema)
    @api_blp.response(200, ContactSchema)
    def patch(self, data, slug, contact_id):
        """Change the fields given."""
        institution = scope.get_institution(g.user, slug, "contact.edit")
        return service.edit(g.user, service.get(institution, contact_id), data)

    @requires("contact.edit")
    @api_blp.response(204)
    def delete(self, slug, contact_id):
        """Remove the contact."""
        institution = scope.get_institution(g.user, slug, "contact.edit")
        service.remove(g.user, service.get(institution, contact_id))
