"""The reconciler: claims operations and drives hubs toward their desired state through their backends.

Level-triggered: a handler looks at the hub as it is now (desired spec, backend state) and does what is still missing,
so an operation re-claimed after its worker died simply finishes the job.  Backend calls are idempotent; the local
backend adopts a JupyterHub that a dead worker had already started instead of starting another.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from clusters import lifecycle
from clusters.base import BackendError
from clusters.synthetic import CHECK_USER, run_check
from infra.runner import TerraformError, WorkspaceBusy

from console.extensions import db
from console.models import Hub, Operation, Release, utcnow
from console.services import clusters as cluster_service
from console.services import config as config_service
from console.services import hubs as hub_service
from console.services import monitoring, operations, releases
from console.status import DOWN, HEALTHY

logger = logging.getLogger(__name__)
SYSTEM_ACTOR = "hubfleet-worker"


class OperationFailed(RuntimeError):
    """The operation cannot succeed; the message goes to its log."""


class RolledBack(OperationFailed):
    """The change failed and was undone: the operation failed, the hub is back as it was."""


class LeaseLost(RuntimeError):
    """Another worker took the operation over; stop touching it."""


class Worker:
    def __init__(self, app, owner: str | None = None):
        self.app = app
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = float(app.config["LEASE_SECONDS"])
        self.poll = float(app.config["WORKER_POLL_SECONDS"])
        self.observe_every = float(app.config["PROBE_SECONDS"])
        self.next_compact = 0.0
        self.max_attempts = int(app.config["MAX_ATTEMPTS"])
        self.start_timeout = float(app.config["HUB_START_TIMEOUT"])

    # -- the loop -------------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set: re-adopt hubs, then execute operations and observe hubs."""
        logger.info("worker %s starting", self.owner)
        with self.app.app_context():
            self.resync()
            next_observe = 0.0
            while not stop.is_set():
                try:
                    worked = self.run_once()
                    releases.advance()
                    if time.monotonic() >= next_observe:
                        self.observe()
                        next_observe = time.monotonic() + self.observe_every
                except Exception:  # the loop must outlive a bad pass (a database restart, say)
                    logger.exception("worker pass failed")
                    db.session.rollback()
                    worked = False
                finally:
                    db.session.remove()
                if not worked:
                    stop.wait(self.poll)
        logger.info("worker %s stopped", self.owner)

    def run_once(self) -> bool:
        """Claim and execute one operation; returns whether there was one."""
        op = operations.claim_next(self.owner, self.lease)
        if op is None:
            return False
        self.execute(op)
        return True

    def execute(self, op: Operation) -> None:
        heartbeat = _Heartbeat(self.app, op.id, self.owner, self.lease)

        def log(line: str) -> None:
            if heartbeat.lost:
                raise LeaseLost()
            operations.append_log(op, line)

        if op.attempts > self.max_attempts:
            log(f"giving up after {op.attempts - 1} attempts whose workers stopped mid-way")
            self._fail(op, "too many attempts")
            return
        log(f"{op.kind} of {'hub' if op.hub else 'cluster'} {op.target} started by {self.owner} "
            f"(attempt {op.attempts})")
        heartbeat.start()
        try:
            HANDLERS[op.kind](self, op, log)
        except RolledBack as exc:
            log(f"failed: {exc}")
            operations.finish(op, succeeded=False, error=str(exc))
        except (BackendError, OperationFailed, TerraformError, WorkspaceBusy) as exc:
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
            log("done")
            operations.finish(op, succeeded=True)
        finally:
            heartbeat.stop()
        logger.info("operation %s (%s of %s) %s", op.id, op.kind, op.target, op.state)

    def _fail(self, op: Operation, error: str) -> None:
        if op.cluster is not None:
            op.cluster.state = "failed"
        else:
            try:
                hub_service.transition(op.hub, "fail")
            except lifecycle.InvalidTransition:
                pass  # a hub already deleted stays deleted; the operation still records the failure
        operations.finish(op, succeeded=False, error=error)

    # -- clusters (Terraform) -------------------------------------------------------------------------------------

    def cluster_plan(self, op: Operation, log) -> None:
        cluster = op.cluster
        cluster.state = "planning"
        db.session.commit()
        summary = cluster_service.runner_for(cluster).plan(cluster.variables, log)
        cluster.plan = {"summary": summary.as_dict(), "planned_at": utcnow().isoformat(timespec="seconds"),
                        "operation": op.id}
        cluster.state = "planned"
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
        cluster.state = "applying"
        db.session.commit()
        outputs = runner.apply(log)
        cluster_service.record_outputs(cluster, outputs)
        cluster.plan = None
        cluster.state = "ready"
        db.session.commit()
        log(f"cluster {cluster.name} is ready")

    def cluster_destroy(self, op: Operation, log) -> None:
        cluster = op.cluster
        cluster.state = "destroying"
        db.session.commit()
        cluster_service.runner_for(cluster).destroy(cluster.variables, log)
        cluster.state = "destroyed"
        cluster.outputs = {}
        cluster.kubeconfig = ""
        db.session.commit()

    # -- handlers -------------------------------------------------------------------------------------------------

    def ensure_running(self, op: Operation, log, restart: bool = False, event: str = "provision") -> None:
        hub = op.hub
        if hub.desired == "deleted":
            log("the hub is being deleted; nothing to start")
            return
        backend = hub_service.backend_for(hub.cluster)
        spec = config_service.hub_spec(hub)
        hub_service.transition(hub, event)
        db.session.commit()
        if restart:
            state = backend.restart(spec, hub.backend_state or {}, log)
        else:
            state = backend.deploy(spec, hub.backend_state or {}, log)
        hub.backend_state = state
        db.session.commit()
        log("waiting for the hub to answer /hub/health")
        deadline = time.monotonic() + self.start_timeout
        while True:
            status = backend.status(state)
            if status.ready:
                break
            if not status.running:
                raise OperationFailed(f"the hub stopped while starting: {status.message}")
            if time.monotonic() > deadline:
                raise OperationFailed(f"the hub did not become healthy within {self.start_timeout:g}s "
                                      f"({status.message})")
            time.sleep(0.5)
        self._record(hub, status)
        hub_service.transition(hub, "ready")
        db.session.commit()
        log(f"hub is healthy at {status.url} (JupyterHub {status.version})")

    def upgrade(self, op: Operation, log) -> None:
        """Move a hub to the release its spec names: back up its database, deploy, wait until healthy.

        On failure, restore the backup and the previous release, and fail saying so.  Re-claimed after a crash,
        it carries on from where the hub is (the backup is taken once).
        """
        hub = op.hub
        target = db.session.get(Release, (hub.spec or {}).get("upgrade_to"))
        if target is None:
            raise OperationFailed("the hub's spec names no release to upgrade to")
        backend = hub_service.backend_for(hub.cluster)
        if hub.release_id != target.id:
            hub.previous_release_id = hub.release_id
            backup = backend.backup(hub.backend_state or {}, f"before-{target.name}-op{op.id}", log) \
                if hub.backend_state else None
            hub.spec = {**hub.spec, "backup": backup}
            hub.release_id = target.id
            db.session.commit()
        previous = db.session.get(Release, hub.previous_release_id) if hub.previous_release_id else None
        log(f"upgrading {hub.slug} to {target.name} (JupyterHub {target.jupyterhub_version})")
        try:
            self.ensure_running(op, log, event="upgrade")
        except (BackendError, OperationFailed) as exc:
            db.session.rollback()
            log(f"upgrade failed: {exc}")
            self.roll_back(op, log)
            raise RolledBack(f"upgrade to {target.name} failed ({exc}); rolled back to "
                                  f"{previous.name if previous else 'the platform default'}") from None

    def roll_back(self, op: Operation, log) -> None:
        """Put the hub back on its previous release with the database it had before the upgrade."""
        hub = op.hub
        previous = db.session.get(Release, hub.previous_release_id) if hub.previous_release_id else None
        log(f"rolling back {hub.slug} to {previous.name if previous else 'the platform default'}")
        if (hub.spec or {}).get("backup"):
            hub_service.backend_for(hub.cluster).restore(hub.backend_state or {}, hub.spec["backup"], log)
        hub.release_id = hub.previous_release_id
        db.session.commit()
        self.ensure_running(op, log, event="upgrade")

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

    def ensure_deleted(self, op: Operation, log) -> None:
        hub = op.hub
        if hub.state != lifecycle.DELETING:
            hub_service.transition(hub, "delete")
            db.session.commit()
        hub_service.backend_for(hub.cluster).remove(hub.backend_state or {}, log)
        hub.backend_state = {}
        hub_service.transition(hub, "removed")
        db.session.commit()

    # -- observation ----------------------------------------------------------------------------------------------

    def _record(self, hub: Hub, status) -> None:
        hub.url = status.url or hub.url
        health = HEALTHY if status.ready else DOWN
        if health != hub.health:
            hub.health_since = utcnow()
        hub.health = health
        hub.status_message = status.message
        hub.observed_at = utcnow()
        if status.ready:
            hub.jupyterhub_version = status.version or hub.jupyterhub_version
            hub.user_count = status.users if status.users is not None else hub.user_count

    def _idle_serving_hubs(self) -> list[Hub]:
        busy = db.select(Operation.hub_id).where(Operation.state.in_(("queued", "running")))
        return list(db.session.execute(
            db.select(Hub).where(Hub.state.in_(lifecycle.SERVING), Hub.desired == "running", Hub.id.not_in(busy))
        ).unique().scalars())

    def observe(self) -> None:
        """Sweep every serving hub with no operation in flight; record samples, health, alerts; send webhooks."""
        hubs = self._idle_serving_hubs()
        monitoring.record(hubs, monitoring.probe_fleet(hubs))
        db.session.commit()
        monitoring.deliver()
        if time.monotonic() >= self.next_compact:
            monitoring.compact()
            self.next_compact = time.monotonic() + 600

    def resync(self) -> None:
        """At start: queue a reconcile for every hub that should be serving but whose process is gone.

        Hubs still running are adopted as they are (the next observation records them).
        """
        for hub in self._idle_serving_hubs():
            if not hub_service.backend_for(hub.cluster).status(hub.backend_state or {}).running:
                operations.enqueue(hub, "reconcile", SYSTEM_ACTOR)
                logger.info("hub %s is not running; queued a reconcile", hub.slug)
        db.session.commit()


