"""The JSON API under /api/v1: the same service functions as the pages, bearer tokens only."""
from flask import current_app, g, jsonify
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from console.errors import shown
from console.extensions import db
from console.models import OPERATION_STATES, OUTCOMES, Cluster, Institution, Release
from console.permissions import actor_label, can, requires
from console.services import clusters as cluster_service
from console.services import config as config_service
from console.services import FieldErrors, identities, scope
from console.services import releases as release_service
from console.services import hubs as hub_service
from console.services import institutions as institution_service
from console.services import operations as operation_service
from console.services import tokens as token_service
from console.services import troubleshooting
from console.services import slurm_view
from console.services import slurm_clusters
from console.services import usage as usage_service
from console.status import hub_status

blp = Blueprint("api", __name__, url_prefix="/api/v1", description="Hubs and their operations")


def _hub_status(hub) -> dict:
    # A list fetches every hub's current operation in one query first (g.current_operations); one hub asks alone.
    known = g.get("current_operations")
    op = known.get(hub.id) if known is not None else operation_service.current_by_hub([hub.id]).get(hub.id)
    found = hub_status(hub, op, max_restarts=int(current_app.config["MAX_RESTARTS"]))
    return {"label": found.label, "reason": shown(found.reason), "key": found.key}


class HubSchema(Schema):
    slug = fields.String()
    institution = fields.String(attribute="institution.slug")
    cluster = fields.String(attribute="cluster.name")
    state = fields.String()
    health = fields.String()
    jupyterhub_version = fields.String(allow_none=True)
    url = fields.String(allow_none=True)
    user_count = fields.Integer(allow_none=True)
    status_message = fields.Function(lambda hub: shown(hub.status_message), metadata={"type": "string"})
    observed_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    release = fields.String(attribute="release.name", allow_none=True)
    channel = fields.String()
    pinned = fields.Boolean()
    canary = fields.Boolean()
    status = fields.Function(_hub_status, metadata={
        "type": "object", "description": 'the one status a person reads, with why: {"label": "Down", "reason": '
                                         '"no answer to 3 probes in a row since 13:17:02 UTC", "key": "down"}'})


class HubReleasePolicySchema(Schema):
    channel = fields.String(validate=validate.OneOf(("stable", "beta")))
    pinned = fields.Boolean()
    canary = fields.Boolean()


class HubCreateSchema(Schema):
    slug = fields.String(required=True, metadata={"description": hub_service.SLUG_RULE})
    institution = fields.String(required=True, metadata={"description": "the institution's slug"})
    cluster = fields.String(required=True, metadata={"description": "the cluster's name"})


class DryRunQuerySchema(Schema):
    dry_run = fields.Boolean(load_default=False, metadata={
        "description": "validate and answer 200 with what the hub would get, creating nothing"})


class HubDryRunSchema(Schema):
    slug = fields.String()
    institution = fields.String()
    cluster = fields.String()
    backend = fields.String()
    objects = fields.List(fields.Dict(), metadata={
        "description": "Kubernetes clusters: every object the backend would apply, in order, secret values masked"})
    config = fields.Dict(metadata={"description": "other backends: the rendered configuration, secrets masked"})


class ManifestsSchema(Schema):
    hub = fields.String()
    objects = fields.List(fields.Dict(), metadata={"description": "in apply order; secret values masked"})


class AcceptedSchema(Schema):
    operation = fields.Integer(metadata={"description": "poll GET /api/v1/operations/{id}"})


class FirstAdminSchema(Schema):
    username = fields.String()
    password = fields.String()


class HubCreatedSchema(AcceptedSchema):
    first_admin = fields.Nested(FirstAdminSchema, allow_none=True, metadata={
        "description": "the hub's login until its institution configures one; shown only here, only once"})


class OperationSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    hub = fields.String(attribute="hub.slug", allow_none=True)
    cluster = fields.String(attribute="cluster.name", allow_none=True)
    release = fields.String(attribute="release.name", allow_none=True)
    actor = fields.Function(lambda op: actor_label(g.user, op.actor), metadata={
        "type": "string", "description": "who asked for it (an operator's email only to operators)"})
    state = fields.String(validate=validate.OneOf(OPERATION_STATES))
    outcome = fields.String(allow_none=True, validate=validate.OneOf(OUTCOMES),
                            metadata={"description": "how a finished operation ended; null until then"})
    note = fields.Function(lambda op: shown(op.note), metadata={
        "type": "string", "description": "what a waiting or running operation is waiting for"})
    run_after = fields.DateTime(allow_none=True, metadata={"description": "when a waiting operation is looked at"})
    error = fields.Function(lambda op: shown(op.error), metadata={"type": "string"})
    attempts = fields.Integer()
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    log = fields.Function(lambda op: [shown(entry.line) for entry in op.lines], metadata={"type": "array"})


