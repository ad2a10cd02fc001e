"""Every lifecycle declared in clusters/lifecycle.py and console/lifecycles.py, walked (state, event) by (state, event):
each move either lands on a declared state or is refused with a sentence a person can act on; nothing else."""
import pytest

from clusters import lifecycle
from clusters.lifecycle import InvalidTransition, Machine
from console import lifecycles
from console.status import BADGES

MACHINES = {f"{module.__name__}.{name}": machine for module in (lifecycle, lifecycles)
            for name, machine in vars(module).items() if isinstance(machine, Machine)}


def test_the_walk_finds_every_machine():
    assert {"clusters.lifecycle.HUB", "console.lifecycles.CLUSTER", "console.lifecycles.ROLLOUT",
            "console.lifecycles.ROLLOUT_HUB"} <= set(MACHINES)


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_state_and_event_moves_or_is_refused_with_a_sentence(name):
    machine = MACHINES[name]
    events = sorted(machine.verbs) + ["no-such-event"]
    for state in [*machine.states, "no-such-state"]:
        for event in events:
            try:
                reached = machine.next_state(state, event)
            except InvalidTransition as exc:
                sentence = str(exc)
                assert sentence and sentence[0].isupper() and sentence.endswith("."), (state, event, sentence)
                assert machine.noun in sentence and not machine.allows(state, event)
            else:
                assert reached in machine.states and machine.allows(state, event), (state, event)
                assert event in machine.allowed_events(state)
    for state in machine.terminal:
        assert not machine.allowed_events(state), f"terminal state {state} has moves"


def test_rollout_badges_come_from_their_machines():
    assert BADGES["rollout"] == lifecycles.ROLLOUT.badges()
    assert BADGES["rollout_hub"] == lifecycles.ROLLOUT_HUB.badges()
    assert set(BADGES["rollout"]).isdisjoint({"pending", "upgrading", "rolled_back"})
