"""Jinja filters that make every page say a time, a count and a rollout target the same way.

Times are stored as naive UTC (``console.models.utcnow``), so a page shows them as UTC and says so.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any


def _moment(value: datetime | str | None) -> datetime | None:
    """A stored time: a datetime, or the ISO text a JSON column keeps (a cluster's plan time)."""
    return datetime.fromisoformat(value) if isinstance(value, str) and value else (value or None)


def when(moment: datetime | str | None, empty: str = "—") -> str:
    """A time to the minute, as every page shows one: "2026-11-29 23:14 UTC" (``empty`` for None)."""
    moment = _moment(moment)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else empty


def when_precise(moment: datetime | str | None, empty: str = "—") -> str:
    """A time to the second, where seconds tell events apart (operation and audit logs): "2026-11-29 23:14:05 UTC"."""
    moment = _moment(moment)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else empty


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """"1 hub", "3 hubs"; ``nouns`` for a plural that is not the noun plus "s" ("1 policy", "2 policies")."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def rollout_target(target: Any) -> str:
    """A rollout's target as words: "channel stable", "institution north", "hubs north-a, north-b"."""
    if not isinstance(target, dict) or not target:
        return str(target or "")
    return "; ".join(f"{kind} {', '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
                     for kind, value in target.items())


FILTERS = {"when": when, "when_precise": when_precise, "plural": plural, "rollout_target": rollout_target}
