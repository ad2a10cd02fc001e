"""Cluster pages: the list, the provisioning wizard, plan review, registration, onboarding checks, destruction."""
import re

from clusters import local
from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from infra.providers import PROVIDERS
from werkzeug.exceptions import Conflict, NotFound

from console import htmx
from console.extensions import db
from console.lifecycles import BUSY_CLUSTER_STATES, CLUSTER
from console.models import Operation
from console.permissions import requires
from console.services import FieldErrors, history, scope
from console.services import clusters as cluster_service
from console.services import slurm_clusters
from console.views.fleet import gone

bp = Blueprint("clusters", __name__)
bp.add_app_template_global(local.isolation, "local_isolation")

# A shell command a check's fix ends with: the whole fix, or what follows its first ": ".
_COMMAND = re.compile(r"(?:^|:\s+)((?:flux|kubectl|helm|gcloud|az|aws|eksctl)\s.*)$", re.S)


@bp.app_template_global("fix_parts")
def fix_parts(fix: str) -> tuple[str, str]:
    """(prose, command) of an onboarding check's fix, so a page shows the command apart, in monospace, ready to
    copy: "mark one default: kubectl patch ..." gives ("mark one default", "kubectl patch ...").  Pure."""
    found = _COMMAND.search(fix or "")
    if not found:
        return fix or "", ""
    return fix[:found.start()].strip(), found.group(1).strip()


def _form_values(provider):
    fields = [f.name for f in provider.fields] if provider else []
    values = {k: request.form.get(k, "") for k in fields}
    for f in provider.fields if provider else ():
        if f.kind == "bool":
            values[f.name] = request.form.get(f.name, "off")
    credentials = {c.name: request.form.get(c.name, "") for c in provider.credentials} if provider else {}
    return values, credentials


@bp.get("/clusters")
@requires("cluster.view")
def index():
    rows = db.session.execute(scope.clusters(g.user).order_by("name")).scalars().all()
    return render_template("clusters/index.html", clusters=rows, providers=PROVIDERS)


def _wizard(provider_name, values, errors, status=200):
    return render_template("clusters/new.html", providers=PROVIDERS, provider=PROVIDERS.get(provider_name),
                           provider_name=provider_name, values=values, errors=errors), status


@bp.route("/clusters/new", methods=["GET", "POST"])
@requires("cluster.manage")
def new():
    provider_name = request.values.get("provider", "local")
    provider = PROVIDERS.get(provider_name)
    if request.method == "GET" or request.form.get("action") == "switch":
        defaults = cluster_service.wizard_defaults(provider_name)
        return _wizard(provider_name, {**defaults, **{k: v for k, v in request.form.items() if k in defaults}}, {})
    values, credentials = _form_values(provider)
    try:
        op = cluster_service.provision(g.user, provider_name, values, credentials)
    except FieldErrors as exc:
        return _wizard(provider_name, values, exc.errors, 422)
    return redirect(url_for("clusters.detail", name=op.cluster.name))


@bp.get("/clusters/<name>")
@requires("cluster.view")
def detail(name):
    try:
        cluster = scope.get_cluster(g.user, name)
    except NotFound:
        destroyed = history.destroyed_cluster(g.user, name)
        if destroyed is None:
            raise
        return gone(destroyed, url_for("clusters.index"), "Back to the clusters")
    return _detail(cluster)


def _detail(cluster):
    """The cluster's page, or its status fragment for htmx (which polls it while the cluster is busy)."""
    ops = db.session.execute(db.select(Operation).where(Operation.cluster_id == cluster.id)
                             .order_by(Operation.id.desc()).limit(10)).unique().scalars().all()
    busy = cluster.state in BUSY_CLUSTER_STATES
    # What a person may ask for now, from the cluster's lifecycle: the page offers nothing it would refuse.
    may = {event: cluster_service.may(cluster, event) for event in ("plan", "apply", "destroy", "destroyed",
                                                                    "check")}
    return htmx.render("clusters/detail.html", "clusters/_status.html", refresh_page=not busy, cluster=cluster,
                       operations=ops, busy=busy, may=may, hint=CLUSTER.states[cluster.state].hint,
                       current=ops[0] if ops else None, provider=PROVIDERS.get(cluster.provider),
                       hubs=cluster_service.live_hubs_on(cluster))


