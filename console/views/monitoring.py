from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client import gc_collector, platform_collector, process_collector
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from console import htmx
from console.extensions import db
from console.models import Alert, Hub, WebhookTarget
from console.security import require_operator
from console.services import FieldErrors, scope
from console.services import hubs as hub_service
from console.services import monitoring

bp = Blueprint("monitoring", __name__)


@bp.get("/metrics")
def metrics():
    """Prometheus exposition of the fleet (bearer token of an operator) plus this process's own metrics."""
    require_operator(g.user)
    registry = CollectorRegistry()
    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    labels = ["hub", "institution", "cluster"]
    up = Gauge("hubfleet_hub_up", "1 if the hub answered its last probes, else 0", labels, registry=registry)
    servers = Gauge("hubfleet_hub_running_servers", "Running user servers", labels, registry=registry)
    active = Gauge("hubfleet_hub_active_users", "Users active in the last 24 hours", labels, registry=registry)
    users = Gauge("hubfleet_hub_users", "Users known to the hub", labels, registry=registry)
    probe = Gauge("hubfleet_hub_probe_duration_seconds", "How long the last probe took", labels, registry=registry)
    for hub in hub_service.list_hubs(g.user):
        values = (hub.slug, hub.institution.slug, hub.cluster.name)
        up.labels(*values).set(1 if hub.health in ("healthy", "degraded") else 0)
        for gauge, value in ((servers, hub.running_servers), (active, hub.active_users),
                             (users, hub.user_count), (probe, hub.probe_seconds)):
            if value is not None:
                gauge.labels(*values).set(value)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/alerts")
def alerts():
    query = db.select(Alert).join(Alert.hub).order_by(Alert.id.desc()).limit(200)
    if not g.user.is_operator:
        query = query.where(Hub.institution_id == g.user.institution_id)
    targets = db.select(WebhookTarget).order_by(WebhookTarget.id)
    if not g.user.is_operator:
        targets = targets.where(WebhookTarget.institution_id == g.user.institution_id)
    return htmx.render("monitoring/alerts.html", "monitoring/_alerts.html",
                       alerts=db.session.execute(query).unique().scalars().all(),
                       targets=db.session.execute(targets).unique().scalars().all(),
                       institutions=db.session.execute(scope.institutions(g.user)).scalars().all(),
                       errors={}, values={})


@bp.post("/alerts/webhooks")
def add_webhook():
    slug = request.form.get("institution", "")
    institution = scope.get_institution(g.user, slug) if slug else None
    try:
        monitoring.add_webhook(g.user, request.form.get("url"), institution)
    except FieldErrors as exc:
        return render_template(
            "monitoring/alerts.html", alerts=[], targets=[], errors=exc.errors, values=request.form,
            institutions=db.session.execute(scope.institutions(g.user)).scalars().all()), 422
    return redirect(url_for("monitoring.alerts"))
