"""Fleet monitoring: probe sweeps into samples, health by declared rules, alerts to webhooks, charts, retention."""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from clusters import health as health_rules
from clusters import lifecycle
from clusters.base import HubStatus, statuses
from clusters.probe import ProbeResult, Target, sweep
from flask import current_app
from sqlalchemy import DateTime, case, literal, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import defer, lazyload
from sqlalchemy.sql.functions import FunctionElement

from console.extensions import db
from console.models import OPERATION_PENDING, Alert, Cluster, Hub, HubSample, Operation, ServerSnapshot, utcnow
from console.services import audit, decommission, drift, operations, usage, webhooks
from console.services import hubs as hub_service
from console.services.alert_email import email_alerts

logger = logging.getLogger(__name__)
SUPERVISOR = "hubfleet-supervisor"
CRASH_LOOP = "keeps crashing"  # how the status message of a hub the supervisor gave up on begins
STABLE_AFTER_RESTART = timedelta(minutes=10)  # a restarted hub up this long has its restart count reset
RAW_RETENTION = timedelta(days=1)
HOURLY_RETENTION = timedelta(days=30)
ALERT_KINDS = ("down", "degraded")
ACTIVE_WINDOW = timedelta(hours=24)  # "active users": active in this long, as JupyterHub's 24h count
NOT_DELIVERED = "No webhook took this notice yet; it is tried again."


def probe_fleet(hubs: list[Hub]) -> dict[int, ProbeResult]:
    """Sweep ``hubs`` concurrently (bounded pool, per-hub timeout); {hub id: result}.

    A hub with a URL and an API is asked over HTTP, and so is a Kubernetes hub with a public address.  The others (a
    test double; a Kubernetes hub without an address yet) are asked through their backend, one look per cluster
    (``statuses``); so are all hubs of a backend the platform supervises (Kubernetes), whose reason — a failed
    upgrade, an image that cannot be pulled — says why a hub is down better than a refused connection does.
    """
    config = current_app.config
    targets, observed = [], {}
    backends = backends_of(hubs)
    by_cluster: dict[int, list[Hub]] = defaultdict(list)
    for hub in hubs:
        by_cluster[hub.cluster_id].append(hub)
    running = usage.running_usernames(hub.id for hub in hubs)  # asked about when no longer listed (usage)
    for cluster_id, group in by_cluster.items():
        backend = backends[cluster_id]
        platform = not getattr(backend, "supervised", True)  # Kubernetes: its hubs' URLs are public addresses
        probed = {hub.id for hub in group if hub.url and (platform or backend.api_url(hub.backend_state or {}))}
        targets += [Target(hub.id, hub.url, backend.api_token(hub.backend_state or {}), running.get(hub.id, ()))
                    for hub in group if hub.id in probed]
        asked = [hub for hub in group if hub.id not in probed or platform]
        observed.update(zip((hub.id for hub in asked),
                            statuses(backend, [hub.backend_state or {} for hub in asked])))
        drift.observe_running(group, backend, observed)
    swept = {r.key: r for r in sweep(targets, concurrency=int(config["PROBE_CONCURRENCY"]),
                                     timeout=float(config["PROBE_TIMEOUT"]))}
    for hub_id, status in observed.items():
        probe = swept.get(hub_id)
        if probe is None:
            swept[hub_id] = ProbeResult(key=hub_id, up=status.ready, duration=0.0, error=status.message,
                                        version=status.version, total_users=status.users)
        elif not probe.up and status.message:
            probe.error = f"{status.message} ({probe.error})" if probe.error else status.message
    return swept


def backends_of(hubs: list[Hub]) -> dict[int, Any]:
    """One backend adapter per cluster of ``hubs``, by cluster id."""
    backends: dict[int, Any] = {}
    for hub in hubs:
        if hub.cluster_id not in backends:
            backends[hub.cluster_id] = hub_service.backend_for(hub.cluster)
    return backends


def _live():
    return (Hub.state != lifecycle.DELETED) & (Hub.desired == "running")


