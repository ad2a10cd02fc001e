"""Usage showback: server sessions from what the hubs report, and per-hub, per-institution totals by day and month.

Counted from the hubs' own times, never from when a sweep happened to look: every sweep lists each hub's active
servers (``GET /hub/api/users?state=active``, clusters/probe.py) with their ``started`` time; a server is one
:class:`ServerSession` per (hub, user, started), however many sweeps see it.  When a server the console holds as
running leaves that list, the probe asks the hub about that user (``include_stopped_servers``): JupyterHub sets a
stopped server's last activity to the moment it stopped it, so the session ends there (``end_exact``).  A hub that
cannot say (the user is gone) ends it when a sweep last saw it running, marked inexact; a server restarted in between
(a new ``started``) ends the old session no later than the new one began.  A missed sweep changes nothing: the next
one asks the hub again.  A span in which a hub's servers went unlisted for longer than ``GAP_INTERVALS`` probe
intervals is a :class:`UsageGap`: servers that started and stopped inside it are unknown, and reports mark it.

Totals (:func:`report`) are pure functions over intervals (:func:`measure`): active users, server-hours, peak
concurrent servers, CPU- and GB-hours (Kubernetes hubs: what their servers request), and the estimated cost at
each cluster's prices.
"""
from __future__ import annotations

import calendar
import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

from clusters.base import backend_class
from clusters.probe import ProbeResult
from clusters.synthetic import CHECK_USER
from flask import current_app
from tenants.fields import quantity_bytes

from console.extensions import db
from console.models import Cluster, Hub, Institution, ServerSession, UsageGap, User, utcnow
from console.permissions import require, visible
from console.services import FieldErrors, audit

GAP_INTERVALS = 3  # servers unlisted for longer than this many probe intervals: a gap in the hub's usage
PRICE_FIELDS = ("server_hour", "cpu_hour", "gb_hour")
PRICE_LABELS = {"server_hour": "per server-hour", "cpu_hour": "per CPU-hour", "gb_hour": "per GB-hour"}
MAX_PRICE = Decimal("1000000")
CURRENCY = re.compile(r"^[A-Z]{3}$")
MONTH = re.compile(r"^(\d{4})-(\d{2})$")
CSV_FIELDS = ("period", "institution", "hub", "cluster", "active_users", "server_hours", "peak_servers",
              "cpu_hours", "gb_hours", "estimated_cost", "currency", "gap_minutes", "inexact_sessions")


# -- recording (the monitoring sweep) --------------------------------------------------------------------------------

def running_usernames(hub_ids: Iterable[int]) -> dict[int, tuple[str, ...]]:
    """{hub id: the users whose sessions the console holds as running there}: what each hub's probe asks about when
    its active list no longer has them.  One query."""
    ids = sorted(set(hub_ids))
    if not ids:
        return {}
    found: dict[int, list[str]] = defaultdict(list)
    for hub_id, username in db.session.execute(
            db.select(ServerSession.hub_id, ServerSession.username)
            .where(ServerSession.hub_id.in_(ids), ServerSession.ended.is_(None)).distinct()):
        found[hub_id].append(username)
    return {hub_id: tuple(sorted(names)) for hub_id, names in found.items()}


def gap_after() -> timedelta:
    return timedelta(seconds=GAP_INTERVALS * float(current_app.config["PROBE_SECONDS"]))


def requested(hub: Hub) -> tuple[float | None, float | None]:
    """(CPU cores, memory GB) each server of a Kubernetes hub requests: its effective environment's guarantee, else
    its limit (a profile a user picks is not known to the console); (None, None) for other backends."""
    if backend_class(hub.cluster.backend).render_target != "z2jh":
        return None, None
    from console.services import config as config_service

    layer = config_service.institution_layer_of(hub)
    environment = config_service.effective(hub, {"auth": None, "environment": layer["environment"],
                                                 "secrets": {}})[0]["environment"]
    cpu = environment.get("cpu_guarantee") or environment.get("cpu_limit")
    memory = environment.get("mem_guarantee") or environment.get("mem_limit")
    return (float(cpu) if cpu else None), (quantity_bytes(str(memory)) / 1e9 if memory else None)


