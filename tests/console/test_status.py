"""The one status a person reads for a hub, and the badges declared once (console/status.py)."""
from datetime import datetime
from types import SimpleNamespace

import pytest

from clusters import lifecycle
from console.lifecycles import CLUSTER
from console.models import OPERATION_STATES, OUTCOMES
from console.status import BADGES, hub_status

NOW = datetime(2026, 11, 29, 14, 0, 0)
SINCE = datetime(2026, 11, 29, 13, 17, 2)
COLOURS = {"green", "amber", "red", "blue", "grey"}


def hub(state="running", health="healthy", message="answering", since=SINCE, restarts=0, desired="running",
        deleted_at=None):
    return SimpleNamespace(state=state, health=health, status_message=message, health_since=since,
                           restart_count=restarts, desired=desired, deleted_at=deleted_at)


def op(kind="restart", state="running", note="", actor="ops@example.org", started_at=SINCE, outcome=None,
       error=""):
    return SimpleNamespace(kind=kind, state=state, note=note, actor=actor, started_at=started_at, outcome=outcome,
                           error=error)


def test_a_healthy_hub_is_running_since_it_answered():
    assert hub_status(hub(), now=NOW) == ("Running", "green", "answering since 13:17:02 UTC", "healthy")


def test_a_down_hub_says_why_and_since_when():
    down = hub(health="down", message="no answer to 3 probes in a row: connection refused", state="degraded")
    assert hub_status(down, now=NOW) == (
        "Down", "red", "no answer to 3 probes in a row since 13:17:02 UTC (connection refused)", "down")
    # A day later the date is part of it.
    assert hub_status(down, now=datetime(2026, 11, 30, 9, 0)).reason.startswith(
        "no answer to 3 probes in a row since 2026-11-29 13:17 UTC")


def test_a_down_hub_counts_its_restarts():
    down = hub(health="down", message="its processes are not running: found gone by the supervisor", restarts=2)
    assert hub_status(down, now=NOW, max_restarts=5).reason.endswith("; restarted 2 of 5 time(s) so far")


def test_degraded_and_not_yet_probed():
    slow = hub(health="degraded", message="answers slowly (median 1.4s)", state="degraded")
    assert hub_status(slow, now=NOW)[:3] == ("Degraded", "amber", "answers slowly (median 1.4s) since 13:17:02 UTC")
    fresh = hub(health="unknown", message="", since=None)
    assert hub_status(fresh, now=NOW)[:3] == ("Running", "grey", "not probed yet")


def test_a_supervised_restart_says_why_and_which_restart():
    restarting = hub(state="provisioning", health="down", restarts=1,
                     message="its processes are not running: found gone by the supervisor")
    waiting = op(kind="reconcile", state="waiting", note="waiting for the hub to answer /hub/health",
                 actor="hubfleet-supervisor")
    assert hub_status(restarting, waiting, now=NOW, max_restarts=5) == (
        "Restarting", "blue",
        "its processes are not running (restart 1 of 5); waiting for the hub to answer /hub/health", "restarting")


def test_an_operation_in_progress_says_what_it_waits_for():
    upgrading = hub(state="upgrading")
    status = hub_status(upgrading, op(kind="upgrade", state="waiting",
                                      note="waiting for the hub to answer /hub/health"), now=NOW)
    assert status == ("Upgrading", "blue", "waiting for the hub to answer /hub/health", "upgrading")
    # Claimed but nothing to wait for yet: who started it and when.
    assert hub_status(upgrading, op(kind="upgrade"), now=NOW).reason == "started 13:17:02 UTC by ops@example.org"