@blp.route("/hubs")
class Hubs(MethodView):
    @requires("hub.view")
    @blp.response(200, HubSchema(many=True))
    def get(self):
        """List the hubs you may see."""
        hubs = hub_service.list_hubs(g.user)
        g.current_operations = operation_service.current_by_hub([hub.id for hub in hubs])
        return hubs

    @requires("hub.create")
    @blp.arguments(HubCreateSchema)
    @blp.arguments(DryRunQuerySchema, location="query")
    @blp.response(202, HubCreatedSchema)
    @blp.alt_response(200, schema=HubDryRunSchema, description="?dry_run=true: what the hub would get")
    def post(self, data, query):
        """Create a hub (operators). Returns the operation that brings it up and, while the institution has no
        login configured, the hub's first admin credential (never shown again).  With ``?dry_run=true``: validated
        the same way (422 alike), then 200 with the objects the hub would get (Kubernetes) or its rendered config,
        creating nothing and contacting no cluster."""
        if query["dry_run"]:
            return jsonify(HubDryRunSchema().dump(hub_service.dry_run(g.user, **data)))
        op = hub_service.create_hub(g.user, **data)
        admin = dict(zip(("username", "password"), op.first_admin)) if op.first_admin else None
        return {"operation": op.id, "first_admin": admin}


@blp.route("/hubs/<slug>")
class HubItem(MethodView):
    @requires("hub.view")
    @blp.response(200, HubSchema)
    def get(self, slug):
        """One hub."""
        return scope.get_hub(g.user, slug)

    @requires("hub.upgrade")
    @blp.arguments(HubReleasePolicySchema)
    @blp.response(200, HubSchema)
    def patch(self, data, slug):
        """Set the channel a hub follows, pin it to its release, or mark it a canary (operators)."""
        return hub_service.set_release_policy(g.user, scope.get_hub(g.user, slug, "hub.upgrade"), **data)

    @requires("hub.delete")
    @blp.response(202, AcceptedSchema)
    def delete(self, slug):
        """Delete a hub (operators). Returns the operation that removes it."""
        return {"operation": hub_service.delete_hub(g.user, scope.get_hub(g.user, slug, "hub.delete")).id}


@blp.route("/hubs/<slug>/restart")
class HubRestart(MethodView):
    @requires("hub.restart")
    @blp.response(202, AcceptedSchema)
    def post(self, slug):
        """Restart a hub."""
        return {"operation": hub_service.restart_hub(g.user, scope.get_hub(g.user, slug, "hub.restart")).id}


@blp.route("/hubs/<slug>/check")
class HubCheck(MethodView):
    @requires("hub.restart")
    @blp.response(202, AcceptedSchema)
    def post(self, slug):
        """Run a synthetic check: a test user's server is started and stopped; timings in the operation's log."""
        return {"operation": hub_service.check_hub(g.user, scope.get_hub(g.user, slug, "hub.restart")).id}


@blp.route("/hubs/<slug>/manifests")
class HubManifests(MethodView):
    @requires("hub.manifests")
    @blp.response(200, ManifestsSchema)
    def get(self, slug):
        """Every object the backend applies for a hub on Kubernetes, in order, secret values masked; computed
        without contacting the cluster (operators).  409 for a hub on another backend."""
        hub = scope.get_hub(g.user, slug, "hub.manifests")
        return {"hub": hub.slug, "objects": hub_service.manifests(g.user, hub)}


@blp.route("/operations/<int:operation_id>")
class OperationItem(MethodView):
    @requires("hub.view")
    @blp.response(200, OperationSchema)
    def get(self, operation_id):
        """An operation, with its log."""
        return scope.get_operation(g.user, operation_id)


class InstitutionSchema(Schema):
    slug = fields.String()
    name = fields.String()
    config_updated_at = fields.DateTime(allow_none=True)


class ConfigSchema(Schema):
    auth = fields.Dict(required=True, metadata={"description": "authenticator_class and its fields; secrets are "
                                                               "write-only (blank or absent keeps the stored one)"})
    environment = fields.Dict(required=True)


class ConfigOutSchema(Schema):
    auth = fields.Dict()
    environment = fields.Dict()
    secrets_set = fields.List(fields.String(), metadata={"description": "names of stored secrets, never values"})
    rollout = fields.Integer(allow_none=True, metadata={
        "description": "PUT: the config rollout taking the change hub by hub (GET /rollouts/ID); the stored config "
                       "above changes when it is done. None: no live hub, adopted at once"})


