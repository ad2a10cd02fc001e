from flask import Blueprint, current_app, flash, g, make_response, redirect, render_template, request, url_for
from tenants.auth import KINDS, upgraded
from tenants.discovery import fetch_discovery
from tenants.fields import Invalid
from tenants.policy import DEFAULT_POLICY
from werkzeug.exceptions import Conflict

from console.config import outbound_policy
from console.extensions import db
from console.permissions import can, requires
from console.forms import carry_over, form_value, parse_config_form
from console.htmx import wants_fragment
from console.models import AuditEvent, Hub, Operation
from console.services import FieldErrors, identities, scope
from console.services import config as config_service
from console.services import hubs as hub_service
from console.services import operations
from console.services import institutions as institution_service
from console.services import contacts as contact_service
from console.services import slurm_view

bp = Blueprint("institutions", __name__)


def _page(values: dict, errors: dict, status: int = 200):
    rows = db.session.execute(scope.institutions(g.user).order_by("slug")).scalars().all()
    return render_template("institutions/index.html", institutions=rows, values=values, errors=errors), status


@bp.get("/institutions")
@requires("institution.view")
def index():
    return _page({}, {})


@bp.post("/institutions")
@requires("institution.create")
def create():
    values = {k: request.form.get(k, "") for k in ("slug", "name")}
    try:
        institution = institution_service.create_institution(g.user, **values)
    except FieldErrors as exc:
        return _page(values, exc.errors, 422)
    flash(f"{institution.name} added. Set its policy, then create its hubs.")
    return redirect(url_for("institutions.detail", slug=institution.slug))


@bp.get("/institutions/<slug>")
@requires("institution.view")
def detail(slug):
    return detail_page(scope.get_institution(g.user, slug))


def detail_page(institution, blackouts_text: str | None = None, blackout_errors: list[str] | None = None,
                status: int = 200):
    """The institution's page; with ``blackouts_text``, the blackout form as typed and its errors (a refused save)."""
    recent = db.session.execute(
        db.select(Operation).join(Operation.hub).where(Hub.institution_id == institution.id)
        .order_by(Operation.id.desc()).limit(10)).unique().scalars().all()
    events = db.session.execute(db.select(AuditEvent).where(AuditEvent.institution_id == institution.id)
                                .order_by(AuditEvent.id.desc()).limit(15)).scalars().all() \
        if can(g.user, "audit.view", institution) else []
    hubs = hub_service.list_hubs(g.user, institution=institution)
    return render_template("institutions/detail.html", institution=institution, hubs=hubs,
                           current_ops=operations.current_by_hub([hub.id for hub in hubs]),
                           config=config_service.current_config(institution),
                           secrets_set=config_service.secrets_set(institution),
                           policy=config_service.policy_of(institution), kinds=KINDS, operations=recent,
                           events=events, config_rollout=config_service.latest_config_rollout(institution),
                           config_rollout_live=config_service.config_rollout_live,
                           blackouts_text=blackouts_text, blackout_errors=blackout_errors or [],
                           **contact_service.institution_section(institution)), status


def _config_form(institution, auth, environment, new_secrets, errors, status=200, discovery_url=""):
    kind = KINDS.get(auth.get("authenticator_class"))
    return render_template(
        "institutions/config.html", institution=institution, auth=upgraded(kind, auth) if kind else auth,
        environment=environment, errors=errors, kinds=KINDS, kind=kind, form_value=form_value,
        stored_secrets=config_service.secrets_set(institution), new_secrets=sorted(new_secrets),
        policy=config_service.policy_of(institution), discovery_url=discovery_url,
        has_draft=config_service.draft_of(g.user, institution) is not None,
        slurm_clusters=slurm_view.slurm_clusters(institution),  # profiles become job options there
        callback_urls=[f"{hub.url}hub/oauth_callback" for hub in config_service.live_hubs(institution) if hub.url]
    ), status


@bp.get("/institutions/<slug>/config")
@requires("config.view")
def edit_config(slug):
    institution = scope.get_institution(g.user, slug, "config.view")
    draft = config_service.draft_of(g.user, institution)
    if draft:
        return _config_form(institution, draft.auth, draft.environment, config_service.draft_secrets(draft), {})
    current = config_service.current_config(institution)
    return _config_form(institution, current["auth"], current["environment"], {}, {})


