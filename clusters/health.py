"""A hub's health from its recent probes, by rules declared once here.

Pure: given the newest-first list of recent samples, return the health and why.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import median

HEALTHY, DEGRADED, DOWN, UNKNOWN = "healthy", "degraded", "down", "unknown"


@dataclass(frozen=True)
class Rules:
    down_after_failures: int = 3  # consecutive failed probes
    slow_seconds: float = 1.0  # median probe time above this is degraded
    slow_window: int = 5  # probes the median looks at
    spawn_failure_window: int = 20  # a spawn failure within these probes is degraded


RULES = Rules()


@dataclass(frozen=True)
class Sample:
    up: bool
    duration: float
    spawn_failure: int | None = None
    alive: bool | None = None  # False: the hub's processes were seen gone


def derive(samples: list[Sample], rules: Rules = RULES) -> tuple[str, str]:
    """(health, reason) from samples, newest first."""
    if not samples:
        return UNKNOWN, "not probed yet"
    if samples[0].alive is False:
        return DOWN, "its processes are not running"
    failed = 0
    for sample in samples:
        if sample.up:
            break
        failed += 1
    if failed >= rules.down_after_failures:
        return DOWN, f"no answer to {failed} probes in a row"
    if failed:
        return DEGRADED, f"the last {failed} probe(s) failed"
    recent = [s.duration for s in samples[:rules.slow_window] if s.up]
    if recent and median(recent) > rules.slow_seconds:
        return DEGRADED, f"answers slowly (median {median(recent):.1f}s)"
    failures = [s.spawn_failure for s in samples[:rules.spawn_failure_window] if s.spawn_failure is not None]
    if len(failures) >= 2 and failures[0] > failures[-1]:
        return DEGRADED, f"{failures[0] - failures[-1]} server spawn(s) failed recently"
    return HEALTHY, "answering"