class PolicySchema(Schema):
    max_cpu = fields.Raw()
    max_memory = fields.Raw()
    allowed_registries = fields.Raw()
    gpus_allowed = fields.Raw()
    open_login_allowed = fields.Raw(metadata={"description": "allow JupyterHub's dummy login (demo hubs only)"})
    max_storage = fields.Raw()
    max_users = fields.Raw()


class RenderedQuerySchema(Schema):
    target = fields.String(load_default="local", validate=validate.OneOf(("local", "z2jh")))


class RenderedSchema(Schema):
    hub = fields.String()
    target = fields.String()
    config = fields.Dict(metadata={"description": "secrets masked"})


def _config_out(institution, rollout=None):
    current = config_service.current_config(institution)
    return {**current, "secrets_set": config_service.secrets_set(institution),
            "rollout": rollout.id if rollout else None}


@blp.route("/institutions")
class Institutions(MethodView):
    @requires("institution.view")
    @blp.response(200, InstitutionSchema(many=True))
    def get(self):
        """The institutions you may see."""
        return db.session.execute(scope.institutions(g.user).order_by(Institution.slug)).scalars().all()


@blp.route("/institutions/<slug>/config")
class InstitutionConfig(MethodView):
    @requires("config.view")
    @blp.response(200, ConfigOutSchema)
    def get(self, slug):
        """The institution's login and environment (secrets are never returned)."""
        return _config_out(scope.get_institution(g.user, slug, "config.view"))

    @requires("config.edit")
    @blp.arguments(ConfigSchema)
    @blp.response(200, ConfigOutSchema)
    def put(self, data, slug):
        """Validate and roll the change out hub by hub (one hub first; halts, and puts that hub back, at the first
        failure). 422 with field errors changes nothing; 409 while another config change rolls out."""
        institution = scope.get_institution(g.user, slug, "config.edit")
        rollout = config_service.apply(g.user, institution, data["auth"], data["environment"])
        return _config_out(institution, rollout)


@blp.route("/institutions/<slug>/policy")
class InstitutionPolicy(MethodView):
    @requires("config.view")
    @blp.response(200, PolicySchema)
    def get(self, slug):
        """The operator's policy for the institution: the limits its config must keep."""
        return config_service.policy_of(scope.get_institution(g.user, slug, "config.view"))

    @requires("policy.set")
    @blp.arguments(PolicySchema)
    @blp.response(200, PolicySchema)
    def put(self, data, slug):
        """Replace the policy (operators only); missing fields take the defaults."""
        return config_service.set_policy(g.user, scope.get_institution(g.user, slug, "policy.set"), data)


@blp.route("/hubs/<slug>/rendered")
class HubRendered(MethodView):
    @requires("hub.view")
    @blp.arguments(RenderedQuerySchema, location="query")
    @blp.response(200, RenderedSchema)
    def get(self, query, slug):
        """The hub's configuration as its backend gets it, for z2jh or the local backend, secrets masked."""
        hub = scope.get_hub(g.user, slug)
        return {"hub": hub.slug, "target": query["target"], "config": config_service.render(hub, query["target"])}


class ClusterSchema(Schema):
    name = fields.String()
    provider = fields.String(allow_none=True)
    backend = fields.String()
    state = fields.String()
    variables = fields.Dict()
    outputs = fields.Dict(metadata={"description": "non-sensitive Terraform outputs"})
    plan = fields.Dict(allow_none=True, metadata={"description": "the plan awaiting approval"})
    checks = fields.List(fields.Dict(), metadata={
        "description": 'Kubernetes and Slurm onboarding: the last check, [{"name", "ok", "detail", "fix"}]'})
    settings = fields.Dict(metadata={"description": "the backend's settings (slurm: its policy); no secrets"})
    checked_at = fields.DateTime(allow_none=True, metadata={"description": "when it was last checked (null: never)"})
    created_at = fields.DateTime()


class ClusterCreateSchema(Schema):
    provider = fields.String(required=True, metadata={"description": "local, gke, eks or aks"})
    variables = fields.Dict(required=True, metadata={"description": "the wizard's fields"})
    credentials = fields.Dict(load_default=dict, metadata={"description": "write-only"})


class ClusterRegisterSchema(Schema):
    name = fields.String(required=True)
    kubeconfig = fields.String(required=True, metadata={"description": "write-only; stored encrypted"})


class PartitionPolicySchema(Schema):
    name = fields.String(required=True)
    max_time_minutes = fields.Raw(load_default=None, metadata={"description": "null: no limit of ours"})
    max_cpus = fields.Raw(load_default=None)
    max_memory_gb = fields.Raw(load_default=None)
    max_gpus = fields.Raw(load_default=None)


