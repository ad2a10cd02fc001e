"""The monitor: watches the fleet on its own schedule, in its own thread and database session.

No operation, however long or broken, pauses it: the worker's loop and the monitor's share nothing but the database.
Every ``PROBE_SECONDS`` it sweeps every serving hub; a hub whose last probe failed is probed again every
``RECHECK_SECONDS`` until it answers, so "down" is decided in seconds.  Every tick it also asks supervised backends
(local processes) whether each hub's processes still exist, without any request: a hub found gone is down at once and
is restarted with backoff (:func:`console.services.monitoring.supervise`), as systemd or the kubelet would.

On PostgreSQL several worker processes may run; a named lease makes one of them the monitor at a time.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from clusters import lifecycle
from clusters.probe import ProbeResult

from console.extensions import db
from console.models import utcnow
from console.services import leases, monitoring

logger = logging.getLogger(__name__)
LEASE_NAME = "monitor"
STARTUP_SECONDS = 5.0


class Monitor:
    def __init__(self, app, owner: str | None = None):
        self.app = app
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:monitor"
        config = app.config
        self.every = float(config["PROBE_SECONDS"])
        self.recheck = float(config["RECHECK_SECONDS"])
        self.lease = max(10.0, 3 * self.every)
        self.failing: set[int] = set()  # hubs whose last probe failed: probed again every recheck
        self.next_sweep = 0.0
        self.next_compact = 0.0
        self.supervise_after = 0.0  # see run()

    def run(self, stop: threading.Event) -> None:
        """Tick every ``RECHECK_SECONDS`` until ``stop`` is set, while this process holds the monitor's lease."""
        # Hubs already gone when the worker process starts are re-adopted by the worker (Worker.resync queues one
        # reconcile each): for its first seconds the monitor shows them down but leaves their restart to it, so a
        # console restart neither restarts a hub twice nor counts against its restarts.
        self.supervise_after = time.monotonic() + STARTUP_SECONDS
        with self.app.app_context():
            while not stop.is_set():
                try:
                    if leases.hold(LEASE_NAME, self.owner, self.lease):
                        self.tick()
                except Exception:  # the monitor must outlive a bad pass (a database restart, say)
                    logger.exception("monitor pass failed")
                    db.session.rollback()
                finally:
                    db.session.remove()
                stop.wait(self.recheck)
            try:
                leases.release(LEASE_NAME, self.owner)
            finally:
                db.session.remove()

    def tick(self) -> None:
        """One pass: find dead processes, probe the hubs that are due, record, restart, alert, deliver.

        A sweep pass loads every live hub; a pass between sweeps loads only the hubs that need a look (found gone,
        failing, down or degraded, alerted), so looking every second costs little however large the fleet.
        """
        now = utcnow()
        sweeping = time.monotonic() >= self.next_sweep
        if sweeping:
            self.next_sweep = time.monotonic() + self.every
        candidates = monitoring.gone_hubs()
        hubs = monitoring.live_hubs() if sweeping else monitoring.hubs_to_watch(candidates)
        backends = monitoring.backends_of(hubs)
        # Looked at again on the rows just loaded: a hub restarted in between has a new process by now.
        gone = {hub.id for hub in hubs if hub.id in candidates and hub.backend_state
                and backends[hub.cluster_id].alive(hub.backend_state) is False}
        results: dict[int, ProbeResult] = {
            hub.id: ProbeResult(key=hub.id, up=False, duration=0.0, alive=False)
            for hub in hubs if hub.id in gone and hub.state in lifecycle.SERVING}
        due = [h for h in hubs if h.state in lifecycle.SERVING and h.id not in gone
               and (sweeping or h.id in self.failing)]
        results.update(monitoring.probe_fleet(due))
        monitoring.record(hubs, results, now)
        self.failing = {key for key, result in results.items() if not result.up}
        for hub in hubs if time.monotonic() >= self.supervise_after else []:
            if hub.id in gone and (hub.state in lifecycle.SERVING or
                                   (hub.state == lifecycle.FAILED and hub.restart_count)):
                backend = backends[hub.cluster_id]
                monitoring.supervise(hub, lambda: backend.status(hub.backend_state).message, now)
        monitoring.evaluate_alerts(hubs, now)
        db.session.commit()
        monitoring.deliver()
        if time.monotonic() >= self.next_compact:
            monitoring.compact()
            self.next_compact = time.monotonic() + 600
