from flask import Blueprint, Response, flash, g, redirect, render_template, request, url_for
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import gc_collector, platform_collector, process_collector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from console import htmx
from console.extensions import db
from console.permissions import requires
from console.services import FieldErrors, scope
from console.services import hubs as hub_service
from console.services import webhooks

bp = Blueprint("monitoring", __name__)


# (name, help, the hub's value): the fleet's gauges in /metrics, labelled by hub, institution and cluster
_HUB_GAUGES = (
    ("hubfleet_hub_up", "1 if the hub answered its last probes, else 0",
     lambda hub: 1 if hub.health in ("healthy", "degraded") else 0),
    ("hubfleet_hub_running_servers", "Running user servers", lambda hub: hub.running_servers),
    ("hubfleet_hub_active_users", "Users active in the last 24 hours", lambda hub: hub.active_users),
    ("hubfleet_hub_users", "Users known to the hub", lambda hub: hub.user_count),
    ("hubfleet_hub_probe_duration_seconds", "How long the last probe took", lambda hub: hub.probe_seconds),
)


class _Collected:
    """The metric families of one scrape, for its registry to expose: values that live in the database belong in a
    custom collector, not in Gauge objects kept between scrapes."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


@bp.get("/metrics")
@requires("fleet.export")
def metrics():
    """Prometheus exposition of the fleet (bearer token of an operator) plus this process's own metrics."""
    registry = CollectorRegistry()
    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    families = [(GaugeMetricFamily(name, text, labels=["hub", "institution", "cluster"]), value)
                for name, text, value in _HUB_GAUGES]
    for hub in hub_service.gauges(g.user):
        labels = [hub.slug, hub.institution, hub.cluster]
        for family, value in families:
            if (number := value(hub)) is not None:
                family.add_metric(labels, number)
    registry.register(_Collected([family for family, _ in families]))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _alerts_page(errors: dict, values, status: int = 200):
    return htmx.render("monitoring/alerts.html", "monitoring/_alerts.html", status,
                       alerts=db.session.execute(scope.alerts(g.user).limit(200)).unique().scalars().all(),
                       targets=db.session.execute(scope.webhooks(g.user)).unique().scalars().all(),
                       institutions=db.session.execute(scope.institutions(g.user)).scalars().all(),
                       errors=errors, values=values)


@bp.get("/alerts")
@requires("alert.view")
def alerts():
    """Alerts of the hubs the user sees, and the webhooks they go to."""
    return _alerts_page({}, {})


def _webhook_page(target, secret: str = "", errors: dict | None = None, values=None, status: int = 200):
    # A page showing a new secret is not kept by the browser or a proxy.
    return render_template("monitoring/webhook.html", target=target, secret=secret, errors=errors or {},
                           values=values or {}), status, {"Cache-Control": "no-store"}


@bp.post("/alerts/webhooks")
@requires("webhook.add")
def add_webhook():
    """Add a webhook; the page that answers shows its signing secret, once."""
    slug = request.form.get("institution", "")
    institution = scope.get_institution(g.user, slug, "webhook.add") if slug else None
    try:
        target, secret = webhooks.add(g.user, request.form.get("url"), institution)
    except FieldErrors as exc:
        return _alerts_page(exc.errors, request.form, 422)
    return _webhook_page(target, secret, status=201)


@bp.get("/alerts/webhooks/<int:webhook_id>")
@requires("webhook.add")
def webhook(webhook_id):
    """One webhook: change its URL, test it, give it a new secret, delete it."""
    return _webhook_page(scope.get_webhook(g.user, webhook_id, "webhook.add"))


@bp.post("/alerts/webhooks/<int:webhook_id>")
@requires("webhook.add")
def edit_webhook(webhook_id):
    target = scope.get_webhook(g.user, webhook_id, "webhook.add")
    try:
        webhooks.edit(g.user, target, request.form.get("url"))
    except FieldErrors as exc:
        return _webhook_page(target, errors=exc.errors, values=request.form, status=422)
    flash(f"The webhook now goes to {target.origin}.")
    return redirect(url_for("monitoring.webhook", webhook_id=target.id))


@bp.post("/alerts/webhooks/<int:webhook_id>/test")
@requires("webhook.add")
def test_webhook(webhook_id):
    target = scope.get_webhook(g.user, webhook_id, "webhook.add")
    flash("The test notice was delivered." if webhooks.send_test(g.user, target) else webhooks.FAILED)
    return redirect(url_for("monitoring.webhook", webhook_id=target.id))


@bp.post("/alerts/webhooks/<int:webhook_id>/secret")
@requires("webhook.add")
def renew_webhook_secret(webhook_id):
    target = scope.get_webhook(g.user, webhook_id, "webhook.add")
    return _webhook_page(target, webhooks.renew_secret(g.user, target))


@bp.post("/alerts/webhooks/<int:webhook_id>/delete")
@requires("webhook.add")
def delete_webhook(webhook_id):
    target = scope.get_webhook(g.user, webhook_id, "webhook.add")
    origin = target.origin
    webhooks.delete(g.user, target)
    flash(f"The webhook to {origin} was deleted.")
    return redirect(url_for("monitoring.alerts"))