class SlurmRegisterSchema(Schema):
    name = fields.String(required=True)
    slurm_conf = fields.String(required=True, metadata={"description": "absolute path of slurm.conf on this host"})
    partitions = fields.List(fields.Nested(PartitionPolicySchema), required=True, metadata={
        "description": "the partitions hubs may use, the first the default, with the most a server may ask for"})
    qos = fields.List(fields.String(), load_default=list)
    root = fields.String(load_default="", metadata={"description": "hubs directory (default: in the data dir)"})
    homes = fields.String(load_default="", metadata={"description": "home directories (default /home)"})
    port_first = fields.Integer(required=True)
    port_last = fields.Integer(required=True)
    ip = fields.String(load_default="", metadata={"description": "where hubs serve (default LOCAL_HUB_IP)"})
    server_ip = fields.String(load_default="", metadata={
        "description": "where servers listen on their nodes (default 127.0.0.1; 0.0.0.0 on a centre)"})


class ConfirmSchema(Schema):
    confirm = fields.String(required=True, metadata={"description": "the cluster's name"})


@blp.route("/clusters")
class Clusters(MethodView):
    @requires("cluster.view")
    @blp.response(200, ClusterSchema(many=True))
    def get(self):
        """Clusters (operators)."""
        return db.session.execute(scope.clusters(g.user).order_by(Cluster.name)).scalars().all()

    @requires("cluster.manage")
    @blp.arguments(ClusterCreateSchema)
    @blp.response(202, AcceptedSchema)
    def post(self, data):
        """Start provisioning: records the cluster and queues its plan (nothing is created before approval)."""
        op = cluster_service.provision(g.user, data["provider"], data["variables"], data["credentials"])
        return {"operation": op.id}


@blp.route("/clusters/register")
class ClusterRegister(MethodView):
    @requires("cluster.manage")
    @blp.arguments(ClusterRegisterSchema)
    @blp.response(201, ClusterSchema)
    def post(self, data):
        """Register an existing Kubernetes cluster by its kubeconfig."""
        return cluster_service.register_kubernetes(g.user, data["name"], data["kubeconfig"])


@blp.route("/clusters/register/slurm")
class ClusterRegisterSlurm(MethodView):
    @requires("cluster.manage")
    @blp.arguments(SlurmRegisterSchema)
    @blp.response(201, ClusterSchema)
    def post(self, data):
        """Register a Slurm cluster reached from this host (its submit host) and queue its onboarding check; it
        takes hubs once every check passes (``checks``, each failure with its fix)."""
        return slurm_clusters.register_slurm(g.user, data)


@blp.route("/clusters/<name>")
class ClusterItem(MethodView):
    @requires("cluster.view")
    @blp.response(200, ClusterSchema)
    def get(self, name):
        """One cluster."""
        return scope.get_cluster(g.user, name)

    @requires("cluster.manage")
    @blp.arguments(ConfirmSchema, location="query")
    @blp.response(202, AcceptedSchema)
    def delete(self, query, name):
        """Destroy a cluster (refused while hubs run on it); ?confirm=NAME."""
        op = cluster_service.destroy(g.user, scope.get_cluster(g.user, name, "cluster.manage"), query["confirm"])
        return {"operation": op.id if op else None}


@blp.route("/clusters/<name>/plan")
class ClusterPlan(MethodView):
    @requires("cluster.view")
    @blp.response(200, ClusterSchema)
    def get(self, name):
        """The cluster with its plan awaiting approval (``plan.summary``: add, change, destroy addresses)."""
        return scope.get_cluster(g.user, name)


@blp.route("/clusters/<name>/apply")
class ClusterApply(MethodView):
    @requires("cluster.manage")
    @blp.response(202, AcceptedSchema)
    def post(self, name):
        """Approve the reviewed plan: queues its apply."""
        return {"operation": cluster_service.approve(g.user, scope.get_cluster(g.user, name, "cluster.manage")).id}


@blp.route("/clusters/<name>/check")
class ClusterCheck(MethodView):
    @requires("cluster.manage")
    @blp.response(202, AcceptedSchema)
    def post(self, name):
        """Check a Kubernetes cluster again (its onboarding check; the one under way if any): it takes hubs once
        every check passes.  409 for a cluster of another backend or one being provisioned or destroyed."""
        return {"operation": cluster_service.check(g.user, scope.get_cluster(g.user, name, "cluster.manage")).id}


# What a release shows to someone who may see it but not manage releases.
RELEASE_NOTE_FIELDS = ("name", "notes")


