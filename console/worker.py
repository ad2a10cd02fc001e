"""The reconciler: claims operations and drives hubs toward their desired state through their backends.

Level-triggered: a handler looks at the hub as it is now (desired spec, backend state) and does what is still missing,
so an operation re-claimed after its worker died simply finishes the job.  Backend calls are idempotent; the local
backend adopts a JupyterHub that a dead worker had already started instead of starting another.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from clusters import environments, lifecycle
from clusters.base import BackendError, HubSpec, HubStatus, get_backend
from clusters.environments import EnvironmentSetupError, installed_jupyterhub, python_for
from clusters.preflight import preflight
from clusters.synthetic import CHECK_USER, run_check
from infra.runner import TerraformError, WorkspaceBusy

from console.extensions import db
from console.models import (OUTCOME_CANCELLED, OUTCOME_FAILED, OUTCOME_ROLLED_BACK, OUTCOME_SKIPPED, Cluster,
                            Hub, Operation, Release, Rollout, utcnow)
from console.services import clusters as cluster_service
from console.services import config as config_service
from console.services import hubs as hub_service
from console.services import monitoring, operations, releases
from console.services import decommission

logger = logging.getLogger(__name__)
SYSTEM_ACTOR = "hubfleet-worker"
READY_POLL_SECONDS = 0.5  # how soon to look again at a starting hub whose backend gives no hint
STOPPED_RECHECK_SECONDS = 1.0  # a starting hub reported stopped is looked at again this much later
ROLLOUT_KINDS = frozenset({"upgrade", "reconfigure", "rollback", "synthetic-check"})  # operations rollouts wait for
ROLLOUT_NUDGE_SECONDS = 0.1  # when one of those ends, drive rollouts this soon (not sooner: a step reads them all)
BUILD_POLL_SECONDS = 2.0  # how often a release's preparation looks at its environment's build
BUILD_TIMEOUT = 30 * 60  # a build of one JupyterHub environment that takes longer is given up
SMOKE_SLUG = "smoke-test"


@dataclass(frozen=True)
class Requeue:
    """What a handler returns to be looked at again ``after`` seconds from now, freeing the worker meanwhile."""

    after: float
    note: str = ""


class Outcome(Exception):
    """Ends an operation with the typed outcome of its class; the message says why, for its log and its page."""

    outcome = OUTCOME_FAILED


class OperationFailed(Outcome):
    """The operation cannot succeed."""

    marks_hub_failed = True


class Refused(OperationFailed):
    """The change was refused before the hub was touched (its preflight failed): the operation fails, the hub keeps
    serving as it was and is not marked failed."""

    marks_hub_failed = False


class RolledBack(Outcome):
    """The change failed and was undone: the hub is back as it was."""

    outcome = OUTCOME_ROLLED_BACK


class Skipped(Outcome):
    """Nothing was done, on purpose (the hub is not in a state to take the change); nothing was touched."""

    outcome = OUTCOME_SKIPPED


class Cancelled(Outcome):
    """The operation no longer makes sense (its hub is being deleted, say); nothing more was done."""

    outcome = OUTCOME_CANCELLED


class LeaseLost(RuntimeError):
    """Another worker took the operation over; stop touching it."""


# Failures of the outside world that end an operation as failed, their message fit for its log.
EXPECTED_FAILURES = (BackendError, TerraformError, WorkspaceBusy, EnvironmentSetupError)


class Worker:
    """Claims operations and works on each one step at a time; one worker drives many operations at once."""

    def __init__(self, app, owner: str | None = None, lane: str | None = None):
        """``lane``: "hubs" or "clusters" to work on those operations only (``operations.claim_next``); None: all."""
        self.app = app
        self.lane = lane
        self.owner = owner or ":".join([socket.gethostname(), str(os.getpid()), uuid.uuid4().hex[:8],
                                         *([lane] if lane else [])])
        self.lease = float(app.config["LEASE_SECONDS"])
        self.poll = float(app.config["WORKER_POLL_SECONDS"])
        self.max_attempts = int(app.config["MAX_ATTEMPTS"])
        self.start_timeout = float(app.config["HUB_START_TIMEOUT"])
        self.advance_every = float(app.config["ROLLOUT_STEP_SECONDS"])

    # -- the loop -------------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set: re-adopt hubs, then execute operation steps and drive rollouts."""
        logger.info("worker %s starting", self.owner)
        drives_hubs = self.lane != "clusters"
        with self.app.app_context():
            if drives_hubs:
                self.resync()
            next_advance = 0.0 if drives_hubs else float("inf")
            while not stop.is_set():
                op = advanced = None
                try:
                    op = self.run_once()
                    if op is not None and op.terminal and op.kind in ROLLOUT_KINDS:
                        # a rollout's hub is done: its next hub need not wait a whole step interval
                        next_advance = min(next_advance, time.monotonic() + ROLLOUT_NUDGE_SECONDS)
                    if time.monotonic() >= next_advance:
                        releases.advance()
                        advanced = True
                        next_advance = time.monotonic() + self.advance_every
                except Exception:  # the loop must outlive a bad pass (a database restart, say)
                    logger.exception("worker pass failed")
                    db.session.rollback()
                finally:
                    db.session.remove()
                if op is None and not advanced:  # nothing to do now: nap until something is due
                    stop.wait(min(operations.next_due_in(self.poll), max(0.0, next_advance - time.monotonic()))
                              or 0.01)
                    db.session.remove()
        logger.info("worker %s stopped", self.owner)

    def run_once(self) -> Operation | None:
        """Claim one operation and work one step of it; returns it (finished or requeued), or None if none was due."""
        # Read everything afresh once per step, then keep what the step writes: a step commits several times (so pages
        # follow it), and reloading the operation and its hub after each commit was a third of a step's cost.  So a
        # handler that changes a foreign key sets the relationship (hub.release = ...), never the bare column.
        db.session.expire_all()
        db.session().expire_on_commit = False
        try:
            op = operations.claim_next(self.owner, self.lease, self.lane)
            if op is not None:
                self.execute(op)
        finally:
            db.session().expire_on_commit = True
        return op

    def execute(self, op: Operation) -> None:
        """One step of ``op``: finish it with its outcome, or requeue it when the handler asks to wait."""
        if op.attempts > self.max_attempts:
            operations.append_log(op, f"giving up after {op.attempts - 1} attempts whose workers stopped mid-way")
            self._fail(op, "too many attempts")
            return
        step = _leases.hold(self.app, op.id, self.owner, self.lease)

        def log(line: str) -> None:
            if step.lost:
                raise LeaseLost()
            operations.append_log(op, line)

        if not op.step and op.data.get("started_by") != op.attempts:
            op.data = {**op.data, "started_by": op.attempts}  # committed with the handler's first write
            operations.append_log(op, f"{op.kind} of {op.target} started by {self.owner} (attempt {op.attempts})",
                                  commit=False)
        try:
            result = HANDLERS[op.kind](self, op, log)
        except Outcome as exc:
            db.session.rollback()
            log(f"{exc.outcome.replace('_', ' ')}: {exc}")
            if exc.outcome == OUTCOME_FAILED:
                self._fail(op, str(exc), mark_hub=getattr(exc, "marks_hub_failed", True))
            else:
                operations.finish(op, exc.outcome, str(exc))
        except lifecycle.InvalidTransition as exc:
            db.session.rollback()
            log(f"skipped: {exc}")
            operations.finish(op, OUTCOME_SKIPPED, str(exc))
        except EXPECTED_FAILURES as exc:
            db.session.rollback()
            log(f"failed: {exc}")
            self._fail(op, str(exc))
        except LeaseLost:
            db.session.rollback()
            logger.warning("operation %s was taken over by another worker", op.id)
        except Exception as exc:
            logger.exception("operation %s crashed", op.id)
            db.session.rollback()
            log(f"failed: internal error ({exc.__class__.__name__}); see the worker's log")
            self._fail(op, f"internal error: {exc.__class__.__name__}")
        else:
            if step.lost:
                db.session.rollback()
                logger.warning("operation %s was taken over by another worker", op.id)
                return
            if isinstance(result, Requeue):
                if result.note and result.note != op.note:
                    operations.append_log(op, result.note, commit=False)
                operations.requeue(op, result.after, result.note)
                return
            operations.append_log(op, "done", commit=False)
            operations.finish(op)
        finally:
            _leases.release(step)
        logger.info("operation %s (%s of %s) %s", op.id, op.kind, op.target, op.outcome)

    def _fail(self, op: Operation, error: str, mark_hub: bool = True) -> None:
        if op.cluster is not None:
            cluster_service.transition(op.cluster, "fail")
        elif mark_hub and op.hub is not None and lifecycle.HUB.allows(op.hub.state, "fail"):
            hub_service.mark_failed(op.hub, error)  # a hub already deleted stays deleted
        elif op.kind == "release-prepare" and op.release.state == "preparing":
            releases.mark_prepared(op.release, error)  # however its preparation ended, the release says why
        operations.fail(op, error)

    # -- clusters (Terraform) -------------------------------------------------------------------------------------

    def cluster_plan(self, op: Operation, log) -> None:
        cluster = op.cluster
        cluster_service.transition(cluster, "plan")
        db.session.commit()
        summary = cluster_service.runner_for(cluster).plan(cluster.variables, log)
        cluster.plan = {"summary": summary.as_dict(), "planned_at": utcnow().isoformat(timespec="seconds"),
                        "operation": op.id}
        cluster_service.transition(cluster, "planned")
        db.session.commit()

    def cluster_apply(self, op: Operation, log) -> None:
        cluster = op.cluster
        runner = cluster_service.runner_for(cluster)
        if op.attempts > 1:
            # The worker died mid-apply: the plan may be half applied. Release the workspace and ask for review.
            with runner.lock(log):
                runner.discard_plan()
            cluster.plan = None
            raise OperationFailed("the worker stopped during apply; the workspace was unlocked. "
                                  "Review a new plan before applying again.")
        cluster_service.transition(cluster, "apply")
        db.session.commit()
        outputs = runner.apply(log)
        cluster_service.record_outputs(cluster, outputs, op.actor)  # ready, or checked before it takes hubs
        cluster.plan = None
        db.session.commit()
        log(f"cluster {cluster.name} is ready" if cluster.state == "ready" else
            f"cluster {cluster.name} is applied; its onboarding check is queued")

    def cluster_check(self, op: Operation, log) -> None:
        """Onboard a Kubernetes cluster: run its backend's checks, keep them, and move it to ready (all passed) or
        needs-setup.  A backend that cannot check at all (unreachable, refused credentials) is one failed check,
        "API reachable", with its message: the operation itself succeeds, it did its job."""
        cluster = op.cluster
        cluster_service.transition(cluster, "check")  # a cluster forgotten or destroyed meanwhile is skipped
        db.session.commit()
        log(f"checking cluster {cluster.name}")
        try:
            checks = [cluster_service.check_entry(c) for c in hub_service.backend_for(cluster).onboard()]
        except Exception as exc:  # whatever the client raised, it is why the cluster cannot be used
            checks = [cluster_service.unreachable(exc)]
        for found in checks:
            log(f"{'ok  ' if found['ok'] else 'FAIL'} {found['name']}: {found['detail']}")
        passed = cluster_service.record_checks(cluster, checks)
        db.session.commit()
        log(f"cluster {cluster.name} is ready for hubs" if passed else
            f"cluster {cluster.name} needs setup: {', '.join(cluster_service.failed_checks(cluster))}")

    def cluster_destroy(self, op: Operation, log) -> None:
        cluster = op.cluster
        cluster_service.transition(cluster, "destroy")
        db.session.commit()
        cluster_service.runner_for(cluster).destroy(cluster.variables, log)
        cluster_service.transition(cluster, "destroyed")
        cluster.outputs = {}
        cluster.kubeconfig = ""
        db.session.commit()

    # -- handlers ------------------------------------------------------------------------------------------------
    #
    # A hub handler returns None when done, a Requeue to be looked at again, or raises an Outcome.  Where it is lives
    # in ``op.step`` and ``op.data`` (committed before anything slow), so a re-claimed operation carries on.

    def ensure_running(self, op: Operation, log, restart: bool = False, event: str = "provision") -> Requeue | None:
        """Deploy (or restart) the hub with its current spec, then wait for /hub/health without blocking."""
        hub = op.hub
        if hub.desired == "deleted":
            raise Cancelled("the hub is being deleted; nothing to start")
        backend = hub_service.backend_for(hub.cluster)
        if op.step != "wait-ready":
            spec = config_service.hub_spec(hub)
            hub_service.transition(hub, event)
            db.session.commit()
            if restart:
                backend_state = backend.restart(spec, hub.backend_state or {}, log)
            else:
                backend_state = backend.deploy(spec, hub.backend_state or {}, log)
            hub.backend_state = backend_state
            op.step = "wait-ready"
            op.data = {**op.data, "deadline": time.time() + self.ready_timeout(backend)}
            db.session.commit()
        status = self.await_health(op, backend, hub.backend_state or {}, "the hub")
        if isinstance(status, Requeue):
            return status
        op.step = ""
        monitoring.record_status(hub, status)
        hub_service.transition(hub, "ready")
        db.session.commit()
        log(f"hub is healthy at {status.url}" + (f" (JupyterHub {status.version})" if status.version else ""))
        return None

    def await_health(self, op: Operation, backend, backend_state: dict, name: str) -> HubStatus | Requeue:
        """Look once at a starting hub: its status once it answers /hub/health, a Requeue while it starts (as soon
        as the backend hints it may answer); OperationFailed when it stopped, or ``op.data["deadline"]`` passed."""
        status = backend.status(backend_state)
        if status.phase == "rolled-back":  # the platform undid the change: the previous version serves
            raise OperationFailed(f"{name} was rolled back by the cluster ({status.reason}): {status.message}")
        if status.phase == "failed" and status.reason:  # the platform gave up, and says why
            raise OperationFailed(f"{name} failed ({status.reason}): {status.message}")
        if status.ready:
            return status
        if not status.running:
            # Looked at once more before the operation fails: in loaded test runs a live, healthy JupyterHub was
            # once reported gone by a single look at the process table; a hub that really stopped stays stopped.
            time.sleep(STOPPED_RECHECK_SECONDS)
            status = backend.status(backend_state)
            if status.ready:
                return status
        if not status.running:
            raise OperationFailed(f"{name} stopped while starting: {status.message}")
        if time.time() > op.data["deadline"]:
            raise OperationFailed(f"{name} did not become healthy within {self.ready_timeout(backend):g}s "
                                  f"({status.message})")
        return Requeue(min(5.0, status.retry_after or READY_POLL_SECONDS), f"waiting for {name} to answer /hub/health")

    def ready_timeout(self, backend) -> float:
        """How long a hub may take to become healthy: the backend's own bound (a Helm install may take 15 min), or
        the console's HUB_START_TIMEOUT."""
        return float(getattr(backend, "ready_timeout", None) or self.start_timeout)

    def with_rollback(self, op: Operation, log, event: str, what: str, undo) -> Requeue | None:
        """Bring the hub up after a change; if it fails, ``undo()`` puts the previous desired state back (and returns
        its name), the hub is brought up on it, and the operation ends rolled back.

        ``op.data["failure"]`` marks the way back, so a re-claimed operation keeps going the right way.  A failure on
        the way back fails the operation (and the hub) with both reasons.
        """
        if "failure" not in op.data:
            try:
                return self.ensure_running(op, log, event=event)
            except (*EXPECTED_FAILURES, OperationFailed) as exc:
                db.session.rollback()
                log(f"the change failed: {exc}")
                op.step = ""
                op.data = {**op.data, "failure": f"{what} failed ({exc})", "back_to": undo(log)}
                db.session.commit()
        back_to = op.data.get("back_to") or "its previous state"
        try:
            waiting = self.ensure_running(op, log, event=event)
        except (*EXPECTED_FAILURES, OperationFailed) as exc:
            raise OperationFailed(f"{op.data['failure']}; putting it back on {back_to} failed too: {exc}") from None
        if waiting:
            return Requeue(waiting.after, f"rolling back to {back_to}: {waiting.note}")
        raise RolledBack(f"{op.data['failure']}; rolled back to {back_to}")

    def upgrade(self, op: Operation, log) -> Requeue | None:
        """Move a hub to the release its spec names: back up its database, deploy, wait until healthy.

        On failure, restore the backup and the previous release (the hub is healthy again) and end rolled back.
        A hub that cannot take an upgrade (failed, being deleted) is skipped, untouched.
        """
        hub = op.hub
        target = db.session.get(Release, (hub.spec or {}).get("upgrade_to"))
        if target is None:
            raise OperationFailed("the hub's spec names no release to upgrade to")
        if hub.release_id != target.id and "failure" not in op.data:
            lifecycle.HUB.next_state(hub.state, "upgrade")  # refuse before touching anything
            backend = hub_service.backend_for(hub.cluster)
            hub.previous_release_id = hub.release_id
            backup = backend.backup(hub.backend_state or {}, f"before-{target.name}-op{op.id}", log) \
                if hub.backend_state else None
            op.data = {**op.data, "backup": backup}
            hub.release = target  # the relationship, not the column: this session does not expire on commit
            db.session.commit()
            log(f"upgrading {hub.slug} to {target.name} (JupyterHub {target.jupyterhub_version})")
        return self.with_rollback(op, log, "upgrade", f"upgrade to {target.name}",
                                  lambda log: self._restore_previous_release(op, log))

    def _restore_previous_release(self, op: Operation, log) -> str:
        hub = op.hub
        previous = db.session.get(Release, hub.previous_release_id) if hub.previous_release_id else None
        name = previous.name if previous else "the platform default"
        log(f"rolling back {hub.slug} to {name}")
        if op.data.get("backup"):
            hub_service.backend_for(hub.cluster).restore(hub.backend_state or {}, op.data["backup"], log)
        hub.release = previous
        return name

    def roll_back(self, op: Operation, log) -> Requeue | None:
        """Put the hub back on its previous release with the database it had before its upgrade."""
        hub = op.hub
        if not op.data.get("restored"):
            upgrade = db.session.execute(db.select(Operation).where(Operation.hub_id == hub.id, Operation.kind == "upgrade")
                                         .order_by(Operation.id.desc()).limit(1)).unique().scalar_one_or_none()
            backup = (upgrade.data or {}).get("backup") if upgrade else None
            op.data = {**op.data, "restored": True, "backup": backup}
            self._restore_previous_release(op, log)
            db.session.commit()
        return self.ensure_running(op, log, event="upgrade")

    def reconfigure(self, op: Operation, log) -> Requeue | None:
        """Bring a hub onto a new institution config.

        With ``op.data["rollout"]`` (a config rollout takes the hub there): first the rendered config is preflighted
        with the hub's own JupyterHub (``clusters.preflight``); a refusal ends the operation failed (``Refused``) with
        the reason and the hub untouched, which halts the rollout.  Then the hub's spec points at the rollout's config
        and the hub is brought up on it; if it does not come up, the previous pointer and the hub's database (backed
        up just before) are put back and the hub brought up on them (rolled back).  Without a rollout (older
        callers): deploy the hub's current spec.
        """
        rollout_id = (op.data or {}).get("rollout")
        if rollout_id is None:
            return self.ensure_running(op, log, event="reconfigure")
        hub = op.hub
        if "previous_config" not in op.data:
            rollout = db.session.get(Rollout, rollout_id)
            if rollout is None or rollout.kind != "config" or not rollout.config:
                raise Refused(f"rollout {rollout_id} brings no configuration")
            lifecycle.HUB.next_state(hub.state, "reconfigure")  # refuse before touching anything
            if config_service.target_of(hub) == "local":
                self._preflight(hub, rollout, log)
            else:
                log("no local preflight for a Kubernetes hub: the chart checks the values as the cluster upgrades "
                    "it, and a refused upgrade is rolled back")
            # JupyterHub writes configured users into its database as it starts, even when it then fails: the way
            # back restores the database too, so a failed change leaves nothing behind.
            backup = hub_service.backend_for(hub.cluster).backup(
                hub.backend_state, f"before-config-rollout-{rollout.id}-op{op.id}", log) if hub.backend_state else None
            previous = (hub.spec or {}).get("config_rollout")
            op.data = {**op.data, "previous_config": previous, "backup": backup}
            hub.spec = {**(hub.spec or {}), "config_rollout": rollout.id}
            db.session.commit()
        return self.with_rollback(op, log, "reconfigure", "the new configuration",
                                  lambda log: self._restore_config_pointer(op, log))

    @staticmethod
    def _restore_config_pointer(op: Operation, log) -> str:
        hub = op.hub
        if op.data.get("backup"):
            hub_service.backend_for(hub.cluster).restore(hub.backend_state or {}, op.data["backup"], log)
        previous = op.data.get("previous_config")
        spec = {k: v for k, v in (hub.spec or {}).items() if k != "config_rollout"}
        if previous:
            spec["config_rollout"] = previous
        hub.spec = spec
        name = f"the configuration of rollout {previous}" if previous else "the institution's current configuration"
        log(f"putting {hub.slug} back on {name}")
        return name

    def _preflight(self, hub: Hub, rollout: Rollout, log) -> None:
        """Load the config ``rollout`` would give a local hub with the hub's own JupyterHub; Refused if it does not."""
        spec = config_service.hub_spec(hub, rollout=rollout)
        root = (hub.cluster.settings or {}).get("environments") or self.app.config["RELEASE_ENVIRONMENTS"]
        try:
            python = python_for(spec.jupyterhub_version, root, log)
        except EnvironmentSetupError as exc:
            raise Refused(f"preflight impossible: {exc}; the hub was not touched") from None
        result = preflight(spec.full_config(), python)
        version = spec.jupyterhub_version or "as installed"
        if not result.ok:
            log(f"preflight with JupyterHub {version} refused the new configuration in {result.seconds:.1f}s")
            raise Refused(f"preflight: JupyterHub {version} refuses the new configuration: {result.reason}; "
                          f"the hub was not touched")
        log(f"preflight with JupyterHub {version}: the new configuration loads ({result.seconds:.1f}s)")

    def synthetic_check(self, op: Operation, log) -> None:
        hub = op.hub
        backend = hub_service.backend_for(hub.cluster)
        state = hub.backend_state or {}
        api_url, token = backend.api_url(state), backend.api_token(state, purpose="check")
        if not api_url or not token:
            raise OperationFailed("this hub's backend offers no API to check it with")
        log(f"checking {hub.slug} as user {CHECK_USER}: create, spawn, stop")
        result = run_check(api_url, token, log, timeout=self.start_timeout)
        if not result.ok:
            raise OperationFailed(f"synthetic check failed: {result.error}")
        log("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))

    def stop_server(self, op: Operation, log) -> None:
        """Stop one person's server on a hub whose membership they lost (``op.data["username"]``), through the hub's
        REST API with its check token.  Someone the hub never knew, or whose server is not running, is done too."""
        hub, name = op.hub, op.data.get("username", "")
        if hub.state == lifecycle.DELETED or not name:
            raise Skipped("the hub is gone" if name else "no person to stop a server of")
        backend = hub_service.backend_for(hub.cluster)
        state = hub.backend_state or {}
        api_url, token = backend.api_url(state), backend.api_token(state, purpose="check")
        if not api_url or not token:
            raise Skipped("this hub's backend offers no API to stop servers with")
        try:
            with httpx.Client(base_url=api_url, headers={"Authorization": f"token {token}"}, timeout=30) as api:
                answer = api.delete(f"users/{quote(name, safe='')}/server")
        except httpx.HTTPError as exc:
            raise OperationFailed(f"the hub's API did not answer: {exc}") from None
        if answer.status_code == 404:
            log(f"{name} has no account on {hub.slug}: nothing to stop")
        elif answer.status_code in (202, 204):
            log(f"{name}'s server on {hub.slug} is stopped" if answer.status_code == 204 else
                f"{name}'s server on {hub.slug} is stopping")
        else:
            raise OperationFailed(f"the hub refused to stop {name}'s server: HTTP {answer.status_code}")

    def ensure_deleted(self, op: Operation, log) -> None:
        hub = op.hub
        if hub.state != lifecycle.DELETING:
            hub_service.transition(hub, "delete")
            db.session.commit()
        hub_service.backend_for(hub.cluster).remove(hub.backend_state or {}, log)
        hub.backend_state = {}
        hub_service.transition(hub, "removed")
        db.session.commit()

    # -- releases -------------------------------------------------------------------------------------------------

    def prepare_release(self, op: Operation, log) -> Requeue | None:
        """Prepare a release for the fleet's local cluster: build its JupyterHub environment once (in a detached
        process; the operation requeues meanwhile), start a throw-away hub of it, require /hub/health, remove the
        hub, and mark the release ready.  However the operation fails, :meth:`_fail` marks the release failed with
        the operation's short reason.

        Where it is lives in ``op.step`` ("" / "smoke" / "smoke-wait") and ``op.data``, so a re-claimed operation
        carries on; the environment's file lock keeps two workers from building one version twice.
        """
        release = op.release
        if release.state != "preparing":
            raise Skipped(f"release {release.name} is {release.state}: nothing to prepare")
        if "cluster" not in op.data and releases.local_cluster() is None:
            releases.mark_prepared(release)
            log("the fleet no longer has a local cluster: nothing to build or smoke-test; the release is ready")
            return None
        try:
            waiting = self._build_environment(op, release, log) if op.step == "" else None
            waiting = waiting or self._smoke_test(op, release, log)
        except LeaseLost:
            raise
        except Exception:  # the release is marked failed with the operation (see _fail); the hub must go first
            db.session.rollback()
            self._remove_smoke_hub(op, log)
            raise
        if waiting:
            return waiting
        releases.mark_prepared(release)
        log(f"release {release.name} is ready")
        return None

    def _build_environment(self, op: Operation, release: Release, log) -> Requeue | None:
        version = release.jupyterhub_version
        if "cluster" not in op.data:
            cluster = releases.local_cluster()
            backend = hub_service.backend_for(cluster)
            op.data = {**op.data, "cluster": cluster.id, "environments": str(backend.environments),
                       "smoke_root": str(backend.throw_away(f"op-{op.id}").root),
                       "build_deadline": time.time() + BUILD_TIMEOUT}
            db.session.commit()
        if version != installed_jupyterhub():
            root = op.data["environments"]
            state, reason = environments.build_state(version, root)
            if state == "failed" and op.data.get("build_started"):
                raise OperationFailed(f"{reason} (pip's output: {environments.build_log(version, root)})")
            if state in ("absent", "failed"):  # a failure of an earlier attempt is tried again
                environments.start_build(version, root)
                op.data = {**op.data, "build_started": True}
                db.session.commit()
                log(f"pip's output goes to {environments.build_log(version, root)}")
                state = "building"
            if state == "building":
                if time.time() > op.data["build_deadline"]:
                    raise OperationFailed(f"building the JupyterHub {version} environment took more than "
                                          f"{BUILD_TIMEOUT // 60} min; see {environments.build_log(version, root)}")
                return Requeue(BUILD_POLL_SECONDS, f"building the JupyterHub {version} environment")
            log(f"the JupyterHub {version} environment is ready")
        else:
            log(f"JupyterHub {version} is the console's own: nothing to build")
        op.step = "smoke"
        db.session.commit()
        return None

    def _smoke_backend(self, op: Operation):
        cluster = db.session.get(Cluster, op.data["cluster"])
        backend = get_backend("local", **{**(cluster.settings or {}), "environments": op.data["environments"]})
        return backend.throw_away(Path(op.data["smoke_root"]).name)

    def _smoke_test(self, op: Operation, release: Release, log) -> Requeue | None:
        backend = self._smoke_backend(op)
        if op.step != "smoke-wait":
            log(f"smoke test: starting a throw-away hub of JupyterHub {release.jupyterhub_version}")
            spec = HubSpec(slug=SMOKE_SLUG, institution="hubfleet", release=release.name,
                           jupyterhub_version=release.jupyterhub_version,
                           config=releases.smoke_config(release))
            state = backend.deploy(spec, {}, log)
            op.step = "smoke-wait"
            op.data = {**op.data, "smoke": state, "deadline": time.time() + self.start_timeout}
            db.session.commit()
        try:
            status = self.await_health(op, backend, op.data["smoke"], "the smoke-test hub")
        except OperationFailed as exc:
            raise OperationFailed(_short(str(exc))) from None
        if isinstance(status, Requeue):
            return status
        if status.version and status.version != release.jupyterhub_version:
            raise OperationFailed(f"the smoke-test hub runs JupyterHub {status.version}, "
                                  f"not {release.jupyterhub_version}")
        log(f"smoke test passed: /hub/health answered (JupyterHub {status.version})")
        self._remove_smoke_hub(op, log)
        return None

    def _remove_smoke_hub(self, op: Operation, log) -> None:
        """Stop and delete the throw-away hub, if one was started; safe to call twice."""
        if not op.data.get("smoke_root") or not Path(op.data["smoke_root"]).exists():
            return
        self._smoke_backend(op).remove({"dir": str(Path(op.data["smoke_root"]) / SMOKE_SLUG)}, log)
        shutil.rmtree(op.data["smoke_root"], ignore_errors=True)

    # -- after a restart ------------------------------------------------------------------------------------------

    def resync(self) -> None:
        """At start: queue a reconcile for every hub that should be serving but whose process is gone.

        Hubs still running are adopted as they are (the next observation records them).
        """
        for hub in monitoring.idle_serving_hubs():
            if not hub_service.backend_for(hub.cluster).status(hub.backend_state or {}).running:
                operations.enqueue(hub, "reconcile", SYSTEM_ACTOR)
                logger.info("hub %s is not running; queued a reconcile", hub.slug)
        db.session.commit()


def _short(message: str, lines: int = 3) -> str:
    """A backend's status message cut to its first line and the last ``lines`` lines of the log it quotes."""
    head, _, tail = message.partition("\n")
    quoted = [line.strip() for line in tail.splitlines() if line.strip()][-lines:]
    return " / ".join([head, *quoted]) if quoted else head


HANDLERS = {
    "create": Worker.ensure_running,
    "reconcile": Worker.ensure_running,
    "restart": lambda worker, op, log: worker.ensure_running(op, log, restart=True),
    "reconfigure": Worker.reconfigure,
    "delete": Worker.ensure_deleted,
    "decommission": decommission.run,  # archive, then ensure_deleted
    "restore": decommission.run_restore,  # put an archive in place, then ensure_running
    "synthetic-check": Worker.synthetic_check,
    "stop-server": Worker.stop_server,
    "upgrade": Worker.upgrade,
    "rollback": Worker.roll_back,
    "release-prepare": Worker.prepare_release,
    "cluster-plan": Worker.cluster_plan,
    "cluster-apply": Worker.cluster_apply,
    "cluster-check": Worker.cluster_check,
    "cluster-destroy": Worker.cluster_destroy,
}


class _Step:
    """One operation step in progress, whose lease the keeper renews; ``lost`` once another worker took it over."""

    def __init__(self, app, operation_id: int, owner: str, lease: float):
        self.app, self.operation_id, self.owner, self.lease = app, operation_id, owner, lease
        self.renewed = time.monotonic()
        self.lost = False


class _LeaseKeeper:
    """Renews, from one background thread per process, the lease of every step still running after a third of its
    lease (a handler blocked in a backend call, a Terraform run).  Most steps end long before, so they cost a dict
    entry, not a thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._steps: dict[int, _Step] = {}
        self._thread: threading.Thread | None = None

    def hold(self, app, operation_id: int, owner: str, lease: float) -> _Step:
        step = _Step(app, operation_id, owner, lease)
        with self._lock:
            self._steps[id(step)] = step
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="hubfleet-leases", daemon=True)
                self._thread.start()
        return step

    def release(self, step: _Step) -> None:
        with self._lock:
            self._steps.pop(id(step), None)

    def _run(self) -> None:
        while True:
            with self._lock:
                steps = list(self._steps.values())
            time.sleep(min([step.lease / 6 for step in steps] + [0.5]))
            for step in steps:
                # Under the lock: once release() has returned, the step's app (a test's, say, about to be torn down)
                # is never touched again.  A renewal takes a millisecond; release() waits at most that long.
                with self._lock:
                    if id(step) in self._steps and not step.lost and \
                            time.monotonic() - step.renewed >= step.lease / 3:
                        self._renew(step)

    @staticmethod
    def _renew(step: _Step) -> None:
        with step.app.app_context():
            try:
                if operations.renew_lease(step.operation_id, step.owner, step.lease):
                    step.renewed = time.monotonic()
                else:
                    logger.warning("lost the lease of operation %s", step.operation_id)
                    step.lost = True
            except Exception:  # a database hiccup: try again on the next round
                logger.exception("renewing the lease of operation %s failed", step.operation_id)
            finally:
                db.session.remove()


_leases = _LeaseKeeper()


class Background:
    """The worker and the monitor running as daemon threads of this process; ``join`` waits for them.

    The worker has two lanes: Terraform runs (cluster operations) hold their thread for minutes, so they get their
    own, and hubs never wait behind a cluster being provisioned.
    """

    def __init__(self, app, operations: bool = True, monitor: bool = True):
        from console.monitor import Monitor

        self.stop = threading.Event()
        runs = {}
        if operations:
            runs.update({"hubfleet-worker": Worker(app, lane="hubs").run,
                         "hubfleet-clusters": Worker(app, lane="clusters").run})
        if monitor:
            runs["hubfleet-monitor"] = Monitor(app).run
        self.threads = [threading.Thread(target=run, args=(self.stop,), name=name, daemon=True)
                        for name, run in runs.items()]
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self.threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def is_alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)


def start_in_process(app, operations: bool = True, monitor: bool = True) -> tuple[Background, threading.Event]:
    """Run a worker and a monitor (or either) in daemon threads of this process; returns (them, their stop event)."""
    background = Background(app, operations, monitor)
    return background, background.stop
