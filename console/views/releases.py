from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.exceptions import Conflict

from console import htmx
from console.extensions import db
from console.models import Release, Rollout
from console.security import require_operator
from console.services import FieldErrors, operations, scope
from console.services import releases as release_service

bp = Blueprint("releases", __name__)


def _page(errors=None, values=None, rollout_errors=None, rollout_values=None, status=200):
    return render_template(
        "releases/index.html",
        releases=db.session.execute(db.select(Release).order_by(Release.id.desc())).scalars().all(),
        rollouts=db.session.execute(db.select(Rollout).order_by(Rollout.id.desc()).limit(20)).unique().scalars().all(),
        institutions=db.session.execute(scope.institutions(g.user)).scalars().all(),
        errors=errors or {}, values=values or {}, rollout_errors=rollout_errors or {},
        rollout_values=rollout_values or {}), status


@bp.get("/releases")
def index():
    require_operator(g.user)
    return _page()


@bp.post("/releases")
def create():
    require_operator(g.user)
    values = {k: request.form.get(k, "") for k in ("name", "jupyterhub_version", "channel", "notes")}
    try:
        release = release_service.create_release(g.user, values)
    except FieldErrors as exc:
        return _page(errors=exc.errors, values=values, status=422)
    return redirect(url_for("releases.detail", name=release.name))  # its preparation, live


@bp.get("/releases/<name>")
def detail(name):
    release = release_service.get_release(name)
    require_operator(g.user)
    op = release_service.prepare_operation(release)
    return render_template("releases/detail.html", release=release, op=op,
                           lines=operations.log_lines(op) if op else [], usage=release_service.usage(release))


@bp.post("/releases/<name>/<any(retract,delete,retry):action>")
def act(name, action):
    """Retract, delete or retry; a refusal (a used release cannot be deleted, say) is shown on the release's page."""
    release = release_service.get_release(name)
    do = {"retract": release_service.retract_release, "delete": release_service.delete_release,
          "retry": release_service.retry_prepare}[action]
    try:
        do(g.user, release)
    except Conflict as exc:
        flash(exc.description)
        return redirect(url_for("releases.detail", name=name))
    if action == "delete":
        flash(f"Release {name} deleted.")
        return redirect(url_for("releases.index"))
    return redirect(url_for("releases.detail", name=name))


def _int(name, default):
    try:
        return int(request.form.get(name) or default)
    except ValueError:
        return -1  # the service names the field


@bp.post("/rollouts")
def plan_rollout():
    require_operator(g.user)
    values = dict(request.form)
    release = db.session.execute(db.select(Release).filter_by(name=values.get("release", ""))).scalar_one_or_none()
    kind, value = values.get("target_kind", "channel"), values.get("target_value", "").strip()
    target = {kind: [v.strip() for v in value.replace(",", " ").split()] if kind == "hubs" else value}
    try:
        if release is None:
            raise FieldErrors({"release": "Choose a release."})
        rollout = release_service.create_rollout(
            g.user, release, target, max_unavailable=_int("max_unavailable", 1), gate_seconds=_int("gate_seconds", 30),
            waves=_int("waves", 4), synthetic_check=bool(values.get("synthetic_check")))
    except FieldErrors as exc:
        return _page(rollout_errors=exc.errors, rollout_values=values, status=422)
    return redirect(url_for("releases.rollout", rollout_id=rollout.id))


# Ids beyond 64 bits are simply not found (the database cannot hold them).
ROLLOUT_ID = "<int(max=9223372036854775807):rollout_id>"


@bp.get(f"/rollouts/{ROLLOUT_ID}")
def rollout(rollout_id):
    found = scope.get_rollout(g.user, rollout_id)
    waves = {}
    for item in found.hubs:
        waves.setdefault(item.wave, []).append(item)
    return htmx.render("releases/rollout.html", "releases/_rollout.html", rollout=found, waves=waves)


@bp.post(f"/rollouts/{ROLLOUT_ID}/<any(start,pause,resume,abort):action>")
def control(rollout_id, action):
    """A control the rollout's state refuses is shown on its page with the reason."""
    try:
        release_service.control(g.user, scope.get_rollout(g.user, rollout_id), action)
    except Conflict as exc:
        flash(exc.description)
    return redirect(url_for("releases.rollout", rollout_id=rollout_id))


@bp.post(f"/rollouts/{ROLLOUT_ID}/hubs/<slug>/<any(retry,skip):action>")
def hub_action(rollout_id, slug, action):
    """Retry or skip one hub of a rollout; a refusal is shown on the rollout's page with the reason."""
    try:
        release_service.hub_action(g.user, scope.get_rollout(g.user, rollout_id), slug, action)
    except Conflict as exc:
        flash(exc.description)
    return redirect(url_for("releases.rollout", rollout_id=rollout_id))


@bp.post("/institutions/<slug>/blackouts")
def blackouts(slug):
    institution = scope.get_institution(g.user, slug)
    windows = []
    for line in request.form.get("blackouts", "").splitlines():
        if line.strip():
            parts = [p.strip() for p in line.split("|")]
            windows.append({"start": parts[0], "end": parts[1] if len(parts) > 1 else "",
                            "reason": parts[2] if len(parts) > 2 else ""})
    try:
        release_service.set_blackouts(g.user, institution, windows)
    except FieldErrors as exc:
        flash("Blackout windows not saved: " + "; ".join(f"line {k.split('.')[1]}: {v}" if "." in k else v
                                                         for k, v in exc.errors.items()))
    return redirect(url_for("institutions.detail", slug=slug))