class ReleaseSchema(Schema):
    name = fields.String(required=True)
    jupyterhub_version = fields.String(required=True)
    channel = fields.String(load_default="stable")
    chart_version = fields.String(load_default="")
    hub_image = fields.String(load_default="")
    config = fields.Dict(load_default=dict, metadata={"description": '{"environment": {...}, "jupyterhub": {...}}'})
    notes = fields.String(load_default="")
    created_at = fields.DateTime(dump_only=True)
    state = fields.String(dump_only=True, metadata={"description": "preparing, ready, failed or retracted; only a "
                                                                   "ready release is used by new hubs and rollouts"})
    error = fields.String(dump_only=True, metadata={"description": "why preparing failed"})
    retracted_at = fields.DateTime(dump_only=True, allow_none=True)
    operation = fields.Function(lambda r: getattr(release_service.prepare_operation(r), "id", None), dump_only=True,
                                allow_none=True, metadata={"description": "its latest release-prepare operation",
                                                           "type": "integer"})


class RolloutHubSchema(Schema):
    hub = fields.String(attribute="hub.slug")
    wave = fields.Integer()
    state = fields.String(metadata={"description": "pending, deferred, upgrading, upgraded, rolling_back, "
                                                   "rolled_back, failed, skipped"})
    release = fields.String(attribute="hub.release.name", allow_none=True)
    operation = fields.Integer(attribute="operation_id", allow_none=True)
    note = fields.String(metadata={"description": "why it was skipped, deferred, rolled back or failed"})


class RolloutSchema(Schema):
    id = fields.Integer(dump_only=True)
    kind = fields.String(dump_only=True, metadata={"description": "release or config"})
    release = fields.String(attribute="release.name", dump_only=True, allow_none=True,
                            metadata={"description": "null for a config rollout"})
    institution = fields.String(attribute="institution.slug", dump_only=True, allow_none=True)
    target = fields.Dict()
    state = fields.String(dump_only=True)
    current_wave = fields.Integer(dump_only=True)
    max_unavailable = fields.Integer()
    gate_seconds = fields.Integer()
    synthetic_check = fields.Boolean()
    reason = fields.String(dump_only=True)
    hubs = fields.List(fields.Nested(RolloutHubSchema), dump_only=True)


class RolloutCreateSchema(Schema):
    release = fields.String(required=True)
    target = fields.Raw(required=True, metadata={"description": '{"channel": ...}, {"institution": ...} or '
                                                              '{"hubs": [...]}'})
    # Bounds are checked by the service, which names the field: waves 1..20, max_unavailable 1..1000,
    # gate_seconds 0..86400.
    waves = fields.Integer(load_default=4, strict=True)
    max_unavailable = fields.Integer(load_default=1, strict=True)
    gate_seconds = fields.Integer(load_default=30, strict=True)
    synthetic_check = fields.Boolean(load_default=False)
    start = fields.Boolean(load_default=False)


class BlackoutSchema(Schema):
    start = fields.String(required=True)
    end = fields.String(required=True)
    reason = fields.String(load_default="")


def _releases_out(found, many: bool = False):
    """Operators get whole releases; anyone else only names and notes (of the releases they may see)."""
    if can(g.user, "release.manage"):
        return found
    return jsonify(ReleaseSchema(many=many, only=RELEASE_NOTE_FIELDS).dump(found))


@blp.route("/releases")
class Releases(MethodView):
    @requires("release.view")
    @blp.response(200, ReleaseSchema(many=True))
    def get(self):
        """Published releases, newest first (institution admins: name and notes of the releases their hubs run)."""
        return _releases_out(db.session.execute(scope.releases(g.user)).scalars().all(), many=True)

    @requires("release.manage")
    @blp.arguments(ReleaseSchema)
    @blp.response(201, ReleaseSchema)
    def post(self, data):
        """Publish a release (operators).  It is prepared before anything uses it: poll its ``state`` (and
        ``operation``) until "ready" or "failed"."""
        return release_service.create_release(g.user, data)


@blp.route("/releases/<name>")
class ReleaseItem(MethodView):
    @requires("release.view")
    @blp.response(200, ReleaseSchema)
    def get(self, name):
        """A release with its state and preparation error (institution admins: its name and notes)."""
        return _releases_out(scope.get_release(g.user, name))

    @requires("release.manage")
    @blp.response(204)
    def delete(self, name):
        """Delete a release no hub runs or ran and no rollout names (operators); 409 with a sentence otherwise."""
        release_service.delete_release(g.user, scope.get_release(g.user, name, "release.manage"))


@blp.route("/releases/<name>/retract")
class ReleaseRetract(MethodView):
    @requires("release.manage")
    @blp.response(200, ReleaseSchema)
    def post(self, name):
        """Stop offering a ready release to new hubs and rollouts; its hubs keep running it (operators)."""
        return release_service.retract_release(g.user, scope.get_release(g.user, name, "release.manage"))


