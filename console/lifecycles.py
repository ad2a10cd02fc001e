"""The console's lifecycles beside the hub's (``clusters/lifecycle.py``): clusters, releases, rollouts and the hubs
of a rollout, each a pure :class:`~clusters.lifecycle.Machine` with its labels, colours and refusals declared once.

Services move an object only through ``MACHINE.next_state(obj.state, event)``, so a move the table does not allow is
refused with a sentence a person can act on.
"""
from __future__ import annotations

from clusters.lifecycle import Machine, StateInfo

CLUSTER = Machine(
    noun="cluster",
    states={
        "planning": StateInfo("Planning", "blue", "wait until its plan is ready"),
        "planned": StateInfo("Awaiting approval", "amber", "approve or re-plan it"),
        "applying": StateInfo("Applying", "blue", "wait until the apply ends"),
        "ready": StateInfo("Ready", "green"),
        "registered": StateInfo("Registered", "grey", "it was registered, not provisioned here"),
        # Kubernetes clusters take hubs only once their onboarding check has passed (console/services/clusters.py)
        "checking": StateInfo("Checking", "blue", "wait until its onboarding check ends"),
        "needs-setup": StateInfo("Needs setup", "amber", "fix what its onboarding check found, then check it again"),
        "failed": StateInfo("Failed", "red", "review a new plan"),
        "destroying": StateInfo("Destroying", "blue", "wait until it is destroyed"),
        "destroyed": StateInfo("Destroyed", "grey", "it no longer exists"),
    },
    table={
        **{(s, "plan"): "planning" for s in ("planning", "planned", "ready", "failed", "needs-setup")},
        ("planning", "planned"): "planned",
        ("planned", "apply"): "applying",
        ("applying", "apply"): "applying",  # a re-claimed apply
        ("applying", "applied"): "ready",  # a local cluster: nothing to check
        ("applying", "check"): "checking",  # a Kubernetes cluster: checked before it takes hubs
        # the onboarding check: queued at registration, after an apply, or asked for again (a re-claimed check stays)
        **{(s, "check"): "checking" for s in ("registered", "ready", "needs-setup", "checking")},
        ("checking", "passed"): "ready",
        ("checking", "setup_needed"): "needs-setup",
        ("checking", "fail"): "needs-setup",  # a check that could not end proves nothing: check it again
        **{(s, "destroy"): "destroying" for s in ("planned", "ready", "failed", "registered", "destroying",
                                                  "checking", "needs-setup")},
        ("destroying", "destroyed"): "destroyed",
        # forgetting a registered cluster destroys nothing, whatever its check found
        **{(s, "destroyed"): "destroyed" for s in ("registered", "ready", "checking", "needs-setup")},
        **{(s, "fail"): "failed" for s in ("planning", "applying", "destroying", "failed")},
    },
    verbs={"plan": "be planned", "planned": "be marked planned", "apply": "be applied",
           "applied": "be marked ready", "check": "be checked", "passed": "be marked ready",
           "setup_needed": "be marked as needing setup", "destroy": "be destroyed",
           "destroyed": "be marked destroyed", "fail": "be marked failed"},
    terminal=frozenset({"destroyed"}),
)
BUSY_CLUSTER_STATES = frozenset({"planning", "applying", "checking", "destroying"})

ROLLOUT = Machine(
    noun="rollout",
    states={
        "planned": StateInfo("Planned", "grey", "start it first"),
        "running": StateInfo("Running", "blue", "pause or abort it"),
        "paused": StateInfo("Paused", "amber", "resume or abort it"),
        "halted": StateInfo("Halted", "red", "fix what halted it, then resume it (or skip that hub), or abort it"),
        "aborted": StateInfo("Aborted", "grey", "it is over; plan a new rollout"),
        "done": StateInfo("Done", "green", "it is over; plan a new rollout"),
    },
    table={
        ("planned", "start"): "running",
        ("running", "pause"): "paused",
        ("paused", "resume"): "running",
        ("halted", "resume"): "running",  # after the fix it carries on from where it stopped
        **{(s, "abort"): "aborted" for s in ("planned", "running", "paused", "halted")},
        # a broken hub halts a running rollout, and one found while it is paused (its last upgrades still end)
        ("running", "halt"): "halted",
        ("paused", "halt"): "halted",
        ("running", "finish"): "done",
    },
    verbs={"start": "be started", "pause": "be paused", "resume": "be resumed", "abort": "be aborted",
           "halt": "be halted", "finish": "be finished"},
    terminal=frozenset({"aborted", "done"}),
)
ROLLOUT_ACTIONS = ("start", "pause", "resume", "abort")
"""What an operator may do to a rollout (``halt`` and ``finish`` are the driver's)."""

