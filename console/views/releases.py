from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.exceptions import Conflict

from console import htmx
from console.extensions import db
from console.models import Release
from console.permissions import requires
from console.services import FieldErrors, operations, scope
from console.services import institutions as institution_service
from console.services import releases as release_service
from console.views import institutions as institution_views

bp = Blueprint("releases", __name__)


def _page(errors=None, values=None, rollout_errors=None, rollout_values=None, status=200):
    return render_template(
        "releases/index.html",
        releases=db.session.execute(scope.releases(g.user)).scalars().all(),
        rollouts=db.session.execute(scope.rollouts(g.user).limit(20)).unique().scalars().all(),
        institutions=db.session.execute(scope.institutions(g.user)).scalars().all(),
        errors=errors or {}, values=values or {}, rollout_errors=rollout_errors or {},
        rollout_values=rollout_values or {}), status


@bp.get("/releases")
@requires("release.manage")
def index():
    return _page()


@bp.post("/releases")
@requires("release.manage")
def create():
    values = {k: request.form.get(k, "") for k in ("name", "jupyterhub_version", "channel", "chart_version",
                                                   "hub_image", "notes")}
    try:
        release = release_service.create_release(g.user, values)
    except FieldErrors as exc:
        return _page(errors=exc.errors, values=values, status=422)
    flash(f"Release {release.name} published: it is offered to hubs once its preparation below succeeds."
          if release.state != "ready" else f"Release {release.name} published and ready.")
    return redirect(url_for("releases.detail", name=release.name))  # its preparation, live


@bp.get("/releases/<name>")
@requires("release.manage")
def detail(name):
    release = scope.get_release(g.user, name, "release.manage")
    op = release_service.prepare_operation(release)
    return render_template("releases/detail.html", release=release, op=op,
                           lines=operations.log_lines(op) if op else [], usage=release_service.usage(release))


@bp.post("/releases/<name>/<any(retract,delete,retry):action>")
@requires("release.manage")
def act(name, action):
    """Retract, delete or retry; a refusal (a used release cannot be deleted, say) is shown on the release's page."""
    release = scope.get_release(g.user, name, "release.manage")
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
@requires("rollout.manage")
def plan_rollout():
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


# Ids beyond what the database holds are simply not found (console/limits.py bounds every <int:...>).
ROLLOUT_ID = "<int:rollout_id>"


@bp.get(f"/rollouts/{ROLLOUT_ID}")
@requires("rollout.view")
def rollout(rollout_id):
    found = scope.get_rollout(g.user, rollout_id)
    waves = {}
    for item in found.hubs:
        waves.setdefault(item.wave, []).append(item)
    return htmx.render("releases/rollout.html", "releases/_rollout.html", rollout=found, waves=waves)


@bp.post(f"/rollouts/{ROLLOUT_ID}/<any(start,pause,resume,abort):action>")
@requires("rollout.manage")
def control(rollout_id, action):
    """A control the rollout's state refuses is shown on its page with the reason."""
    try:
        release_service.control(g.user, scope.get_rollout(g.user, rollout_id, "rollout.manage"), action)
    except Conflict as exc:
        flash(exc.description)
    return redirect(url_for("releases.rollout", rollout_id=rollout_id))


@bp.post(f"/rollouts/{ROLLOUT_ID}/hubs/<slug>/<any(retry,skip):action>")
@requires("rollout.manage")
def hub_action(rollout_id, slug, action):
    """Retry or skip one hub of a rollout; a refusal is shown on the rollout's page with the reason."""
    try:
        release_service.hub_action(g.user, scope.get_rollout(g.user, rollout_id, "rollout.manage"), slug, action)
    except Conflict as exc:
        flash(exc.description)
    return redirect(url_for("releases.rollout", rollout_id=rollout_id))


@bp.post("/institutions/<slug>/blackouts")
@requires("blackout.set")
def blackouts(slug):
    """Save the blackout windows typed one per line; on an error the institution's page comes back with the text as
    typed and each error on the line (counted from 1, blank lines included) it is about."""
    institution = scope.get_institution(g.user, slug, "blackout.set")
    text = request.form.get("blackouts", "")
    windows, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            parts = [p.strip() for p in line.split("|")]
            windows.append({"start": parts[0], "end": parts[1] if len(parts) > 1 else "",
                            "reason": parts[2] if len(parts) > 2 else ""})
            lines.append(number)
    try:
        institution_service.set_blackouts(g.user, institution, windows)
    except FieldErrors as exc:
        return institution_views.detail_page(institution, blackouts_text=text,
                                             blackout_errors=_by_line(exc.errors, lines), status=422)
    flash(f"Blackout windows saved: {len(windows)} window{'' if len(windows) == 1 else 's'}." if windows
          else "Blackout windows saved: none, rollouts may reach these hubs at any time.")
    return redirect(url_for("institutions.detail", slug=slug))


def _by_line(errors: dict[str, str], lines: list[int]) -> list[str]:
    """The service's errors ("blackouts.<window>[.<field>]") as sentences naming the typed line they are about."""
    said = []
    for key, message in errors.items():
        parts = key.split(".")
        if len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < len(lines):
            said.append(f"Line {lines[int(parts[1])]}: {message}")
        else:
            said.append(message)
    return said