@bp.post("/institutions/<slug>/config")
@requires("config.edit")
def post_config(slug):
    institution = scope.get_institution(g.user, slug, "config.edit")
    action = request.form.get("action", "preview")
    if action == "discard":
        config_service.discard_draft(g.user, institution)
        return redirect(url_for("institutions.edit_config", slug=slug))
    auth, environment, typed = parse_config_form(request.form)
    discovery_url = request.form.get("discovery_url", "").strip()
    errors = {}
    if action == "switch":
        auth = carry_over(auth, request.form.get("auth.authenticator_class", ""))
        typed = {}
    elif action == "discover":
        try:
            auth.update(fetch_discovery(discovery_url, outbound_policy(current_app)))
        except Invalid as exc:
            errors["discovery_url"] = str(exc)
    draft = config_service.save_draft(g.user, institution, auth, environment, typed)
    new_secrets = config_service.draft_secrets(draft)
    if action != "preview" or errors:
        return _config_form(institution, draft.auth, draft.environment, new_secrets, errors,
                            422 if errors else 200, discovery_url)
    try:
        diffs = config_service.preview(g.user, institution, draft.auth, draft.environment, new_secrets)
    except FieldErrors as exc:
        return _config_form(institution, draft.auth, draft.environment, new_secrets, exc.errors, 422,
                            discovery_url)
    return render_template("institutions/preview.html", institution=institution, diffs=diffs,
                           order=config_service.planned_order(institution))


@bp.post("/institutions/<slug>/config/apply")
@requires("config.edit")
def apply_config(slug):
    institution = scope.get_institution(g.user, slug, "config.edit")
    draft = config_service.draft_of(g.user, institution)
    if draft is None:
        flash("Nothing to apply: the draft was applied or discarded already.")
        return redirect(url_for("institutions.detail", slug=slug))
    try:
        rollout = config_service.apply(g.user, institution, draft.auth, draft.environment,
                                       config_service.draft_secrets(draft))
    except FieldErrors as exc:
        return _config_form(institution, draft.auth, draft.environment, config_service.draft_secrets(draft),
                            exc.errors, 422)
    except Conflict as exc:
        flash(exc.description)
        return redirect(url_for("institutions.detail", slug=slug))
    flash(apply_message(rollout))
    return redirect(url_for("institutions.detail", slug=slug))


def apply_message(rollout) -> str:
    """What Apply will do, in a sentence: which hub goes first, and that the change stops there if it fails."""
    if rollout is None:
        return "Applied: the institution has no running hub, so new hubs start with this configuration."
    order = config_service.rollout_order(rollout)
    if len(order) == 1:
        return (f"Applying to {order[0]}: it is checked, then restarted; if it does not come up, it is put back on "
                f"its previous configuration.")
    return (f"Applying hub by hub, {order[0]} first, then {', '.join(order[1:])}. Each is checked before it is "
            f"restarted; at the first hub that does not come up, the change stops there and that hub is put back.")


@bp.get("/institutions/<slug>/config/rollout")
@requires("config.view")
def config_rollout(slug):
    """The institution's latest config rollout: each hub waiting, applying, applied or rolled back (with why)."""
    institution = scope.get_institution(g.user, slug, "config.view")
    rollout = config_service.latest_config_rollout(institution)
    response = make_response(render_template("institutions/_config_rollout.html", institution=institution,
                                             config_rollout=rollout,
                                             config_rollout_live=config_service.config_rollout_live))
    if wants_fragment() and not config_service.config_rollout_live(rollout):
        response.headers["HX-Refresh"] = "true"  # it ended: the institution's facts above changed too
    return response


# How the policy warning names a setting of the config form.
CONFLICT_LABELS = {"environment.image": "Default image", "environment.cpu_limit": "CPU limit",
                   "environment.cpu_guarantee": "CPU guarantee", "environment.mem_limit": "Memory limit",
                   "environment.mem_guarantee": "Memory guarantee", "environment.gpus": "GPUs",
                   "environment.storage_capacity": "Home storage", "auth.authenticator_class": "Login",
                   "auth.allowed_users": "Allowed users"}


