"""Slurm's reasons in words: every reason a server's job meets says what happens and what to do."""
from __future__ import annotations

import pytest

from clusters.slurm_reasons import ENDED, PENDING, explain


@pytest.mark.parametrize("reason, words", [
    ("Resources", "The partition is full: your server starts when a node frees up."),
    ("Priority", "Other jobs are ahead of yours in the queue"),
    ("PartitionTimeLimit", "The time limit asked is longer than the partition allows: pick a shorter profile"),
    ("PartitionNodeLimit", "more nodes, CPUs or memory than the partition allows one job: pick a smaller profile"),
    ("QOSMaxWallDurationPerJobLimit", "longer than your QOS allows: pick a shorter profile"),
    ("ReqNodeNotAvail", "The nodes your server needs are not available (drained, down or reserved"),
    ("ReqNodeNotAvail, UnavailableNodes:n[01-04]", "The nodes your server needs are not available"),
    ("UnavailableNodes:n01", "The nodes your server needs are not available"),
    ("PartitionDown", "The partition is closed by the centre"),
    ("BadConstraints", "No node has what the job asks for"),
    ("InvalidQOS", "The QOS the profile names does not exist for you"),
    ("launch failed requeued held", "could not be launched on its node"),
    ("QOSMaxCpuPerUserLimit", "your share of the cluster allows"),
    ("AssocGrpCpuLimit", "your share of the cluster allows"),
    ("QOSGrpWallDurationLimit", "longer than your QOS allows"),
])
def test_pending_reasons_in_words(reason, words):
    assert words in explain(reason)


@pytest.mark.parametrize("state, words", [
    ("NODE_FAIL", "The node running your server failed"),
    ("OUT_OF_MEMORY", "used more memory than its profile gives it"),
    ("TIMEOUT", "reached its time limit"),
    ("FAILED", "exited with an error"),
    ("PREEMPTED", "A job with higher priority needed the node"),
    ("BOOT_FAIL", "could not boot"),
])
def test_how_a_job_ended_in_words(state, words):
    assert words in explain("None", {"state": state})
    assert words in explain(state)


def test_what_is_known_of_the_job_makes_the_words_precise():
    assert explain("Resources", {"partition": "debug"}).startswith("Partition debug is full")
    assert explain("PartitionTimeLimit", {"partition": "debug", "time_minutes": 300}).startswith(
        "The time limit asked (300 minutes) is longer than partition debug allows")
    # Slurm says Resources when the partition's only nodes are drained: the partition is not full, its nodes are out
    assert explain("Resources", {"nodes_available": False}).startswith("The nodes your server needs are not")
    # a job refused at submission is recorded as FAILED with the reason it could not start
    assert explain("BadConstraints", {"state": "FAILED"}).startswith(
        "The server's job could not start. No node has what the job asks for")
    # a job cancelled while it waited says why it waited, without advice for a job still waiting
    assert explain("ReqNodeNotAvail", {"state": "CANCELLED"}) == (
        "The server's job was cancelled before it started (stopped, or it waited too long). Why it waited: the "
        "nodes your server needs are not available (drained, down or reserved for maintenance).")


def test_an_unknown_reason_is_given_in_slurm_s_words_and_nothing_is_ever_empty():
    assert explain("FrontEndDown") == "Slurm says: FrontEndDown."
    assert explain("") == "Slurm says: no reason given."
    assert all(explain(reason) for reason in PENDING)
    assert all(explain("None", {"state": state}) for state in ENDED)