@blp.route("/releases/<name>/retry")
class ReleaseRetry(MethodView):
    @requires("release.manage")
    @blp.response(202, AcceptedSchema)
    def post(self, name):
        """Prepare a failed release again (operators)."""
        return {"operation": release_service.retry_prepare(g.user, scope.get_release(g.user, name,
                                                                                     "release.manage")).id}


@blp.route("/rollouts")
class Rollouts(MethodView):
    @requires("rollout.view")
    @blp.response(200, RolloutSchema(many=True))
    def get(self):
        """Rollouts, newest first (operators)."""
        return db.session.execute(scope.rollouts(g.user)).unique().scalars().all()

    @requires("rollout.manage")
    @blp.arguments(RolloutCreateSchema)
    @blp.response(201, RolloutSchema)
    def post(self, data):
        """Plan a rollout (and start it with "start": true)."""
        release = db.session.execute(db.select(Release).filter_by(name=data.pop("release"))).scalar_one_or_none()
        if release is None:
            raise FieldErrors({"release": "There is no such release."})
        return release_service.create_rollout(g.user, release, **data)


# Ids beyond what the database holds are simply not found (console/limits.py bounds every <int:...>).
ROLLOUT_ID = "<int:rollout_id>"


@blp.route(f"/rollouts/{ROLLOUT_ID}")
class RolloutItem(MethodView):
    @requires("rollout.view")
    @blp.response(200, RolloutSchema)
    def get(self, rollout_id):
        """A rollout with every hub's state."""
        return scope.get_rollout(g.user, rollout_id)


@blp.route(f"/rollouts/{ROLLOUT_ID}/<any(start,pause,resume,abort):action>")
class RolloutControl(MethodView):
    @requires("rollout.manage")
    @blp.response(200, RolloutSchema)
    def post(self, rollout_id, action):
        """Start, pause, resume or abort; resuming a halted rollout retries the hubs that halted it.  409 with the
        reason when the rollout's state refuses it."""
        return release_service.control(g.user, scope.get_rollout(g.user, rollout_id, "rollout.manage"), action)


@blp.route(f"/rollouts/{ROLLOUT_ID}/hubs/<slug>/<any(retry,skip):action>")
class RolloutHubControl(MethodView):
    @requires("rollout.manage")
    @blp.response(200, RolloutHubSchema)
    def post(self, rollout_id, slug, action):
        """Retry (back to pending) or skip one hub of a rollout that is not over.  409 with the reason when the hub's
        state refuses it."""
        return release_service.hub_action(g.user, scope.get_rollout(g.user, rollout_id, "rollout.manage"), slug,
                                          action)


@blp.route("/institutions/<slug>/blackouts")
class InstitutionBlackouts(MethodView):
    @requires("institution.view")
    @blp.response(200, BlackoutSchema(many=True))
    def get(self, slug):
        """Times the institution's hubs must not be touched (UTC)."""
        return scope.get_institution(g.user, slug).blackouts or []

    @requires("blackout.set")
    @blp.arguments(BlackoutSchema(many=True))
    @blp.response(200, BlackoutSchema(many=True))
    def put(self, windows, slug):
        """Replace the blackout windows."""
        return institution_service.set_blackouts(g.user, scope.get_institution(g.user, slug, "blackout.set"), windows)


# -- API tokens: one's own, like the "API tokens" page -------------------------------------------------------------

class TokenSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    scopes = fields.List(fields.String(), metadata={"description": '"read", "write" or actions such as "hub.view"'})
    created_at = fields.DateTime()
    expires_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True, metadata={"description": "to the minute"})
    revoked_at = fields.DateTime(allow_none=True)
    status = fields.Function(lambda token: token_service.status(token),
                             metadata={"type": "string", "enum": ["active", "expired", "revoked"]})


class TokenCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, token_service.MAX_NAME))
    scopes = fields.List(fields.String(validate=validate.Length(1, 60)), required=True,
                         validate=validate.Length(1, 64),
                         metadata={"description": 'what the token may do: "read", "write" or actions of the permission '
                                                  'table, never more than you (or the token making it) may'})
    expires_days = fields.Integer(load_default=token_service.DEFAULT_DAYS, strict=True,
                                  validate=validate.Range(1, token_service.MAX_DAYS))


class TokenCreatedSchema(TokenSchema):
    token = fields.String(metadata={"description": "the token itself: shown this once, never again"})


