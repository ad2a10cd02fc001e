"""Jinja filters that make every page say a time, a count and a rollout target the same way.

Times are stored as naive UTC (``console.models.utcnow``), so a page shows them as UTC and says so.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

from console.services.monitoring import measured


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


def sparkline(values: list[float | None] | None, label: str, width: int = 90, height: int = 22,
              css: str = "spark") -> Markup:
    """A small inline chart of ``values`` (oldest first, None where nothing was measured; monitoring.series): a line
    through each run of values, a dot for a value with no neighbour (a line through one point draws nothing), and the
    newest and highest values in its title.  Drawn here rather than in a template: the fleet table has two a row."""
    values = values or []
    known = [value for value in values if value is not None]
    if not known:
        return Markup('<span class="muted">—</span>')
    top = max(max(known), 1)
    step = width / max(len(values) - 1, 1)
    path, dots = [], []
    for i, value in enumerate(values):
        if value is None:
            continue
        x, y = round(i * step, 1), round(height - 2 - (value / top) * (height - 4), 1)
        alone_before = i == 0 or values[i - 1] is None
        path.append(f"{'M' if alone_before else 'L'}{x},{y}")
        if alone_before and (i == len(values) - 1 or values[i + 1] is None):
            dots.append(f'<circle class="point" cx="{x}" cy="{y}" r="2" fill="currentColor"/>')
    text = escape(f"{label}: now {measured(known[-1])}, peak {measured(max(known))}")
    return Markup(f'<svg class="{escape(css)}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
                  f'role="img" aria-label="{text}"><title>{text}</title><path fill="none" stroke="currentColor" '
                  f'stroke-width="1.5" d="{" ".join(path)}"/>{"".join(dots)}</svg>')


FILTERS = {"when": when, "when_precise": when_precise, "plural": plural, "rollout_target": rollout_target}