@bp.post("/clusters/<name>/check")
@requires("cluster.manage")
def check(name):
    """Check a Kubernetes cluster again.  From htmx the answer is the status fragment, which follows the check;
    a refusal (not Kubernetes, being destroyed) is said on the cluster's page."""
    cluster = scope.get_cluster(g.user, name, "cluster.manage")
    try:
        cluster_service.check(g.user, cluster)
    except Conflict as exc:
        flash(exc.description)
        return redirect(url_for("clusters.detail", name=name))
    if htmx.wants_fragment():
        return _detail(cluster)
    return redirect(url_for("clusters.detail", name=name))


@bp.post("/clusters/<name>/plan")
@requires("cluster.manage")
def plan(name):
    cluster = scope.get_cluster(g.user, name, "cluster.manage")
    provider = PROVIDERS.get(cluster.provider)
    values, credentials = _form_values(provider)
    try:
        cluster_service.replan(g.user, cluster, values, credentials)
    except FieldErrors as exc:
        return render_template("clusters/edit.html", cluster=cluster, provider=provider, values=values,
                               errors=exc.errors), 422
    return redirect(url_for("clusters.detail", name=name))


@bp.get("/clusters/<name>/edit")
@requires("cluster.manage")
def edit(name):
    cluster = scope.get_cluster(g.user, name, "cluster.manage")
    return render_template("clusters/edit.html", cluster=cluster, provider=PROVIDERS.get(cluster.provider),
                           values=cluster.variables, errors={})


@bp.post("/clusters/<name>/apply")
@requires("cluster.manage")
def apply(name):
    op = cluster_service.approve(g.user, scope.get_cluster(g.user, name, "cluster.manage"))
    return redirect(url_for("fleet.operation", operation_id=op.id))


@bp.route("/clusters/<name>/destroy", methods=["GET", "POST"])
@requires("cluster.manage")
def destroy(name):
    cluster = scope.get_cluster(g.user, name, "cluster.manage")
    hubs = cluster_service.live_hubs_on(cluster)
    if request.method == "GET":
        return render_template("clusters/destroy.html", cluster=cluster, hubs=hubs, errors={})
    try:
        op = cluster_service.destroy(g.user, cluster, request.form.get("confirm"))
    except FieldErrors as exc:
        return render_template("clusters/destroy.html", cluster=cluster, hubs=hubs, errors=exc.errors), 422
    except Conflict as exc:
        return render_template("clusters/destroy.html", cluster=cluster, hubs=hubs,
                               errors={"confirm": exc.description}), 409
    return redirect(url_for("fleet.operation", operation_id=op.id) if op else url_for("clusters.index"))


@bp.route("/clusters/register", methods=["GET", "POST"])
@requires("cluster.manage")
def register():
    values = {"name": request.form.get("name", "")}
    if request.method == "GET":
        return render_template("clusters/register.html", values=values, errors={})
    upload = request.files.get("kubeconfig_file")
    text = upload.read().decode("utf-8", "replace") if upload and upload.filename else request.form.get(
        "kubeconfig", "")
    try:
        cluster = cluster_service.register_kubernetes(g.user, values["name"], text)
    except FieldErrors as exc:
        return render_template("clusters/register.html", values=values, errors=exc.errors), 422
    return redirect(url_for("clusters.detail", name=cluster.name))


SLURM_FIELDS = ("name", "slurm_conf", "partitions", "qos", "root", "homes", "port_first", "port_last", "ip",
                "server_ip")


@bp.route("/clusters/register-slurm", methods=["GET", "POST"])
@requires("cluster.manage")
def register_slurm():
    """Register a Slurm cluster reached from this host; its page then follows the onboarding check."""
    values = {key: request.form.get(key, "") for key in SLURM_FIELDS}
    if request.method == "GET":
        return render_template("clusters/register_slurm.html", values=values, errors={})
    raw = {**values, "partitions": slurm_clusters.parse_partition_lines(values["partitions"])}
    try:
        cluster = slurm_clusters.register_slurm(g.user, raw)
    except FieldErrors as exc:
        return render_template("clusters/register_slurm.html", values=values, errors=exc.errors), 422
    return redirect(url_for("clusters.detail", name=cluster.name))