@blp.route("/tokens")
class Tokens(MethodView):
    @requires("token.manage")
    @blp.response(200, TokenSchema(many=True))
    def get(self):
        """Your API tokens, newest first (expired and revoked ones too)."""
        return token_service.list_tokens(g.user)

    @requires("token.manage")
    @blp.arguments(TokenCreateSchema)
    @blp.response(201, TokenCreatedSchema)
    def post(self, data):
        """Create a token: its scopes within yours and this token's own."""
        row, token = token_service.create_token(g.user, **data, within=token_service.actions_of(g.token.scopes,
                                                                                              g.user))
        row.token = token  # for this response only: not a column, never stored
        return row


@blp.route("/tokens/<int:token_id>")
class TokenItem(MethodView):
    @requires("token.manage")
    @blp.response(200, TokenSchema)
    def get(self, token_id):
        """One of your tokens (another person's: 404)."""
        return token_service.get_token(g.user, token_id)

    @requires("token.manage")
    @blp.response(204)
    def delete(self, token_id):
        """Revoke one of your tokens: from now on it gets 401."""
        token_service.revoke_token(g.user, token_service.get_token(g.user, token_id))


class IdpSchema(Schema):
    discovery_url = fields.String(required=True, metadata={"description": "the IdP's issuer or discovery URL"})
    client_id = fields.String(required=True)
    client_secret = fields.String(load_only=True, metadata={
        "description": "write-only; omitted or empty keeps the one stored (required the first time)"})
    scopes = fields.String(metadata={"description": 'space-separated, with "openid"; default "openid profile email"'})
    authoritative_domains = fields.List(fields.String(), metadata={
        "description": "email domains this IdP's issuer vouches for (verified emails of these domains may link)"})
    member_claim = fields.String(metadata={"description": 'the claim the member rule reads, e.g. "groups"'})
    member_values = fields.List(fields.String(), metadata={
        "description": "values of member_claim that make a person a member of every hub of the institution; "
                       "empty: everyone the IdP logs in"})


class IdpOutSchema(Schema):
    configured = fields.Boolean()
    issuer = fields.String(allow_none=True)
    discovery_url = fields.String(allow_none=True)
    client_id = fields.String(allow_none=True)
    client_secret_set = fields.Boolean()
    scopes = fields.String(allow_none=True)
    authoritative_domains = fields.List(fields.String())
    member_claim = fields.String(allow_none=True)
    member_values = fields.List(fields.String())


def _idp_out(institution) -> dict:
    found = identities.describe(identities.idp_of(institution))
    return {"configured": True, **found} if found else {"configured": False, "client_secret_set": False,
                                                         "authoritative_domains": [], "member_values": []}


@blp.route("/institutions/<slug>/idp")
class InstitutionIdpView(MethodView):
    @requires("config.view")
    @blp.response(200, IdpOutSchema)
    def get(self, slug):
        """The identity provider the institution's people log into the console with (the secret is never
        returned; ``configured`` false when there is none)."""
        return _idp_out(scope.get_institution(g.user, slug, "config.view"))

    @requires("idp.set")
    @blp.arguments(IdpSchema)
    @blp.response(200, IdpOutSchema)
    def put(self, data, slug):
        """Set or replace it (operators). The discovery document is fetched to learn the issuer; 422 with field
        errors changes nothing."""
        institution = scope.get_institution(g.user, slug, "idp.set")
        identities.configure(g.user, institution, data)
        return _idp_out(institution)

    @requires("idp.set")
    @blp.response(204)
    def delete(self, slug):
        """Remove it (operators); its people keep their accounts and logins. Removing none is no error."""
        identities.remove(g.user, scope.get_institution(g.user, slug, "idp.set"))


class HubLogSchema(Schema):
    lines = fields.List(fields.String(), metadata={
        "description": "the end of the hub's log, oldest first; secret values blanked, and server paths for "
                       "institution admins"})
    reason = fields.String(metadata={"description": "why there are no lines (never deployed, no pod yet, ...)"})
    source = fields.String(metadata={"description": "where the lines were read (operators; empty otherwise)"})


@blp.route("/hubs/<slug>/log")
class HubLogView(MethodView):
    @requires("hub.view")
    @blp.response(200, HubLogSchema)
    def get(self, slug):
        """The end of the hub's own log (its last 200 lines), as the hub page shows it."""
        return troubleshooting.hub_log(g.user, scope.get_hub(g.user, slug, "hub.view"))


# -- a hub's view of its Slurm cluster (console/services/slurm_view.py) ----------------------------------------------