def _watched(query):
    # What the monitor reads of a hub: its cluster (for its backend), not its institution, release or spec, which
    # load on access if ever needed: 10,000 hubs then take a third of the memory.
    return query.options(lazyload(Hub.institution), lazyload(Hub.release), defer(Hub.spec)).order_by(Hub.id)


def live_hubs() -> list[Hub]:
    """Every hub that should be running (not being deleted), its cluster loaded."""
    return list(db.session.execute(_watched(db.select(Hub).where(_live()))).unique().scalars())


def hubs_to_watch(ids: set[int]) -> list[Hub]:
    """The live hubs a pass between sweeps looks at: those of ``ids``, those down or degraded (their probes failed,
    or their alerts are due) and those with an open alert (it may close)."""
    wanted = Hub.health.in_((health_rules.DOWN, health_rules.DEGRADED)) | \
        Hub.id.in_(db.select(Alert.hub_id).where(Alert.resolved_at.is_(None)))
    if ids:
        wanted = wanted | Hub.id.in_(sorted(ids))
    return list(db.session.execute(_watched(db.select(Hub).where(_live(), wanted))).unique().scalars())


def gone_hubs() -> set[int]:
    """Ids of the live hubs on supervised backends (local processes) whose processes the backend sees gone.

    Asks no hub anything: for a local hub it is a look at the process table.  Reads only the columns it needs, so a
    pass over a large fleet stays cheap; hubs not yet started, and backends nobody needs to supervise, are skipped.
    """
    clusters = db.session.execute(db.select(Cluster).where(
        Cluster.id.in_(db.select(Hub.cluster_id).where(_live()).distinct()))).scalars().all()
    supervised = {c.id: backend for c in clusters
                  if getattr(backend := hub_service.backend_for(c), "supervised", False)}
    if not supervised:
        return set()
    rows = db.session.execute(db.select(Hub.id, Hub.cluster_id, Hub.backend_state).where(
        _live(), Hub.state != lifecycle.REQUESTED, Hub.cluster_id.in_(list(supervised))))
    return {hub_id for hub_id, cluster_id, state in rows if state and supervised[cluster_id].alive(state) is False}


def idle_serving_hubs() -> list[Hub]:
    """Serving hubs with no operation in flight."""
    busy = db.select(Operation.hub_id).where(Operation.state.in_(OPERATION_PENDING), Operation.hub_id.is_not(None))
    return list(db.session.execute(_watched(
        db.select(Hub).where(Hub.state.in_(lifecycle.SERVING), Hub.desired == "running", Hub.id.not_in(busy)))
    ).unique().scalars())


def record(hubs: list[Hub], results: dict[int, ProbeResult], now: datetime | None = None) -> None:
    """Store one sample per probed hub, derive each hub's health, write what was observed, move its state.

    The caller commits.
    """
    now = now or utcnow()
    probed = {hub.id: result for hub in hubs if (result := results.get(hub.id)) is not None}
    record_servers(probed, now)
    usage.record_sessions(hubs, probed, now)
    count_active_users(probed, now)
    samples = [{"hub_id": hub_id, "at": now, "resolution": "raw", "up": 1.0 if result.up else 0.0,
                "duration": result.duration, "running_servers": result.running_servers,
                "total_users": result.total_users, "active_users": result.active_users.get("24h"),
                "spawn_success": result.spawn_success, "spawn_failure": result.spawn_failure, "alive": result.alive}
               for hub_id, result in probed.items()]
    if samples:  # one statement for all of them, and no object per sample
        db.session.execute(db.insert(HubSample), samples)
    recent = recent_samples([h.id for h in hubs if h.id in results])
    for hub in hubs:
        result = results.get(hub.id)
        if result is None:
            continue
        health, reason = health_rules.derive(recent.get(hub.id, []))
        hub_service.observe_hub(hub, health, reason, result, now)
        if health == health_rules.HEALTHY and hub.restart_count and hub.restarted_at and \
                now - hub.restarted_at >= STABLE_AFTER_RESTART:
            hub.restart_count = 0  # it has stayed up: a later crash starts the backoff afresh
        event = "healthy" if health == health_rules.HEALTHY else "unhealthy"
        if lifecycle.HUB.allows(hub.state, event):
            hub_service.transition(hub, event)