def record_sessions(hubs: list[Hub], results: dict[int, ProbeResult], now: datetime) -> None:
    """Update sessions from one sweep: open one for each listed server not known yet, keep the known ones seen, end
    those the hub says stopped (or restarted), mark a gap where the hub's servers went unlisted too long, and note
    when each hub's servers were listed.  A probe that could not list servers changes nothing of its hub.  The caller
    commits."""
    listed = {hub_id: result for hub_id, result in results.items() if result.servers is not None}
    if not listed:
        return
    by_id = {hub.id: hub for hub in hubs}
    held: dict[tuple[int, str], list[ServerSession]] = defaultdict(list)
    for row in db.session.execute(db.select(ServerSession).where(
            ServerSession.hub_id.in_(sorted(listed)), ServerSession.ended.is_(None))).scalars():
        held[(row.hub_id, row.username)].append(row)
    seen = {(hub_id, server.username): server for hub_id, result in listed.items()
            for server in result.servers if server.started is not None}
    new = {key: server for key, server in seen.items()
           if not any(row.started == server.started for row in held.get(key, []))}
    # Sessions closed before and listed again with the same start (an end given too early) are taken up again.
    closed = {}
    if new:
        for row in db.session.execute(db.select(ServerSession).where(
                ServerSession.hub_id.in_(sorted({hub_id for hub_id, _ in new})),
                ServerSession.started.in_(sorted({server.started for server in new.values()})))).scalars():
            closed[(row.hub_id, row.username, row.started)] = row
    resources: dict[int, tuple[float | None, float | None]] = {}
    for (hub_id, username), server in seen.items():
        for row in held.get((hub_id, username), []):
            if row.started == server.started:
                row.last_seen, row.last_activity = now, server.last_activity
            else:  # restarted between sweeps: the old one stopped after it was last seen, before this one began
                _end(row, min(max(row.last_seen, row.started), max(server.started, row.started)), exact=False)
        if (hub_id, username) not in new:
            continue
        again = closed.get((hub_id, username, server.started))
        if again is not None:
            again.ended, again.end_exact, again.last_seen, again.last_activity = None, False, now, \
                server.last_activity
            continue
        if hub_id not in resources:
            resources[hub_id] = requested(by_id[hub_id]) if hub_id in by_id else (None, None)
        cpu, memory = resources[hub_id]
        db.session.add(ServerSession(hub_id=hub_id, username=username, started=server.started, last_seen=now,
                                     last_activity=server.last_activity, cpu=cpu, memory=memory))
    for hub_id, result in listed.items():
        for stop in result.stops:
            for row in held.get((hub_id, stop.username), []):
                if row.ended is not None or (hub_id, stop.username) in seen:
                    continue
                if stop.restarted is not None:
                    if stop.restarted != row.started:
                        _end(row, min(max(row.last_seen, row.started), max(stop.restarted, row.started)), False)
                elif stop.stopped is not None and stop.stopped >= row.started:
                    _end(row, stop.stopped, exact=True)
                else:
                    _end(row, max(row.last_seen, row.started), exact=False)
    after = gap_after()
    for hub_id in listed:
        hub = by_id.get(hub_id)
        if hub is None:
            continue
        if hub.servers_listed_at is not None and now - hub.servers_listed_at > after:
            db.session.add(UsageGap(hub_id=hub_id, start=hub.servers_listed_at, end=now))
        hub.servers_listed_at = now


def _end(row: ServerSession, at: datetime, exact: bool) -> None:
    row.ended, row.end_exact = at, exact


# -- prices ---------------------------------------------------------------------------------------------------------

