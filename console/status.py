"""Every status value the console shows, with its label and colour, declared once."""
from clusters.lifecycle import STATES

from console.models import FAILED, QUEUED, RUNNING, SUCCEEDED

HEALTHY, DEGRADED, DOWN, UNKNOWN = "healthy", "degraded", "down", "unknown"

BADGES: dict[str, dict[str, tuple[str, str]]] = {
    "hub": {name: (info.label, info.colour) for name, info in STATES.items()},
    "health": {
        HEALTHY: ("Healthy", "green"),
        DEGRADED: ("Degraded", "amber"),
        DOWN: ("Down", "red"),
        UNKNOWN: ("Unknown", "grey"),
    },
    "cluster": {
        "planning": ("Planning", "blue"),
        "planned": ("Awaiting approval", "amber"),
        "applying": ("Applying", "blue"),
        "ready": ("Ready", "green"),
        "registered": ("Registered", "green"),
        "failed": ("Failed", "red"),
        "destroying": ("Destroying", "blue"),
        "destroyed": ("Destroyed", "grey"),
    },
    "rollout": {
        "planned": ("Planned", "grey"), "running": ("Running", "blue"), "paused": ("Paused", "amber"),
        "halted": ("Halted", "red"), "aborted": ("Aborted", "grey"), "done": ("Done", "green"),
        "pending": ("Pending", "grey"), "deferred": ("Deferred (blackout)", "amber"),
        "upgrading": ("Upgrading", "blue"), "upgraded": ("Upgraded", "green"),
        "rolling_back": ("Rolling back", "amber"), "rolled_back": ("Rolled back", "red"), "failed": ("Failed", "red"),
    },
    "operation": {
        QUEUED: ("Queued", "grey"),
        RUNNING: ("Running", "blue"),
        SUCCEEDED: ("Succeeded", "green"),
        FAILED: ("Failed", "red"),
    },
}


def badge(value: str | None, kind: str) -> tuple[str, str]:
    """(label, colour) for a status value; unknown values show as themselves in grey."""
    return BADGES[kind].get(value or "", (value or "—", "grey"))