HANDLERS = {
    "create": Worker.ensure_running,
    "reconcile": Worker.ensure_running,
    "restart": lambda worker, op, log: worker.ensure_running(op, log, restart=True),
    "reconfigure": lambda worker, op, log: worker.ensure_running(op, log, event="reconfigure"),
    "delete": Worker.ensure_deleted,
    "synthetic-check": Worker.synthetic_check,
    "upgrade": Worker.upgrade,
    "rollback": Worker.roll_back,
    "cluster-plan": Worker.cluster_plan,
    "cluster-apply": Worker.cluster_apply,
    "cluster-destroy": Worker.cluster_destroy,
}


class _Heartbeat:
    """Renews an operation's lease in the background while its handler blocks in a backend call."""

    def __init__(self, app, operation_id: int, owner: str, lease: float):
        self.app, self.operation_id, self.owner, self.lease = app, operation_id, owner, lease
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{operation_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with self.app.app_context():
            try:
                while not self._stop.wait(self.lease / 3):
                    if not operations.renew_lease(self.operation_id, self.owner, self.lease):
                        logger.warning("lost the lease of operation %s", self.operation_id)
                        self.lost = True
                        return
            finally:
                db.session.remove()


def start_in_process(app) -> tuple[threading.Thread, threading.Event]:
    """Run a worker in a daemon thread of this process (the embedded default); returns (thread, stop event)."""
    stop = threading.Event()
    thread = threading.Thread(target=Worker(app).run, args=(stop,), name="hubfleet-worker", daemon=True)
    thread.start()
    return thread, stop