ROLLOUT_HUB = Machine(
    noun="hub of a rollout",
    states={
        "pending": StateInfo("Pending", "grey", "it waits for its turn"),
        "deferred": StateInfo("Deferred (blackout)", "amber", "wait until its institution's blackout ends"),
        "upgrading": StateInfo("Updating", "blue", "wait until its operation ends"),
        "upgraded": StateInfo("Updated", "green", "it has taken the change already"),
        "failed": StateInfo("Failed", "red", "retry or skip it"),
        "rolling_back": StateInfo("Rolling back", "amber", "wait until it is back on its previous release"),
        "rolled_back": StateInfo("Rolled back", "red", "retry or skip it"),
        "skipped": StateInfo("Skipped", "grey", "retry it"),
    },
    table={
        ("pending", "defer"): "deferred",
        ("deferred", "defer"): "deferred",
        ("deferred", "clear"): "pending",  # its blackout ended
        ("pending", "upgrade"): "upgrading",
        ("upgrading", "succeed"): "upgraded",
        ("upgrading", "rolled_back"): "rolled_back",  # the operation put the hub back itself
        ("upgrading", "fail"): "failed",
        ("upgraded", "fail"): "failed",  # its gate failed and nothing is to be put back (a config rollout)
        ("upgraded", "roll_back"): "rolling_back",  # its gate failed: a rollback operation puts it back
        ("rolling_back", "succeed"): "rolled_back",
        ("rolling_back", "fail"): "failed",
        # not in a state to take the change (failed, stopped, being deleted), or an operator's decision
        **{(s, "skip"): "skipped" for s in ("pending", "deferred", "upgrading", "failed", "rolled_back")},
        **{(s, "retry"): "pending" for s in ("failed", "rolled_back", "skipped")},
    },
    verbs={"defer": "be deferred", "clear": "leave its blackout", "upgrade": "be updated",
           "succeed": "be marked updated", "roll_back": "be rolled back",
           "rolled_back": "be marked rolled back", "fail": "be marked failed",
           "skip": "be skipped", "retry": "be retried"},
    terminal=frozenset(),  # an updated hub may still fail its gate; a skipped or failed one may be retried
)
HUB_ACTIONS = ("retry", "skip")
"""What an operator may do to one hub of a rollout."""

RELEASE = Machine(
    noun="release",
    states={
        "preparing": StateInfo("Preparing", "blue", "wait until it is ready"),
        "ready": StateInfo("Ready", "green"),
        "failed": StateInfo("Failed", "red", "retry its preparation or delete it"),
        "retracted": StateInfo("Retracted", "grey", "it is no longer offered; publish a new release"),
        # Never stored: a deleted release's row is gone.  Declared so a refused delete has a sentence.
        "deleted": StateInfo("Deleted", "grey", "it no longer exists"),
    },
    table={
        ("preparing", "prepared"): "ready",
        ("preparing", "fail"): "failed",
        ("failed", "retry"): "preparing",
        ("ready", "use"): "ready",  # taken by a new hub or a rollout; only a ready release is
        ("ready", "retract"): "retracted",
        **{(s, "delete"): "deleted" for s in ("ready", "failed", "retracted")},  # and only when no hub used it
    },
    verbs={"prepared": "be marked ready", "fail": "be marked failed", "retry": "be prepared again",
           "use": "be used by hubs or rolled out", "retract": "be retracted", "delete": "be deleted"},
    terminal=frozenset({"deleted"}),
)