def _conflict_label(key: str) -> str:
    """"environment.profiles.0.cpu_limit" → "Profile 1, CPU limit"; a top-level setting by its label."""
    parts = key.split(".")
    if len(parts) == 4 and parts[1] == "profiles" and parts[2].isdigit():
        return f"Profile {int(parts[2]) + 1}, {CONFLICT_LABELS.get('environment.' + parts[3], parts[3])}"
    return CONFLICT_LABELS.get(key, key)


def _policy_page(institution, values: dict, errors: dict, status: int = 200):
    conflicts = {_conflict_label(k): v for k, v in sorted(config_service.policy_conflicts(institution).items())}
    return render_template("institutions/policy.html", institution=institution, values=values, errors=errors,
                           conflicts=conflicts,
                           format_list=lambda v: "\n".join(v) if isinstance(v, list) else v), status


@bp.get("/institutions/<slug>/policy")
@requires("config.view")
def policy(slug):
    """The institution's policy: a form for who may set it, read-only for who may only see it."""
    institution = scope.get_institution(g.user, slug, "config.view")
    return _policy_page(institution, config_service.policy_of(institution), {})


@bp.post("/institutions/<slug>/policy")
@requires("policy.set")
def set_policy(slug):
    institution = scope.get_institution(g.user, slug, "policy.set")
    values = {k: request.form.get(k, "") for k in DEFAULT_POLICY}
    values["gpus_allowed"] = request.form.get("gpus_allowed", "off")
    values["open_login_allowed"] = request.form.get("open_login_allowed", "off")
    try:
        config_service.set_policy(g.user, institution, values)
    except FieldErrors as exc:
        return _policy_page(institution, values, {k.removeprefix("policy."): v for k, v in exc.errors.items()}, 422)
    if config_service.policy_conflicts(institution):
        flash("Policy saved, but the institution's current configuration now exceeds it: what is over is listed "
              "below.")
        return redirect(url_for("institutions.policy", slug=slug))  # where the excess stays in view
    flash("Policy saved.")
    return redirect(url_for("institutions.detail", slug=slug))


# -- the institution's own login to the console (its IdP) ---------------------------------------------------------

IDP_FIELDS = ("discovery_url", "client_id", "client_secret", "scopes", "authoritative_domains", "member_claim",
              "member_values")


def _idp_page(institution, values: dict, errors: dict, status: int = 200):
    return render_template("institutions/idp.html", institution=institution, values=values, errors=errors,
                           idp=identities.describe(identities.idp_of(institution)),
                           callback_url=url_for("auth.idp_callback", slug=institution.slug, _external=True)), \
        status, {"Cache-Control": "no-store"}


@bp.get("/institutions/<slug>/console-login")
@requires("config.view")
def console_login(slug):
    """How the institution's people log into the console: its IdP (operators set it; admins read it)."""
    institution = scope.get_institution(g.user, slug, "config.view")
    current = identities.describe(identities.idp_of(institution)) or {}
    values = {key: current.get(key, "") for key in IDP_FIELDS if key != "client_secret"}
    values["authoritative_domains"] = "\n".join(current.get("authoritative_domains", []))
    values["member_values"] = "\n".join(current.get("member_values", []))
    values["scopes"] = current.get("scopes") or identities.DEFAULT_SCOPES
    return _idp_page(institution, values, {})


@bp.post("/institutions/<slug>/console-login")
@requires("idp.set")
def set_console_login(slug):
    institution = scope.get_institution(g.user, slug, "idp.set")
    values = {key: request.form.get(key, "") for key in IDP_FIELDS}
    try:
        identities.configure(g.user, institution, values)
    except FieldErrors as exc:
        values.pop("client_secret")  # write-only: never sent back, even as typed
        return _idp_page(institution, values, exc.errors, 422)
    flash(f"{institution.name}'s people can now log in with their institution.")
    return redirect(url_for("institutions.console_login", slug=slug))


@bp.post("/institutions/<slug>/console-login/remove")
@requires("idp.set")
def remove_console_login(slug):
    institution = scope.get_institution(g.user, slug, "idp.set")
    removed = identities.remove(g.user, institution)
    flash("The institution login was removed; its people keep their accounts." if removed
          else "There was no institution login to remove.")
    return redirect(url_for("institutions.console_login", slug=slug))