def record_servers(results: dict[int, ProbeResult], now: datetime) -> None:
    """Upsert each probed hub's ``ServerSnapshot`` rows from the servers its probe listed: a listed server takes its
    state and times; a user no longer listed is "stopped" and keeps their last activity.  A probe that could not
    list servers (``servers`` None) leaves its hub's rows as they are; one that listed only the first pages marks
    nobody stopped.  Three statements for the whole sweep.  The caller commits."""
    listed = {hub_id: result for hub_id, result in results.items() if result.servers is not None}
    if not listed:
        return
    existing = {(hub_id, username): (row_id, state) for row_id, hub_id, username, state in db.session.execute(
        db.select(ServerSnapshot.id, ServerSnapshot.hub_id, ServerSnapshot.username, ServerSnapshot.state)
        .where(ServerSnapshot.hub_id.in_(sorted(listed))))}
    inserts, updates, seen = [], [], set()
    for hub_id, result in listed.items():
        for server in result.servers:
            if (hub_id, server.username) in seen:
                continue
            seen.add((hub_id, server.username))
            values = {"state": server.state, "started": server.started, "last_activity": server.last_activity,
                      "seen_at": now}
            if (hub_id, server.username) in existing:
                updates.append({"id": existing[(hub_id, server.username)][0], **values})
            else:
                inserts.append({"hub_id": hub_id, "username": server.username, **values})
    updates += [{"id": row_id, "state": "stopped", "seen_at": now}
                for key, (row_id, state) in existing.items()
                if key not in seen and state != "stopped" and listed[key[0]].servers_complete]
    if inserts:
        db.session.execute(db.insert(ServerSnapshot), inserts)
    if updates:
        for keys in {tuple(sorted(row)) for row in updates}:  # one executemany per shape of row
            db.session.execute(db.update(ServerSnapshot), [row for row in updates if tuple(sorted(row)) == keys])


def count_active_users(results: dict[int, ProbeResult], now: datetime) -> None:
    """Set each probed hub's users active in the last 24 hours (``active_users["24h"]``) from what the sweeps saw.

    JupyterHub counts its active users once an hour by default (``PeriodicMetricsCollector.
    active_users_update_interval``), so a person who has just started working stays uncounted for up to an hour.
    The server list every sweep reads carries each user's last activity, which ``ServerSnapshot`` keeps after the
    server stops: the users whose last activity falls in the last 24 hours are counted at every sweep.  Someone
    active on the hub without a server is known only to JupyterHub's count, so the larger of the two is kept.  A hub
    whose servers could not be listed keeps JupyterHub's count.  One statement for the whole sweep."""
    listed = sorted(hub_id for hub_id, result in results.items() if result.servers is not None)
    if not listed:
        return
    counts = dict(db.session.execute(
        db.select(ServerSnapshot.hub_id, db.func.count()).where(
            ServerSnapshot.hub_id.in_(listed), ServerSnapshot.last_activity >= now - ACTIVE_WINDOW)
        .group_by(ServerSnapshot.hub_id)).all())
    for hub_id in listed:
        active = results[hub_id].active_users
        active["24h"] = max(counts.get(hub_id, 0), active.get("24h") or 0)


def record_status(hub: Hub, status: HubStatus, now: datetime | None = None) -> None:
    """Record what a backend said of ``hub`` (the worker, when a hub it started answers) as a sample."""
    hub.url = status.url or hub.url
    drift.observe(hub, status, now)
    record([hub], {hub.id: ProbeResult(key=hub.id, up=status.ready, duration=0.0,
                                       error="" if status.ready else status.message, version=status.version,
                                       total_users=status.users, alive=status.running)}, now)


# -- supervision ----------------------------------------------------------------------------------------------------

def restart_delay(restarts: int) -> float:
    """Seconds to wait before the next restart of a hub restarted ``restarts`` times already: 0, 5, 10, 20, ..., 300."""
    return 0.0 if restarts == 0 else min(300.0, 5.0 * 2 ** (restarts - 1))


