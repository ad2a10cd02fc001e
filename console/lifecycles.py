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
        "registered": StateInfo("Registered", "green", "it was registered, not provisioned here"),
        "failed": StateInfo("Failed", "red", "review a new plan"),
        "destroying": StateInfo("Destroying", "blue", "wait until it is destroyed"),
        "destroyed": StateInfo("Destroyed", "grey", "it no longer exists"),
    },
    table={
        **{(s, "plan"): "planning" for s in ("planning", "planned", "ready", "failed")},
        ("planning", "planned"): "planned",
        ("planned", "apply"): "applying",
        ("applying", "apply"): "applying",  # a re-claimed apply
        ("applying", "applied"): "ready",
        **{(s, "destroy"): "destroying" for s in ("planned", "ready", "failed", "registered", "destroying")},
        ("destroying", "destroyed"): "destroyed",
        ("registered", "destroyed"): "destroyed",  # forgetting a registered cluster destroys nothing
        **{(s, "fail"): "failed" for s in ("planning", "applying", "destroying", "failed")},
    },
    verbs={"plan": "be planned", "planned": "be marked planned", "apply": "be applied",
           "applied": "be marked ready", "destroy": "be destroyed", "destroyed": "be marked destroyed",
           "fail": "be marked failed"},
    terminal=frozenset({"destroyed"}),
)
BUSY_CLUSTER_STATES = frozenset({"planning", "applying", "destroying"})