def validate_prices(data: Any) -> dict[str, str]:
    """Clean prices {"currency", "server_hour", "cpu_hour", "gb_hour"}: decimals from 0 to a million, given as
    numbers or text (blank: not priced), and a three-letter currency code when any is priced; {} when none is.
    Raises FieldErrors, field by field.  Pure."""
    if not isinstance(data, dict):
        raise FieldErrors({"prices": "Send the prices as an object."})
    errors: dict[str, str] = {}
    clean: dict[str, str] = {}
    for name in PRICE_FIELDS:
        value = data.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            errors[name] = "Give a number, such as 0.25."
            continue
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            errors[name] = "Give a number, such as 0.25."
            continue
        if not amount.is_finite() or amount < 0:
            errors[name] = "Give a price of 0 or more."
        elif amount > MAX_PRICE:
            errors[name] = f"Give a price of at most {MAX_PRICE}."
        elif amount.as_tuple().exponent < -6:
            errors[name] = "Give at most six decimal places."
        else:
            clean[name] = format(amount.normalize(), "f")
    currency = data.get("currency")
    currency = currency.strip().upper() if isinstance(currency, str) else currency
    if currency not in (None, "") and (not isinstance(currency, str) or not CURRENCY.match(currency)):
        errors["currency"] = "Give a three-letter currency code, such as EUR."
    elif clean and not currency:
        errors["currency"] = "Name the currency these prices are in."
    if errors:
        raise FieldErrors(errors)
    return {"currency": currency, **clean} if clean else {}


def set_prices(user: User, cluster: Cluster, data: Any) -> dict[str, str]:
    """Replace the cluster's prices (usage.price); empty prices clear them.  422 (FieldErrors) changes nothing.
    Commits."""
    require(user, "usage.price", cluster)
    clean = validate_prices(data)
    before = dict(cluster.prices or {})
    cluster.prices = clean
    audit(user.email, "usage.price", cluster.name, None, before=before, after=clean)
    db.session.commit()
    return clean


# -- periods and measures (pure) -------------------------------------------------------------------------------------

def parse_month(value: str | None, now: datetime | None = None) -> tuple[datetime, datetime]:
    """[first moment, first moment of the next) of a calendar month "YYYY-MM" in UTC; the current month when
    ``value`` is empty.  Raises FieldErrors for anything else."""
    if not value:
        now = now or utcnow()
        value = f"{now.year:04d}-{now.month:02d}"
    match = MONTH.match(value) if isinstance(value, str) else None
    if match is None or not 2000 <= int(match.group(1)) <= 9998 or not 1 <= int(match.group(2)) <= 12:
        raise FieldErrors({"month": "Give a month as YYYY-MM, such as 2026-11."})
    start = datetime(int(match.group(1)), int(match.group(2)), 1)
    return start, _next_month(start)


def _next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1)


