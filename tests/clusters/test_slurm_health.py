"""A hub's view of Slurm, against the session's real single-node cluster (tests/slurm.py): a server's job that cannot
start shows Slurm's reason in words, waiting jobs their queue wait, nodes their state and reason.  Each test puts the
cluster back as it found it."""
from __future__ import annotations

import time

import pytest

from clusters import slurm
from clusters.slurm_health import client_env, hub_view, job_name_prefix
from tests.clusters.test_slurm import submit, wait_for

pytestmark = pytest.mark.timeout(90)


def real_memory_mb(env) -> int:
    return int(slurm.parse_record(slurm.run(env, "scontrol", "show", "node", "localhost", "--oneliner"))
               ["RealMemory"])


def test_a_job_asking_more_memory_than_any_node_has_is_shown_failed_with_the_reason_in_words(slurm_site):
    env = slurm_site.env
    prefix = job_name_prefix("mem-hub")
    with pytest.raises(slurm.SlurmError, match="Memory specification can not be satisfied"):
        submit(env, f"--job-name={prefix}ada", f"--mem={real_memory_mb(env) * 2}", "--time=5", "--wrap=hostname")

    view = hub_view(env, prefix, partitions=("debug", "long"))

    assert view.error == "" and not view.pending and not view.running
    [job] = [j for j in view.failed if j.user == "ada"]
    assert (job.state, job.reason, job.ran_seconds, job.partition) == ("FAILED", "BadConstraints", None, "debug")
    assert job.explanation.startswith("The server's job could not start. No node has what the job asks for (more "
                                      "memory, CPUs or GPUs than any node has)")
    # another hub's view does not show it, nor that of hub "mem" told of the longer slug "mem-hub" on the cluster
    assert not hub_view(env, job_name_prefix("other")).failed
    assert not hub_view(env, job_name_prefix("mem"), exclude_prefixes=(prefix,)).failed


def test_a_drained_node_holds_the_hub_s_server_and_the_view_says_why_and_since_when(slurm_site):
    env = slurm_site.env
    prefix = job_name_prefix("drain-hub")
    slurm.run(env, "scontrol", "update", "nodename=localhost", "state=drain", "reason=scratch disk full")
    job_ids = []
    try:
        job_ids.append(submit(env, f"--job-name={prefix}bob", "--time=5", "--wrap=sleep 60"))
        # a hub whose slug starts like this one's: its jobs are its own
        job_ids.append(submit(env, f"--job-name={job_name_prefix('drain-hub-b')}eve", "--time=5",
                              "--wrap=sleep 60"))
        wait_for(lambda: all(j.reason != "None" for j in slurm.jobs(env, *job_ids)), what="reasons on the jobs")

        later = time.time() + 120
        view = hub_view(env, prefix, exclude_prefixes=(job_name_prefix("drain-hub-b"),), stuck_after=60, now=later)

        assert view.error == ""
        [job] = view.pending
        assert (job.id, job.user, job.state, job.partition) == (job_ids[0], "bob", "PENDING", "debug")
        assert job.reason in ("ReqNodeNotAvail", "Resources")
        assert job.explanation.startswith("The nodes your server needs are not available (drained, down or "
                                          "reserved for maintenance): it starts when they are back.")
        assert 120 <= job.waited_seconds < 150
        assert job.stuck and view.stuck == [job]
        [node] = view.nodes
        assert (node.name, node.condition, node.reason, node.usable) == \
            ("localhost", "drained", "scratch disk full", False)
        assert view.node_counts == {"drained": 1}
        data = view.as_dict()
        assert data["stuck"] == [job_ids[0]] and data["nodes"][0]["partitions"] == ["debug", "long"]
        assert not hub_view(env, prefix, stuck_after=3600).stuck

        slurm.run(env, "scancel", str(job_ids[0]))
        # cancelled while it waited (JupyterHub gave up, or the user stopped it): shown with why it waited
        [cancelled] = wait_for(lambda: hub_view(env, prefix).failed, what="the cancelled job among the failed")
        assert (cancelled.id, cancelled.state, cancelled.ran_seconds) == (job_ids[0], "CANCELLED", None)
        assert "Why it waited: the nodes your server needs are not available" in cancelled.explanation
    finally:
        slurm.run(env, "scancel", *map(str, job_ids)) if job_ids else None
        slurm.run(env, "scontrol", "update", "nodename=localhost", "state=resume")
    wait_for(lambda: all(n.usable for n in slurm.nodes(env)), what="the node resuming")
    assert hub_view(env, prefix).nodes[0].condition in ("idle", "mixed", "allocated")


def test_a_running_server_is_listed_with_its_node_and_how_long_it_waited(slurm_site):
    env = slurm_site.env
    prefix = job_name_prefix("run-hub")
    job_id = submit(env, f"--job-name={prefix}cy", "--time=5", "--wrap=sleep 60")
    try:
        [job] = wait_for(lambda: hub_view(env, prefix).running, what="the job running")
        assert (job.id, job.user, job.nodes, job.explanation) == (job_id, "cy", "localhost", "")
        assert job.waited_seconds is not None and job.ran_seconds is not None
    finally:
        slurm.run(env, "scancel", str(job_id))
    # stopped after it ran: not a failure
    wait_for(lambda: not hub_view(env, prefix).running, what="the job leaving")
    assert hub_view(env, prefix).failed == []


def test_slurm_not_answering_is_an_error_in_words_never_an_exception(slurm_site, tmp_path):
    view = hub_view({"PATH": str(tmp_path)}, job_name_prefix("any"))
    assert view.error == "Slurm did not answer: sinfo is not installed on this host"
    assert view.nodes == [] and view.pending == []

    conf = tmp_path / "slurm.conf"
    conf.write_text(slurm_site.conf.read_text().replace(f"SlurmctldPort={slurm_site.ctld_port}", "SlurmctldPort=1"))
    view = hub_view(client_env({"slurm_conf": str(conf)}), job_name_prefix("any"), timeout=20)
    assert view.error.startswith("Slurm did not answer: ")
    assert client_env({"slurm_conf": "/etc/slurm/slurm.conf"})["SLURM_CONF"] == "/etc/slurm/slurm.conf"
