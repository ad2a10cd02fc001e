"""Clusters: provisioned with Terraform through the wizard, plan review and approval, or registered by kubeconfig."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from flask import current_app
from infra import providers
from infra.runner import TerraformRunner
from sqlalchemy import update
from werkzeug.exceptions import Conflict

from console.lifecycles import CLUSTER
from console.crypto import decrypt_json, encrypt_json
from console.extensions import db
from console.models import OPERATION_PENDING, Cluster, Hub, Operation, User, utcnow
from console.permissions import require
from console.services import FieldErrors, audit, operations

MAX_KUBECONFIG = 256 * 1024
ONBOARDED = ("kubernetes", "slurm")  # backends whose clusters take hubs only once their onboarding check passed


def transition(cluster: Cluster, event: str) -> None:
    """Move ``cluster`` along its lifecycle (``console.lifecycles.CLUSTER``); raises ``InvalidTransition``.  The
    caller commits."""
    cluster.state = CLUSTER.next_state(cluster.state, event)


def may(cluster: Cluster, event: str) -> bool:
    """Whether a person may ask for ``event`` now: the machine allows it and it moves the cluster.  A move that
    leaves the cluster where it is (apply while applying) is the worker taking up its own operation again; asked
    for by a person, it would be a second plan, apply or destroy of the same thing."""
    return CLUSTER.allows(cluster.state, event) and CLUSTER.next_state(cluster.state, event) != cluster.state


def _request(cluster: Cluster, event: str) -> None:
    """Move ``cluster`` on a person's request; raises Conflict (409) with the machine's sentence when it may not."""
    if not may(cluster, event):
        raise Conflict(CLUSTER.refusal(cluster.state, event))
    transition(cluster, event)


def runner_for(cluster: Cluster) -> TerraformRunner:
    """The Terraform workspace of a cluster, with its credentials (decrypted only here, only for Terraform)."""
    return TerraformRunner(Path(current_app.config["DATA_DIR"]) / "terraform", cluster.name,
                           providers.PROVIDERS[cluster.provider].module,
                           backend=current_app.config.get("TERRAFORM_BACKEND"),
                           env=decrypt_json(cluster.credentials),
                           terraform_bin=current_app.config["TERRAFORM_BIN"])


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def wizard_defaults(provider: str) -> dict[str, Any]:
    """The values the wizard starts ``provider``'s form with: its fields' defaults, and for a local cluster the
    console's configured port range (``LOCAL_PORT_RANGE``) rather than the module's own default."""
    found = providers.PROVIDERS.get(provider)
    defaults = {f.name: f.default for f in found.fields} if found else {}
    if provider == "local":
        defaults["port_first"], defaults["port_last"] = current_app.config["LOCAL_PORT_RANGE"]
    return defaults


def _defaults(provider: str, name: str, raw: dict[str, Any]) -> dict[str, Any]:
    raw = dict(raw)
    if provider == "local" and _blank(raw.get("data_dir")) and name:
        raw["data_dir"] = str(Path(current_app.config["DATA_DIR"]) / "clusters" / name)
    if provider == "local":
        first, last = current_app.config["LOCAL_PORT_RANGE"]
        raw.update({k: v for k, v in (("port_first", first), ("port_last", last)) if _blank(raw.get(k))})
    return raw


class _Parsed(dict):
    """Fields that parsed, for a cross-field rule: one that needs a field missing here (wrong itself) raises
    KeyError, even through ``get``, so the rule is skipped rather than judged against a default."""

    def get(self, key, default=None):
        return self[key]


def _every_error(provider: str, raw: dict[str, Any], errors: dict[str, str]) -> dict[str, str]:
    """``errors`` from :func:`infra.providers.validate` (the fields' own errors) plus what it leaves for a later
    submit: the provider's cross-field rules over the fields that did parse, so one answer names every problem."""
    found = providers.PROVIDERS.get(provider)
    if found is None:
        return errors
    parsed = _Parsed()
    for wizard_field in found.fields:
        try:
            parsed[wizard_field.name] = wizard_field.parse(raw.get(wizard_field.name))
        except providers.FieldError:
            pass
    more: dict[str, str] = {}
    for check in found.checks:
        try:
            more.update(check(parsed))
        except KeyError:
            pass
    more.update(_conflicts(provider, dict(parsed)))
    return {**more, **errors}


def _port_range(cluster: Cluster) -> tuple[int, int] | None:
    """The ports a local cluster's hubs take: from its settings once applied, else from its variables."""
    ports = (cluster.settings or {}).get("port_range")
    if not ports and (cluster.variables or {}).get("port_first") is not None:
        ports = [cluster.variables["port_first"], cluster.variables.get("port_last", cluster.variables["port_first"])]
    return (int(ports[0]), int(ports[1])) if ports else None


def _conflicts(provider: str, values: dict[str, Any], cluster: Cluster | None = None) -> dict[str, str]:
    """What the new values clash with among the other clusters: a taken name (for a new cluster) and, for a local
    one, a port range that overlaps another local cluster's (two hubs would be given the same ports)."""
    errors = {}
    if cluster is None and values.get("name") and db.session.execute(
            db.select(Cluster.id).filter_by(name=values["name"])).first():
        errors["name"] = f"A cluster named {values['name']!r} already exists."
    if provider == "local" and "port_first" in values and "port_last" in values:
        first, last = values["port_first"], values["port_last"]
        others = db.session.execute(db.select(Cluster).where(
            Cluster.backend == "local", Cluster.state != "destroyed",
            *([Cluster.id != cluster.id] if cluster is not None else []))).scalars()
        for other in others:
            ports = _port_range(other)
            if ports and first <= ports[1] and ports[0] <= last:
                errors["port_first"] = (f"Ports {first} to {last} overlap those of local cluster {other.name} "
                                        f"({ports[0]} to {ports[1]}); choose a range outside it.")
                break
    return errors


def provision(user: User, provider: str | None, raw: dict[str, Any], credentials: dict[str, str] | None = None
              ) -> Operation:
    """Record a new cluster and queue its plan; nothing is created before an operator approves the plan.

    Raises FieldErrors (nothing written) for bad input.  Commits.
    """
    require(user, "cluster.manage")
    name = str(raw.get("name") or "").strip()
    raw = _defaults(provider or "", name, raw)
    values, env, errors = providers.validate(provider or "", raw, credentials)
    errors = _every_error(provider or "", raw, errors) if errors else _conflicts(provider or "", values)
    if errors:
        raise FieldErrors(errors)
    cluster = Cluster(name=values["name"], provider=provider, backend="local" if provider == "local" else "kubernetes",
                      state="planning", variables=values, credentials=encrypt_json(env), settings={})
    db.session.add(cluster)
    op = operations.enqueue(None, "cluster-plan", user.email, cluster=cluster)
    audit(user.email, "cluster.create", values["name"], provider=provider,
          variables=values, credentials=sorted(env))
    db.session.commit()
    return op


def replan(user: User, cluster: Cluster, raw: dict[str, Any], credentials: dict[str, str] | None = None
           ) -> Operation:
    """Change a cluster's variables (its name stays) and queue a new plan. Blank credentials keep the stored ones."""
    require(user, "cluster.manage")
    if cluster.provider is None or not may(cluster, "plan"):
        raise Conflict(CLUSTER.refusal(cluster.state, "plan"))
    raw = {**_defaults(cluster.provider, cluster.name, raw), "name": cluster.name}
    stored = decrypt_json(cluster.credentials)
    typed = {c.name: (credentials or {}).get(c.name) or "" for c in providers.PROVIDERS[cluster.provider].credentials}
    values, env, errors = providers.validate(cluster.provider, raw, typed, require_credentials=False)
    errors = errors or _conflicts(cluster.provider, values, cluster)
    if errors:
        raise FieldErrors(errors)
    cluster.variables = values
    cluster.credentials = encrypt_json({**stored, **env})
    cluster.plan = None
    _request(cluster, "plan")
    op = operations.enqueue(None, "cluster-plan", user.email, cluster=cluster)
    audit(user.email, "cluster.replan", cluster.name, variables=values, credentials_changed=sorted(env))
    db.session.commit()
    return op


def approve(user: User, cluster: Cluster) -> Operation:
    """Queue the apply of the reviewed plan (cluster.manage).

    Idempotent: approving a plan whose apply is queued or running returns that apply (a double click, a second tab,
    requests at once), nothing is queued or audited twice.  The move from planned to applying is one conditional
    UPDATE, so of simultaneous approvals exactly one makes it.  Raises Conflict (409, the lifecycle's sentence) when
    there is no plan to approve, a used-up one included.  Commits.
    """
    require(user, "cluster.manage")
    if cluster.state == "planned" and not cluster.plan:
        raise Conflict(f"Cluster {cluster.name} has no plan to approve: review a new plan.")
    moved = db.session.execute(update(Cluster).where(Cluster.id == cluster.id, Cluster.state == "planned")
                               .values(state=CLUSTER.next_state("planned", "apply"))).rowcount == 1
    if not moved:
        db.session.rollback()
        db.session.refresh(cluster)
        applying = db.session.execute(
            db.select(Operation).where(Operation.cluster_id == cluster.id, Operation.kind == "cluster-apply",
                                       Operation.state.in_(OPERATION_PENDING))
            .order_by(Operation.id.desc()).limit(1)).unique().scalar_one_or_none()
        if applying is not None:
            return applying
        raise Conflict(CLUSTER.refusal(cluster.state, "apply"))
    db.session.refresh(cluster)
    op = operations.enqueue(None, "cluster-apply", user.email, cluster=cluster)
    audit(user.email, "cluster.approve", cluster.name, plan=cluster.plan.get("summary"))
    db.session.commit()
    return op


def live_hubs_on(cluster: Cluster) -> list[str]:
    return list(db.session.execute(db.select(Hub.slug).where(Hub.cluster_id == cluster.id,
                                                             Hub.state != "deleted")).scalars())


def destroy(user: User, cluster: Cluster, confirm: str | None) -> Operation:
    """Queue the destruction of a cluster (a registered one, or one never applied, is forgotten at once: nothing of
    ours runs it, or nothing was created).

    Raises FieldErrors unless ``confirm`` is its name or while hubs run on it, Conflict (with the lifecycle's
    sentence) when it cannot be destroyed now (being planned, applied or destroyed already).  Commits.
    """
    require(user, "cluster.manage")
    registered = cluster.provider is None or cluster.state == "registered"
    # nothing was ever created for a cluster never applied (its first plan failed, or was never approved): there is
    # nothing for Terraform to destroy, and no state to destroy it from, so it is forgotten at once
    nothing_created = not registered and cluster.state in ("failed", "planned") and not _ever_applied(cluster)
    event = "destroyed" if registered else "destroy"
    if not may(cluster, event):
        raise Conflict(CLUSTER.refusal(cluster.state, event))
    if (confirm or "").strip() != cluster.name:
        raise FieldErrors({"confirm": f"Type the cluster's name, {cluster.name}, to confirm."})
    hubs = live_hubs_on(cluster)
    if hubs:
        raise FieldErrors({"confirm": f"{len(hubs)} {'hub still runs' if len(hubs) == 1 else 'hubs still run'} on {cluster.name} ({', '.join(hubs[:5])}). "
                                      f"Delete them first."})
    _request(cluster, event)
    if registered:
        audit(user.email, "cluster.forget", cluster.name)
        op = None
    elif nothing_created:
        transition(cluster, "destroyed")
        shutil.rmtree(runner_for(cluster).dir, ignore_errors=True)  # its saved plan and variables, nothing more
        audit(user.email, "cluster.forget", cluster.name, reason="never applied: nothing was created")
        op = None
    else:
        op = operations.enqueue(None, "cluster-destroy", user.email, cluster=cluster)
        audit(user.email, "cluster.destroy", cluster.name)
    db.session.commit()
    return op


def _ever_applied(cluster: Cluster) -> bool:
    """Whether an apply of the cluster was ever queued: from then on Terraform may have created something."""
    return db.session.execute(db.select(Operation.id).where(Operation.cluster_id == cluster.id,
                                                            Operation.kind == "cluster-apply").limit(1)).first() \
        is not None


def register_kubernetes(user: User, name: str | None, kubeconfig: str | None) -> Cluster:
    """Register an existing Kubernetes cluster from its kubeconfig (stored encrypted) and queue its onboarding
    check: it takes hubs once that passes.  Commits."""
    require(user, "cluster.manage")
    name = (name or "").strip()
    errors = {}
    if not providers.NAME_RE.match(name):
        errors["name"] = "3 to 30 characters: lower-case letters, digits and hyphens, starting with a letter."
    elif db.session.execute(db.select(Cluster.id).filter_by(name=name)).first():
        errors["name"] = f"A cluster named {name!r} already exists."
    server = None
    if not kubeconfig or not kubeconfig.strip():
        errors["kubeconfig"] = "Upload or paste the cluster's kubeconfig."
    elif len(kubeconfig) > MAX_KUBECONFIG:
        errors["kubeconfig"] = "That file is too large for a kubeconfig."
    else:
        try:
            server = kubeconfig_server(kubeconfig)
        except ValueError as exc:
            errors["kubeconfig"] = str(exc)
    if errors:
        raise FieldErrors(errors)
    cluster = Cluster(name=name, provider=None, backend="kubernetes", state="registered",
                      settings={"server": server}, kubeconfig=encrypt_json({"kubeconfig": kubeconfig}))
    db.session.add(cluster)
    queue_check(cluster, user.email)
    audit(user.email, "cluster.register", name, server=server)
    db.session.commit()
    return cluster


def kubeconfig_server(text: str) -> str:
    """The API server of the kubeconfig's current context; ValueError with a reason when it has none."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError("This is not YAML.") from None
    if not isinstance(config, dict) or config.get("kind", "Config") != "Config":
        raise ValueError("This is not a kubeconfig (kind: Config).")
    contexts = {c.get("name"): c.get("context", {}) for c in config.get("contexts") or [] if isinstance(c, dict)}
    clusters = {c.get("name"): c.get("cluster", {}) for c in config.get("clusters") or [] if isinstance(c, dict)}
    current = config.get("current-context")
    if current not in contexts:
        raise ValueError("The kubeconfig has no current-context among its contexts.")
    server = clusters.get(contexts[current].get("cluster"), {}).get("server")
    if not isinstance(server, str) or not server.startswith("https://"):
        raise ValueError("The current context's cluster has no https:// server.")
    return server


# -- what the worker does -----------------------------------------------------------------------------------------

def record_outputs(cluster: Cluster, outputs: dict[str, dict[str, Any]], actor: str) -> None:
    """Keep non-sensitive outputs in the clear and the kubeconfig encrypted, after an apply.

    A local cluster is ready for hubs at once; a Kubernetes cluster is onboarded first: its check is queued (as
    ``actor``, who approved the apply) and it takes hubs once that passes.  The caller commits.
    """
    cluster.outputs = {k: v["value"] for k, v in outputs.items() if not v["sensitive"]}
    if "kubeconfig" in outputs:
        cluster.kubeconfig = encrypt_json({"kubeconfig": outputs["kubeconfig"]["value"]})
    if cluster.provider == "local":
        cluster.settings = {"root": cluster.outputs["hubs_dir"], "port_range": cluster.outputs["port_range"],
                            "ip": current_app.config["LOCAL_HUB_IP"]}
        transition(cluster, "applied")
    else:
        cluster.settings = {"server": cluster.outputs.get("endpoint"),
                            "home_storage": cluster.outputs.get("home_storage")}
        queue_check(cluster, actor)


# -- onboarding: is a Kubernetes cluster fit for hubs? --------------------------------------------------------------

UNREACHABLE_FIX = ("Check that the kubeconfig's server address and credentials are current and that the console "
                   "can reach the API server (firewall, authorized networks), then check again.")


def queue_check(cluster: Cluster, actor: str) -> Operation:
    """Move ``cluster`` to "checking" and queue its onboarding check (``cluster-check``); the caller commits."""
    transition(cluster, "check")
    return operations.enqueue(None, "cluster-check", actor, cluster=cluster)


def pending_check(cluster: Cluster) -> Operation | None:
    """The cluster's onboarding check queued or under way, if any."""
    return db.session.execute(
        db.select(Operation).where(Operation.cluster_id == cluster.id, Operation.kind == "cluster-check",
                                   Operation.state.in_(OPERATION_PENDING))
        .order_by(Operation.id.desc()).limit(1)).unique().scalar_one_or_none()


def check(user: User, cluster: Cluster) -> Operation:
    """Queue another onboarding check of a Kubernetes or Slurm cluster (cluster.manage), after its setup was fixed.

    Idempotent: while a check is queued or running, that one is returned and nothing is queued or audited twice.
    Raises Conflict (409) for a cluster that is not Kubernetes, or one its lifecycle does not let be checked now
    (being provisioned or destroyed).  Commits.
    """
    require(user, "cluster.manage")
    if cluster.backend not in ONBOARDED:
        raise Conflict(f"Cluster {cluster.name} runs hubs on the {cluster.backend} backend: only Kubernetes "
                       f"clusters and Slurm clusters are onboarded.")
    pending = pending_check(cluster)
    if pending is not None:
        return pending
    if not CLUSTER.allows(cluster.state, "check"):
        raise Conflict(CLUSTER.refusal(cluster.state, "check"))
    op = queue_check(cluster, user.email)
    audit(user.email, "cluster.check", cluster.name)
    db.session.commit()
    return op


def check_entry(check: Any) -> dict[str, Any]:
    """One check as stored and shown: {"name", "ok", "detail", "fix"} (the fix only matters when it failed)."""
    return {"name": str(check.name), "ok": bool(check.ok), "detail": str(check.detail or ""),
            "fix": str(check.fix or "")}


def unreachable(exc: BaseException) -> dict[str, Any]:
    """The one failed check recorded when the cluster could not be checked at all (its backend raised)."""
    return {"name": "API reachable", "ok": False, "detail": f"{exc.__class__.__name__}: {exc}"[:2000],
            "fix": UNREACHABLE_FIX}


def record_checks(cluster: Cluster, checks: list[dict[str, Any]]) -> bool:
    """Store a finished check and move the cluster: every check passed → ready, otherwise → needs setup.
    Returns whether it passed.  The caller commits."""
    passed = bool(checks) and all(c["ok"] for c in checks)
    cluster.checks, cluster.checked_at = checks, utcnow()
    transition(cluster, "passed" if passed else "setup_needed")
    return passed


def failed_checks(cluster: Cluster) -> list[str]:
    """The names of the checks that failed in the cluster's last onboarding check."""
    return [c.get("name", "?") for c in cluster.checks or [] if not c.get("ok")]


def onboarding_problem(cluster: Cluster) -> str | None:
    """Why a Kubernetes or Slurm cluster cannot take hubs, as a sentence naming the failed checks; None once it
    passed (and for clusters of other backends, which need no onboarding)."""
    if cluster.backend not in ONBOARDED:
        return None
    failed = failed_checks(cluster)
    under_way = " (a check is under way)" if cluster.state == "checking" else ""
    if cluster.checked_at is None:
        return f"Cluster {cluster.name!r} has not passed its onboarding check: not checked yet{under_way}."
    if failed:
        return (f"Cluster {cluster.name!r} has not passed its onboarding check: {', '.join(failed)} failed"
                f"{under_way}. Its page says how to fix each, then check it again.")
    if cluster.state != "ready":
        return f"Cluster {cluster.name!r} is {CLUSTER.states[cluster.state].label.lower()}, not ready for hubs."
    return None
