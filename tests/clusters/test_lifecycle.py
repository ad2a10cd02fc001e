import pytest

from clusters import lifecycle
from clusters.lifecycle import InvalidTransition, next_state


def test_happy_path_from_request_to_deleted():
    state = lifecycle.REQUESTED
    for event, expected in [("provision", "provisioning"), ("ready", "running"), ("unhealthy", "degraded"),
                            ("healthy", "running"), ("delete", "deleting"), ("removed", "deleted")]:
        state = next_state(state, event)
        assert state == expected


@pytest.mark.parametrize("state,event", [("deleted", "provision"), ("deleted", "delete"), ("requested", "ready"),
                                         ("running", "removed"), ("running", "no-such-event")])
def test_impossible_moves_are_refused(state, event):
    with pytest.raises(InvalidTransition):
        next_state(state, event)


def test_terminal_states_have_no_way_out():
    for state in lifecycle.TERMINAL:
        assert lifecycle.allowed_events(state) == []


def test_every_state_in_the_table_is_declared_with_a_label():
    named = {s for s, _ in lifecycle.TABLE} | set(lifecycle.TABLE.values())
    assert named <= set(lifecycle.STATES)


def test_every_live_state_can_be_deleted():
    for state in set(lifecycle.STATES) - lifecycle.TERMINAL:
        assert next_state(state, "delete") == lifecycle.DELETING