def supervise(hub: Hub, why: Callable[[], str], now: datetime) -> Operation | None:
    """A hub whose processes are gone: queue a restart after its backoff, or mark it failed when it keeps crashing.

    After ``MAX_RESTARTS`` restarts without staying up (see ``STABLE_AFTER_RESTART``) the hub is failed, its status
    message says it keeps crashing with ``why()`` (what the backend sees; for a local hub, the end of its log), and no
    more restarts are queued.  Does nothing while another operation works on the hub.  Returns the restart
    operation, if one was queued.  The caller commits.
    """
    if operations.pending(hub) is not None:
        return None
    limit = int(current_app.config["MAX_RESTARTS"])
    if hub.restart_count >= limit:
        # Whether it died while serving or while starting (then its restart failed it already), say so once.
        if not (hub.status_message or "").startswith(CRASH_LOOP):
            hub_service.mark_failed(hub, f"{CRASH_LOOP}: restarted {hub.restart_count} times, down again; {why()}")
            audit(SUPERVISOR, "hub.crashloop", hub.slug, hub.institution_id, restarts=hub.restart_count)
        return None
    if hub.restarted_at and (now - hub.restarted_at).total_seconds() < restart_delay(hub.restart_count):
        return None
    hub.restart_count += 1
    hub.restarted_at = now
    audit(SUPERVISOR, "hub.restart", hub.slug, hub.institution_id, restart=hub.restart_count)
    return operations.enqueue(hub, "reconcile", SUPERVISOR)


def recent_samples(hub_ids: list[int], count: int = 20) -> dict[int, list[health_rules.Sample]]:
    """The newest ``count`` raw samples of each hub, newest first, in one query."""
    if not hub_ids:
        return {}
    every = float(current_app.config["PROBE_SECONDS"])
    since = utcnow() - timedelta(seconds=every * (count + 2) + 60)
    rows = db.session.execute(
        db.select(HubSample.hub_id, HubSample.up, HubSample.duration, HubSample.spawn_failure, HubSample.alive)
        .where(HubSample.hub_id.in_(hub_ids), HubSample.resolution == "raw", HubSample.at >= since)
        .order_by(HubSample.hub_id, HubSample.at.desc(), HubSample.id.desc())).all()
    grouped: dict[int, list[health_rules.Sample]] = defaultdict(list)
    for hub_id, up, duration, spawn_failure, alive in rows:
        if len(grouped[hub_id]) < count:
            grouped[hub_id].append(health_rules.Sample(bool(up), duration, spawn_failure, alive))
    return grouped


# -- alerts ---------------------------------------------------------------------------------------------------------

def evaluate_alerts(hubs: list[Hub], now: datetime) -> None:
    """Open an alert when a hub has been down (or degraded) long enough; resolve it when it is not any more, and
    every open alert of a hub that is deleted or being deleted.

    One open alert per hub and kind: a hub that stays down is not alerted again.  The caller commits.
    """
    rules = {"down": float(current_app.config["ALERT_DOWN_SECONDS"]),
             "degraded": float(current_app.config["ALERT_DEGRADED_SECONDS"])}
    open_alerts = {(alert.hub_id, alert.kind): alert for alert in db.session.execute(
        db.select(Alert).where(Alert.resolved_at.is_(None))).unique().scalars()}  # few: one query, not one per hub
    for hub in hubs:
        for kind in ALERT_KINDS:
            open_alert = open_alerts.get((hub.id, kind))
            lasting = hub.health == kind and hub.health_since is not None and \
                (now - hub.health_since).total_seconds() >= rules[kind]
            if lasting and open_alert is None:
                db.session.add(Alert(hub=hub, kind=kind, reason=hub.status_message, started_at=hub.health_since))
            elif hub.health != kind and open_alert is not None:
                open_alert.resolved_at = now
    gone = db.session.execute(db.select(Alert).join(Alert.hub).where(
        Alert.resolved_at.is_(None), (Hub.desired == "deleted") | (Hub.state == lifecycle.DELETED))).scalars().all()
    for alert in gone:
        alert.resolved_at = now
        alert.reason = f"{alert.reason} (closed: the hub was deleted)"