def test_a_queued_operation_waits_for_a_worker_and_says_how_the_hub_is_meanwhile():
    down = hub(health="down", message="no answer to 3 probes in a row", state="degraded")
    status = hub_status(down, op(state="queued"), now=NOW)
    assert status.label == "Queued: restart" and status.colour == "grey" and status.key == "queued"
    assert status.reason == "waiting for a worker; meanwhile down: no answer to 3 probes in a row since 13:17:02 UTC"
    new = hub(state="requested", health="unknown", message="", since=None)
    assert hub_status(new, op(kind="create", state="queued"), now=NOW)[:3] == (
        "Queued: create", "grey", "waiting for a worker")


def test_a_failed_hub_says_why_whatever_its_last_probe_said():
    # The monitor does not probe a failed hub, so its health may still read "healthy": the status says Failed.
    broken = hub(state="failed", health="healthy", message="answering")
    failed_op = op(kind="upgrade", state="failed", outcome="failed",
                   error="the hub did not become healthy within 120s (connection refused)")
    assert hub_status(broken, failed_op, now=NOW) == (
        "Failed", "red", "the hub did not become healthy within 120s (connection refused)", "failed")
    assert hub_status(hub(state="failed", message=""), now=NOW).reason == "its last operation failed"
    crashing = hub(state="failed", health="down", restarts=5,
                   message="keeps crashing: restarted 5 times, down again; ModuleNotFoundError: no module x")
    earlier = op(kind="reconcile", state="succeeded", outcome="succeeded")
    assert hub_status(crashing, earlier, now=NOW, max_restarts=5).reason.startswith("keeps crashing: restarted 5")


def test_deleting_and_deleted():
    assert hub_status(hub(desired="deleted"), op(kind="delete", state="running", started_at=None), now=NOW)[:3] == (
        "Deleting", "blue", "by ops@example.org")
    gone = hub(state="deleted", deleted_at=datetime(2026, 11, 29, 13, 2, 30))
    assert hub_status(gone, now=NOW) == ("Deleted", "grey", "it was deleted on 2026-11-29 13:02 UTC", "deleted")


def test_a_check_or_a_finished_operation_leaves_the_observed_status():
    assert hub_status(hub(), op(kind="synthetic-check", state="running"), now=NOW)[:3] == (
        "Running", "green", "answering since 13:17:02 UTC; synthetic check in progress")
    done = op(kind="restart", state="succeeded", outcome="succeeded")
    assert hub_status(hub(), done, now=NOW) == hub_status(hub(), now=NOW)


@pytest.mark.parametrize("state", sorted(lifecycle.STATES))
@pytest.mark.parametrize("health", ["healthy", "degraded", "down", "unknown"])
def test_every_combination_reads_as_one_status(state, health):
    """Whatever the lifecycle state, health and operation, there is one label, a known colour and a reason."""
    pending = [None] + [op(kind=k, state=s, note=n) for k in ("create", "reconcile", "restart", "upgrade",
                                                                "reconfigure", "rollback", "delete", "synthetic-check")
                        for s in ("queued", "running", "waiting") for n in ("", "waiting for /hub/health")]
    finished = [op(state="failed", outcome=o, error="it broke") for o in OUTCOMES]
    for current in pending + finished:
        for restarts in (0, 1, 5):
            status = hub_status(hub(state=state, health=health, restarts=restarts,
                                    message="" if health == "unknown" else "why: detail"),
                                current, now=NOW, max_restarts=5)
            assert status.label and status.reason and status.colour in COLOURS, (state, health, current)
            assert status.key == status.key.lower() and " " not in status.key
            if state == "failed" and (current is None or current.state not in ("queued", "running", "waiting")):
                assert status.label == "Failed"  # never "Failed · Healthy" again
            if state == "deleted":
                assert status.label == "Deleted"


def test_badges_are_declared_once_from_the_machines():
    assert BADGES["cluster"] == CLUSTER.badges()
    assert set(BADGES["outcome"]) == set(OUTCOMES)
    assert set(BADGES["operation"]) == set(OPERATION_STATES)
    assert all(colour in COLOURS for row in BADGES.values() for _, colour in row.values())