class SlurmViewSchema(Schema):
    hub = fields.String()
    cluster = fields.String()
    read_at = fields.Integer(metadata={"description": "when Slurm was read (Unix time)"})
    error = fields.String(metadata={"description": '"Slurm did not answer: ..." when it did not; "" otherwise'})
    stuck_after_seconds = fields.Integer(metadata={"description": "a job pending longer than this is stuck"})
    nodes = fields.List(fields.Dict(), metadata={"description": (
        "nodes of the cluster's partitions, unusable ones first: name, condition (idle, mixed, allocated, drained, "
        "draining, down...), reason, partitions, cpus, alloc_cpus, usable")})
    node_counts = fields.Dict(metadata={"description": "{condition: nodes}"})
    nodes_left_out = fields.Integer(metadata={"description": "nodes counted but not listed"})
    pending = fields.List(fields.Dict(), metadata={"description": (
        "the hub's jobs waiting: id, user, partition, state, reason (Slurm's), description, explanation (in "
        "words), waited_seconds, ran_seconds, submitted_at, nodes, stuck")})
    running = fields.List(fields.Dict(), metadata={"description": "the hub's running jobs, the same fields"})
    failed = fields.List(fields.Dict(), metadata={"description": (
        "the hub's jobs that ended badly within Slurm's MinJobAge, the same fields (ran_seconds null: never ran)")})
    stuck = fields.List(fields.Integer(), metadata={"description": "ids of the pending jobs that are stuck"})


@blp.route("/hubs/<slug>/slurm")
class HubSlurmView(MethodView):
    @requires("hub.view")
    @blp.response(200, SlurmViewSchema)
    def get(self, slug):
        """The hub's view of its Slurm cluster, read live as the hub page shows it: nodes, the hub's pending jobs
        with their queue wait and reason in words, jobs that failed to start.  409 for a hub not on Slurm."""
        return slurm_view.hub_slurm(g.user, scope.get_hub(g.user, slug, "hub.view"))


# -- usage showback (console/services/usage.py) ----------------------------------------------------------------------

class UsageQuerySchema(Schema):
    month = fields.String(load_default="", metadata={"description": "YYYY-MM, a calendar month in UTC (default: "
                                                                     "this one); anything else: 422"})
    institution = fields.String(load_default="", metadata={"description": "an institution's slug: its hubs only"})


class UsageSchema(Schema):
    month = fields.String()
    from_ = fields.String(data_key="from", attribute="from", metadata={"description": "the month's first moment"})
    until = fields.String(metadata={"description": "the next month's first moment (exclusive)"})
    generated_at = fields.String()
    totals = fields.Dict(metadata={"description": (
        "active_users, server_hours, peak_servers, cpu_hours, gb_hours, estimated_cost ({currency: amount}), "
        "gap_minutes, inexact_sessions for the month, and the same for each day in days")})
    institutions = fields.List(fields.Dict(), metadata={"description": (
        "per institution (slug, name): the same measures and its hubs (slug, cluster, deleted, prices, gaps "
        "[{from, until, open}]), each with the same measures")})


class PricesSchema(Schema):
    currency = fields.Raw(allow_none=True, metadata={
        "description": "a three-letter code (EUR); needed when any price is set"})
    server_hour = fields.Raw(allow_none=True, metadata={"description": "a decimal >= 0, or null/\"\": not priced"})
    cpu_hour = fields.Raw(allow_none=True, metadata={"description": "a decimal >= 0 (Kubernetes: requested CPU cores)"})
    gb_hour = fields.Raw(allow_none=True, metadata={"description": "a decimal >= 0 (Kubernetes: requested memory, GB)"})


@blp.route("/usage")
class Usage(MethodView):
    @requires("usage.view")
    @blp.arguments(UsageQuerySchema, location="query")
    @blp.response(200, UsageSchema)
    def get(self, query):
        """Usage by institution, hub and day for a month, from what the hubs report (docs/monitoring.md): the
        whole fleet for operators, their own institution for an institution admin (another one: 404)."""
        start, end = usage_service.parse_month(query["month"])
        institution = scope.get_institution(g.user, query["institution"], "usage.view") \
            if query["institution"] else None
        return usage_service.report(g.user, start, end, institution=institution)


@blp.route("/clusters/<name>/prices")
class ClusterPrices(MethodView):
    @requires("usage.view")
    @blp.response(200, PricesSchema)
    def get(self, name):
        """The cluster's prices ({} when it has none)."""
        return scope.get_cluster(g.user, name, "usage.view").prices or {}

    @requires("usage.price")
    @blp.arguments(PricesSchema)
    @blp.response(200, PricesSchema)
    def put(self, data, name):
        """Replace the cluster's prices (operators); all blank clears them.  422 with field errors changes
        nothing."""
        return usage_service.set_prices(g.user, scope.get_cluster(g.user, name, "usage.price"), data)