def payload(alert: Alert, event: str) -> dict[str, Any]:
    """The JSON a webhook receives (documented in docs/monitoring.md)."""
    hub = alert.hub
    return {"event": event, "alert": {
        "id": alert.id, "kind": alert.kind, "reason": alert.reason, "hub": hub.slug,
        "institution": hub.institution.slug, "cluster": hub.cluster.name, "url": hub.url, "health": hub.health,
        "started_at": alert.started_at.isoformat() + "Z",
        "resolved_at": alert.resolved_at.isoformat() + "Z" if alert.resolved_at else None}}


def deliver() -> int:
    """POST every alert and recovery not yet delivered to its webhooks, signed (``console/services/webhooks.py``);
    returns how many notices went out.

    A notice that no webhook took is tried again on a later pass; its alert says so without naming a webhook (an
    institution admin sees the alert, never the fleet's webhooks); the operator's log says which one failed and why.
    """
    pending = db.session.execute(db.select(Alert).where(
        (Alert.notified_at.is_(None)) |
        (Alert.resolved_at.is_not(None) & Alert.recovery_notified_at.is_(None)))).unique().scalars().all()
    notices = []
    for alert in pending:
        event = "alert" if alert.notified_at is None else "recovery"
        if event == "alert" and alert.resolved_at is not None:
            alert.notified_at = alert.recovery_notified_at = utcnow()  # came and went between passes: say nothing
            continue
        notices.append((alert, event, webhooks.targets_for(alert.hub.institution_id)))
    taken = iter(webhooks.post_all([(target, payload(alert, event))
                                    for alert, event, targets in notices for target in targets]))
    sent = 0
    for alert, event, targets in notices:
        took = [next(taken) for _ in targets]
        if targets and not any(took):
            alert.last_error = NOT_DELIVERED
            continue
        alert.last_error = ""
        if event == "alert":
            alert.notified_at = utcnow()
        else:
            alert.recovery_notified_at = utcnow()
        sent += 1
    db.session.commit()
    email_alerts()  # the same events, by email to each hub's contacts (console/services/alert_email.py)
    return sent


# -- charts and retention -------------------------------------------------------------------------------------------

_NO_END = datetime(9999, 1, 1)  # the last bucket's end: a sample stamped after "now" still counts in it


class _FromUnix(FunctionElement):
    """The naive UTC time of a number of Unix seconds, as samples' ``at`` is kept."""

    type = DateTime()
    inherit_cache = True


@compiles(_FromUnix, "postgresql")
def _from_unix_postgresql(element, compiler, **kw):
    return f"(to_timestamp({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC')"


@compiles(_FromUnix, "sqlite")
def _from_unix_sqlite(element, compiler, **kw):  # the text SQLite keeps a time as, to the millisecond
    return f"strftime('%Y-%m-%d %H:%M:%f', {compiler.process(element.clauses, **kw)}, 'unixepoch')"


def newest_in_buckets(hub_ids: list[int], since: datetime, width: timedelta, buckets: int,
                      wanted: list[tuple[Any, Any]]) -> list[Any]:
    """Rows (hub id, bucket number, *values) for charts of ``hub_ids`` over ``buckets`` buckets of ``width`` from
    ``since``: for each (column, condition) in ``wanted``, the column of the bucket's newest sample that meets the
    condition (None: no such sample).  A day of 15 s samples is 5,760 rows a hub (reading them all took the fleet
    page 1.3 s for 50 hubs, a hub page 35 ms); each value here is one probe of the (hub_id, at) index instead.  The
    last bucket is open-ended: a sample stamped after "now" falls in it.  One statement."""
    if not hub_ids:
        return []
    bucket = select(literal(0).label("k")).cte("bucket", recursive=True)
    bucket = bucket.union_all(select(bucket.c.k + 1).where(bucket.c.k < buckets - 1))
    first, step = _unix_precise(since), width.total_seconds()
    start = _FromUnix(first + bucket.c.k * step)
    end = case((bucket.c.k == buckets - 1, literal(_NO_END, DateTime)),
               else_=_FromUnix(first + (bucket.c.k + 1) * step))

    def newest(column, condition):
        return (select(column).where(HubSample.hub_id == Hub.id, HubSample.at >= start, HubSample.at < end, condition)
                .order_by(HubSample.at.desc(), HubSample.id.desc()).limit(1).scalar_subquery())

    return db.session.execute(select(Hub.id, bucket.c.k, *(newest(column, condition) for column, condition in wanted))
                              .select_from(Hub).join(bucket, true()).where(Hub.id.in_(hub_ids))).all()