def days_of(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The UTC days of [start, end)."""
    return [(start + timedelta(days=i), start + timedelta(days=i + 1)) for i in range((end - start).days)]


@dataclass(frozen=True)
class Span:
    """A session as counted: [start, end), ``end`` resolved (its end; a running one's: now, or its hub's deletion)."""

    person: tuple[int, str]  # (institution id, username): one person's servers, whichever hub of theirs
    hub_id: int
    start: datetime
    end: datetime
    exact: bool  # False: it ended when last seen running, the hub could not say when it stopped
    cpu: float | None = None
    memory: float | None = None


def overlap(start: datetime, end: datetime, lo: datetime, hi: datetime) -> float:
    """Seconds of [start, end) inside [lo, hi)."""
    return max(0.0, (min(end, hi) - max(start, lo)).total_seconds())


def peak(spans: Iterable[Span], lo: datetime, hi: datetime) -> int:
    """The most spans running at one moment of [lo, hi): a sweep over their starts and ends, an end before a start at
    the same moment (one server stopping as another starts is one at a time)."""
    events = []
    for span in spans:
        if span.start < hi and span.end > lo:
            events += [(max(span.start, lo), 1), (min(span.end, hi), -1)]
    events.sort(key=lambda event: (event[0], event[1]))
    best = running = 0
    for _, change in events:
        running += change
        best = max(best, running)
    return best


def measure(spans: list[Span], lo: datetime, hi: datetime, prices: dict[int, dict] | None = None,
            gaps: Iterable[tuple[datetime, datetime]] = ()) -> dict[str, Any]:
    """What ``spans`` used in [lo, hi): active users (distinct people with a server running in it; the console's
    synthetic check is no person), server-hours, peak concurrent servers, CPU- and GB-hours, the estimated cost by
    currency at ``prices`` ({hub id: its cluster's prices}), the minutes of ``gaps`` inside it and the sessions
    whose end is inexact.  Pure."""
    inside = [s for s in spans if s.start < hi and (s.end > lo or s.start >= lo)]
    seconds: dict[int, float] = defaultdict(float)
    cpu: dict[int, float] = defaultdict(float)
    memory: dict[int, float] = defaultdict(float)
    for span in inside:
        counted = overlap(span.start, span.end, lo, hi)
        seconds[span.hub_id] += counted
        cpu[span.hub_id] += counted * (span.cpu or 0.0)
        memory[span.hub_id] += counted * (span.memory or 0.0)
    cost: dict[str, Decimal] = defaultdict(Decimal)
    for hub_id, priced in (prices or {}).items():
        if not priced or hub_id not in seconds:
            continue
        amount = sum((Decimal(str(hours / 3600)) * Decimal(priced.get(name) or "0")
                      for name, hours in (("server_hour", seconds[hub_id]), ("cpu_hour", cpu[hub_id]),
                                          ("gb_hour", memory[hub_id]))), Decimal())
        cost[priced["currency"]] += amount
    gap_seconds = sum(overlap(start, end, lo, hi) for start, end in gaps)
    return {"active_users": len({s.person for s in inside if s.person[1] != CHECK_USER}),
            "server_hours": round(sum(seconds.values()) / 3600, 4),
            "peak_servers": peak(inside, lo, hi),
            "cpu_hours": round(sum(cpu.values()) / 3600, 4),
            "gb_hours": round(sum(memory.values()) / 3600, 4),
            "estimated_cost": {currency: float(amount.quantize(Decimal("0.01")))
                               for currency, amount in sorted(cost.items())},
            "gap_minutes": round(gap_seconds / 60, 1),
            "inexact_sessions": sum(1 for s in inside if not s.exact)}


# -- reports --------------------------------------------------------------------------------------------------------

def report(user: User, start: datetime, end: datetime, institution: Institution | None = None,
           hub: Hub | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Usage of the hubs ``user`` may see (usage.view) in [start, end): of ``hub`` alone, or of ``institution``'s
    hubs, or all of them; by institution, then by hub, each for the whole period and for each day.  Hubs deleted
    since count for the time they lived.  ``now`` bounds running sessions and open gaps."""
    require(user, "usage.view", hub or institution)
    now = now or utcnow()
    query = db.select(Hub).where(visible(user, Hub), Hub.created_at < end,
                                 Hub.deleted_at.is_(None) | (Hub.deleted_at > start))
    if hub is not None:
        query = query.where(Hub.id == hub.id)
    elif institution is not None:
        query = query.where(Hub.institution_id == institution.id)
    hubs = list(db.session.execute(query.order_by(Hub.slug)).unique().scalars())
    ids = [h.id for h in hubs]
    spans = _spans(hubs, start, end, now)
    gaps = _gaps(hubs, start, end, now)
    prices = {h.id: h.cluster.prices for h in hubs if h.cluster.prices}
    days = days_of(start, end)

    def entry(group: list[Span], hub_ids: list[int]) -> dict[str, Any]:
        spans_gaps = [(a, b) for hub_id in hub_ids for a, b, _ in gaps.get(hub_id, [])]
        total = measure(group, start, end, {i: prices[i] for i in hub_ids if i in prices}, spans_gaps)
        total["days"] = [{"day": lo.date().isoformat(), **measure(group, lo, hi, {i: prices[i] for i in hub_ids
                                                                                    if i in prices}, spans_gaps)}
                         for lo, hi in days]
        return total

    by_institution: dict[int, list[Hub]] = defaultdict(list)
    for h in hubs:
        by_institution[h.institution_id].append(h)
    institutions = []
    for members in sorted(by_institution.values(), key=lambda group: group[0].institution.slug):
        member_ids = [h.id for h in members]
        rows = []
        for h in members:
            rows.append({"slug": h.slug, "cluster": h.cluster.name, "deleted": h.deleted_at is not None,
                         "prices": h.cluster.prices or {},
                         "gaps": [{"from": a.isoformat(), "until": b.isoformat(), "open": is_open}
                                  for a, b, is_open in gaps.get(h.id, []) if a < end and b > start],
                         **entry(spans[h.id], [h.id])})
        institutions.append({"slug": members[0].institution.slug, "name": members[0].institution.name,
                             **entry([s for i in member_ids for s in spans[i]], member_ids), "hubs": rows})
    return {"month": f"{start.year:04d}-{start.month:02d}", "from": start.isoformat(), "until": end.isoformat(),
            "generated_at": now.replace(microsecond=0).isoformat(),
            "totals": entry([s for i in ids for s in spans[i]], ids), "institutions": institutions}


def _spans(hubs: list[Hub], start: datetime, end: datetime, now: datetime) -> dict[int, list[Span]]:
    """Each hub's sessions overlapping [start, end), as spans.  A running one counts up to now, or to its hub's
    deletion; while its hub's servers go unlisted (an open gap) only up to when a sweep last saw it, inexact, until
    the hub says when it stopped.  One query."""
    found: dict[int, list[Span]] = {h.id: [] for h in hubs}
    if not hubs:
        return found
    by_id = {h.id: h for h in hubs}
    after = gap_after()
    unlisted = {h.id for h in hubs if now - (h.servers_listed_at or h.created_at) > after}
    rows = db.session.execute(db.select(ServerSession).where(
        ServerSession.hub_id.in_(sorted(by_id)), ServerSession.started < end,
        ServerSession.ended.is_(None) | (ServerSession.ended >= start))).scalars()
    for row in rows:
        hub = by_id[row.hub_id]
        if row.ended is not None:
            stop, exact = row.ended, row.end_exact
        elif hub.deleted_at is not None:
            stop, exact = min(now, hub.deleted_at), True
        elif row.hub_id in unlisted:
            stop, exact = row.last_seen, False
        else:
            stop, exact = now, True
        found[row.hub_id].append(Span((hub.institution_id, row.username), row.hub_id, row.started,
                                      max(stop, row.started), exact, row.cpu, row.memory))
    return found


def _gaps(hubs: list[Hub], start: datetime, end: datetime, now: datetime
          ) -> dict[int, list[tuple[datetime, datetime, bool]]]:
    """Each hub's gaps overlapping [start, end): the recorded ones, and an open one when its servers have not been
    listed for too long (or ever) while it lives."""
    found: dict[int, list] = defaultdict(list)
    if not hubs:
        return found
    for hub_id, gap_start, gap_end in db.session.execute(
            db.select(UsageGap.hub_id, UsageGap.start, UsageGap.end).where(
                UsageGap.hub_id.in_([h.id for h in hubs]), UsageGap.start < end, UsageGap.end > start)
            .order_by(UsageGap.start)):
        found[hub_id].append((gap_start, gap_end, False))
    after = gap_after()
    for h in hubs:
        since = h.servers_listed_at or h.created_at
        if h.deleted_at is None and since is not None and now - since > after and since < end:
            found[h.id].append((since, now, True))
    return found


def csv_text(found: dict[str, Any]) -> str:
    """The report as CSV: per institution (hub empty) and per hub, a row for the month then one for each day."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)

    def rows(institution: str, hub: str, cluster: str, entry: dict, currency: str) -> None:
        for period, values in [(found["month"], entry), *((day["day"], day) for day in entry["days"])]:
            cost = values["estimated_cost"]
            writer.writerow([period, institution, hub, cluster, values["active_users"], values["server_hours"],
                             values["peak_servers"], values["cpu_hours"], values["gb_hours"],
                             "; ".join(f"{amount:.2f}" for amount in cost.values()),
                             currency or "; ".join(cost), values["gap_minutes"], values["inexact_sessions"]])

    for institution in found["institutions"]:
        rows(institution["slug"], "", "", institution, "")
        for hub in institution["hubs"]:
            rows(institution["slug"], hub["slug"], hub["cluster"], hub, hub["prices"].get("currency", ""))
    return out.getvalue()


def month_choices(now: datetime | None = None, count: int = 13) -> list[str]:
    """The current month and the ``count - 1`` before it, newest first ("YYYY-MM")."""
    now = now or utcnow()
    year, month = now.year, now.month
    found = []
    for _ in range(count):
        found.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return found


def month_label(start: datetime) -> str:
    return f"{calendar.month_name[start.month]} {start.year}"