def series(hub_ids: list[int], hours: int = 24, buckets: int = 24) -> dict[int, dict[str, list[float | None]]]:
    """Per hub, active users and running servers over the last ``hours`` in ``buckets`` (the fleet list's
    sparklines): each bucket holds the newest sample taken in it, exactly as measured (an average of one running
    server's samples would read "0.1"), or None when none was.  Reads only those samples (``newest_in_buckets``)."""
    rows = newest_in_buckets(hub_ids, utcnow() - timedelta(hours=hours), timedelta(hours=hours) / buckets, buckets,
                             [(HubSample.active_users, HubSample.active_users.is_not(None)),
                              (HubSample.running_servers, HubSample.running_servers.is_not(None))])
    out: dict[int, dict[str, list[float | None]]] = {}
    for hub_id, number, active, running in rows:
        if active is not None or running is not None:
            per = out.setdefault(hub_id, {"active": [None] * buckets, "running": [None] * buckets})
            per["active"][number], per["running"][number] = active, running
    return out


# The hub page's time ranges: (link text, heading, span, bucket).  A chart draws the newest sample of each bucket:
# every point is a real measurement at its own time, and the newest point is the latest sample.
CHART_RANGES = {"24h": ("24 h", "last 24 hours", timedelta(hours=24), timedelta(minutes=5)),
                "7d": ("7 days", "last 7 days", timedelta(days=7), timedelta(hours=1)),
                "30d": ("30 days", "last 30 days", timedelta(days=30), timedelta(hours=4))}
DEFAULT_RANGE = "24h"


def measured(value: float) -> str:
    """A measured value as text: whole numbers without a decimal point ("1", not "1.0"), others to one place."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


@dataclass(frozen=True)
class Chart:
    """One measure of a hub over a time range, as its page draws it and prints it.

    ``points`` are (time, value), oldest first; None as a value marks a gap (no sample for over two buckets or three
    sweeps, say while the hub was stopped), so no line is drawn across it.  Values are as stored: counts for raw
    samples, hourly averages for samples older than a day (``compact``).
    """

    key: str
    title: str
    unit: str  # the y axis's unit: "servers", "users", "ms"
    one: str  # how one of it reads: "running server", "active user"; "" for a measure with a unit ("ms")
    many: str
    points: list[tuple[datetime, float | None]]

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.points if v is not None]

    @property
    def latest(self) -> tuple[datetime, float] | None:
        return next(((at, v) for at, v in reversed(self.points) if v is not None), None)

    def reads(self, value: float) -> str:
        """``value`` as a phrase: "1 running server", "2.5 running servers", "84 ms"."""
        number = measured(value)
        if not self.one:
            return f"{number} {self.many}"
        return f"{number} {self.one if number == '1' else self.many}"

    def data(self, since: datetime, until: datetime) -> dict[str, Any]:
        """What the page's chart script draws over ``since``..``until`` (``console/static/charts.js``); times in
        Unix seconds."""
        return {"title": self.title, "unit": self.unit, "integer": bool(self.one),
                "since": _unix(since), "until": _unix(until), "x": [_unix(at) for at, _ in self.points],
                "y": [None if v is None else round(v, 3) for _, v in self.points]}


_EPOCH, _SECOND = datetime(1970, 1, 1), timedelta(seconds=1)


def _unix(at: datetime) -> int:
    return (at - _EPOCH) // _SECOND  # naive UTC, as stored; whole seconds (5x faster than calendar.timegm)


def _unix_precise(at: datetime) -> float:
    return (at - _EPOCH) / _SECOND


# (key, title, axis unit, one, many, the sample's column, scale); response time only from probes that got an answer
# (a backend's word about a hub records a duration of 0, and a failed probe's duration is how long it took to fail).
_CHARTS = (("running", "Running servers", "servers", "running server", "running servers", "running_servers", 1),
           ("active", "Active users (last 24 h)", "users", "active user", "active users", "active_users", 1),
           ("response", "Response time", "ms", "", "ms", "duration", 1000))


def _charted(column: str):
    """The samples a chart of ``column`` draws: those with a value; for response times, of probes answered."""
    value = getattr(HubSample, column)
    return (HubSample.up != 0) & (value != 0) if column == "duration" else value.is_not(None)


def chart_range(name: str | None) -> str:
    """A known range name, else the default (a link with a bad ``range`` still shows the page)."""
    return name if name in CHART_RANGES else DEFAULT_RANGE


def hub_charts(hub: Hub, range_name: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The hub page's charts over one of ``CHART_RANGES`` (an unknown name gets the default): {"range", "label",
    "since", "until", "charts": [Chart], "ranges": [(name, link text)], "query": the range for a URL's ``range``
    argument, None for the default}.  Reads only the samples drawn (``newest_in_buckets``)."""
    name = chart_range(range_name)
    _, label, span, width = CHART_RANGES[name]
    until = now or utcnow()
    since = until - span
    gap = max(2 * width, timedelta(seconds=3 * float(current_app.config["PROBE_SECONDS"])))
    wanted = []
    for *_, column, _scale in _CHARTS:  # each chart: the time and the value of each bucket's newest sample with one
        wanted += [(HubSample.at, _charted(column)), (getattr(HubSample, column), _charted(column))]
    newest_of: list[dict[int, tuple[datetime, float]]] = [{} for _ in _CHARTS]
    for _, number, *found in newest_in_buckets([hub.id], since, width, span // width, wanted):
        for newest, at, value, (*_, scale) in zip(newest_of, found[::2], found[1::2], _CHARTS):
            if at is not None:
                newest[number] = (at, value * scale)
    charts = []
    for newest, (key, title, unit, one, many, column, scale) in zip(newest_of, _CHARTS):
        points: list[tuple[datetime, float | None]] = []
        for at, value in (newest[i] for i in sorted(newest)):
            if points and at - points[-1][0] > gap:
                points.append((points[-1][0] + (at - points[-1][0]) / 2, None))
            points.append((at, value))
        charts.append(Chart(key, title, unit, one, many, points))
    return {"range": name, "label": label, "since": since, "until": until, "charts": charts,
            "ranges": [(key, short) for key, (short, *_) in CHART_RANGES.items()],
            "query": None if name == DEFAULT_RANGE else name}


def compact(now: datetime | None = None) -> None:
    """Raw samples older than a day become hourly averages; hourly ones older than 30 days are dropped."""
    now = now or utcnow()
    cutoff = (now - RAW_RETENTION).replace(minute=0, second=0, microsecond=0)
    old = db.session.execute(db.select(HubSample).where(HubSample.resolution == "raw", HubSample.at < cutoff)
                             ).scalars().all()
    hours: dict[tuple[int, datetime], list[HubSample]] = defaultdict(list)
    for sample in old:
        hours[(sample.hub_id, sample.at.replace(minute=0, second=0, microsecond=0))].append(sample)

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    for (hub_id, hour), samples in hours.items():
        db.session.add(HubSample(
            hub_id=hub_id, at=hour, resolution="hour", up=mean(s.up for s in samples),
            duration=mean(s.duration for s in samples), running_servers=mean(s.running_servers for s in samples),
            total_users=mean(s.total_users for s in samples), active_users=mean(s.active_users for s in samples),
            spawn_success=max((s.spawn_success or 0) for s in samples),
            spawn_failure=max((s.spawn_failure or 0) for s in samples)))
    if old:
        db.session.execute(db.delete(HubSample).where(HubSample.resolution == "raw", HubSample.at < cutoff))
    db.session.execute(db.delete(HubSample).where(HubSample.resolution == "hour",
                                                  HubSample.at < now - HOURLY_RETENTION))
    db.session.commit()
    decommission.purge_expired(now)  # archives past their retention date
