"""The Slurm backend's onboarding checks and parsers, against the session's real single-node cluster (tests/slurm.py)
and against Slurm output of the 22.05 and later JSON schemas."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from clusters import slurm
from clusters.slurm import NOT_CHECKED, NodeState, onboard
from clusters.slurm_site import Node, Partition, SiteError, SlurmSite, parse_slurmd_c, render_conf
from tests.slurm import require_slurm

pytestmark = pytest.mark.timeout(90)

PARTITIONS = ("debug", "long")


def submit(env: dict, *options: str) -> int:
    return int(slurm.run(env, "sbatch", "--parsable", "--output=/dev/null", *options).strip().split(";")[0])


def job_processes(job_id: int) -> list[int]:
    """Pids of the processes a job started (its environment says SLURM_JOB_ID)."""
    marker = f"SLURM_JOB_ID={job_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(predicate, timeout: float = 10.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


# -- with the real cluster ------------------------------------------------------------------------------------------

def test_onboarding_is_all_green(slurm_site):
    checks = onboard(slurm_site.env, PARTITIONS, job_timeout=15)

    assert [(c.name, c.ok) for c in checks] == [("slurmctld answers", True), ("partitions offered", True),
                                                ("nodes available", True), ("a test job runs", True)]
    assert "is UP" in checks[0].detail
    assert checks[1].detail == "debug (default): max 60 min, long: max 10080 min"
    assert checks[2].detail == "1 of 1 nodes usable"
    assert "ran hostname on localhost" in checks[3].detail
    assert all(c.fix == "" for c in checks)


def test_a_job_is_seen_in_the_queue_with_its_request_and_scancel_ends_it(slurm_site):
    env = slurm_site.env
    job_id = submit(env, "--partition=long", "--time=90", "--cpus-per-task=2", "--mem=100", "--job-name=nb-ada",
                    "--wrap=sleep 120")

    [job] = slurm.jobs(env, job_id)
    assert (job.partition, job.time_limit, job.cpus, job.memory_mb, job.name, job.user) == \
        ("long", 90, 2, 100, "nb-ada", "root")
    running = wait_for(lambda: [j for j in slurm.jobs(env, job_id) if j.state == "RUNNING"], what="the job running")
    assert running[0].nodes == "localhost"
    wait_for(lambda: job_processes(job_id), what="the job's processes")

    slurm.run(env, "scancel", str(job_id))

    wait_for(lambda: not slurm.jobs(env, job_id), what="the job leaving the queue")
    wait_for(lambda: not job_processes(job_id), what="the job's processes ending")


def test_a_drained_node_shows_its_reason_in_onboarding_and_on_pending_jobs(slurm_site):
    env = slurm_site.env
    slurm.run(env, "scontrol", "update", "nodename=localhost", "state=drain", "reason=scratch disk full")
    job_id = None
    try:
        job_id = submit(env, "--time=5", "--wrap=hostname")
        checks = {c.name: c for c in onboard(env, ("debug",), job_timeout=2)}

        assert checks["slurmctld answers"].ok and checks["partitions offered"].ok
        nodes = checks["nodes available"]
        assert not nodes.ok
        assert nodes.detail == "no usable node in debug; localhost drained: scratch disk full"
        assert "state=resume" in nodes.fix
        job = checks["a test job runs"]
        assert not job.ok
        assert "still PENDING after 2 s and was cancelled; Slurm's reason: ReqNodeNotAvail" in job.detail
        [pending] = wait_for(lambda: [j for j in slurm.jobs(env, job_id) if j.reason != "None"],
                             what="a reason on the pending job")
        assert pending.state == "PENDING"
        assert pending.reason in ("Resources", "ReqNodeNotAvail")
        assert pending.description
        assert not [j for j in slurm.jobs(env) if j.name == slurm.TEST_JOB_NAME]
    finally:
        if job_id:
            slurm.run(env, "scancel", str(job_id))
        slurm.run(env, "scontrol", "update", "nodename=localhost", "state=resume")
    wait_for(lambda: all(n.usable for n in slurm.nodes(env)), what="the node resuming")


def test_a_cluster_that_does_not_answer_fails_the_first_check_and_skips_the_rest(slurm_site, tmp_path):
    conf = tmp_path / "slurm.conf"
    text = slurm_site.conf.read_text()
    conf.write_text(text.replace(f"SlurmctldPort={slurm_site.ctld_port}", "SlurmctldPort=1"))
    checks = onboard({**slurm_site.env, "SLURM_CONF": str(conf)}, PARTITIONS, job_timeout=2)

    assert [c.ok for c in checks] == [False] * 4
    assert "DOWN" in checks[0].detail and "SlurmctldHost" in checks[0].fix
    assert [c.detail for c in checks[1:]] == [NOT_CHECKED] * 3

    [missing] = onboard({"PATH": str(tmp_path)})[:1]
    assert missing.detail == "scontrol is not installed on this host"


def test_an_unknown_partition_is_named(slurm_site):
    [check] = [c for c in onboard(slurm_site.env, ("debug", "gpu"), job_timeout=5) if c.name == "partitions offered"]
    assert not check.ok
    assert check.detail == "not offered: gpu (sinfo lists debug, long)"


def test_two_sites_run_side_by_side_and_stop_leaves_nothing(slurm_site):
    second = SlurmSite(partitions=(Partition("other", 10, default=True),))
    began = time.monotonic()
    try:
        second.start()
        assert time.monotonic() - began < 5
        assert second.ctld_port not in (slurm_site.ctld_port, slurm_site.slurmd_port)
        checks = onboard(second.env, ("other",), job_timeout=15)
        assert all(c.ok for c in checks), checks
        assert [p.name for p in slurm.partitions(slurm_site.env)] == list(PARTITIONS)
        pids = [proc.pid for proc in second._procs.values()]
    finally:
        second.stop()
    assert not second._site_processes()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not second.root.exists()
    assert slurm_site.running() and "is UP" in slurm.run(slurm_site.env, "scontrol", "ping")


def test_a_failed_start_says_why_and_leaves_nothing_running():
    require_slurm()
    site = SlurmSite(partitions=(Partition("bad name", 10, default=True),))
    with pytest.raises(SiteError, match="slurmctld exited with status"):
        site.start()
    assert not site._site_processes()
    assert not site.root.exists()


# -- parsers and rendering (pure) ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "minutes"), [
    ("5", 5), ("30:00", 30), ("30:01", 31), ("1:00:00", 60), ("2-12", 3600), ("7-00:00:00", 10080),
    ("1-02:03", 1563), ("UNLIMITED", None), ("INFINITE", None),
])
def test_time_limits_read_as_minutes(text, minutes):
    assert slurm.parse_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "NOT_SET", "1:2:3:4", "abc"])
def test_unreadable_time_limits_are_refused(text):
    with pytest.raises(ValueError):
        slurm.parse_minutes(text)


SQUEUE_22 = {"meta": {}, "errors": [], "jobs": [{
    "job_id": 7, "name": "jupyterhub-ada", "user_name": "ada", "partition": "debug", "job_state": "PENDING",
    "state_reason": "Resources", "state_description": "Nodes required for job are DOWN, DRAINED",
    "time_limit": 120, "cpus": 4, "memory_per_node": 2048, "memory_per_cpu": None, "nodes": ""}]}
SQUEUE_23 = {"meta": {}, "errors": [], "jobs": [{
    "job_id": 8, "name": "jupyterhub-bo", "user_name": "bo", "partition": "long", "job_state": ["RUNNING"],
    "state_reason": "None", "state_description": "",
    "time_limit": {"set": False, "infinite": True, "number": 0}, "cpus": {"set": True, "infinite": False, "number": 2},
    "memory_per_node": {"set": False, "infinite": False, "number": 0},
    "memory_per_cpu": {"set": True, "infinite": False, "number": 512}, "nodes": "n01"}]}


def test_squeue_json_of_22_05_and_later_schemas():
    [old] = slurm.parse_squeue_json(json.dumps(SQUEUE_22))
    [new] = slurm.parse_squeue_json(json.dumps(SQUEUE_23))

    assert old == slurm.Job(id=7, name="jupyterhub-ada", user="ada", partition="debug", state="PENDING",
                            reason="Resources", description="Nodes required for job are DOWN, DRAINED",
                            time_limit=120, cpus=4, memory_mb=2048, nodes="")
    assert (new.id, new.state, new.time_limit, new.cpus, new.memory_mb, new.nodes) == (8, "RUNNING", None, 2, 1024,
                                                                                       "n01")


def test_slurm_errors_and_garbage_are_refused():
    with pytest.raises(slurm.SlurmError, match="Invalid job id"):
        slurm.parse_squeue_json(json.dumps({"errors": [{"error": "Invalid job id specified"}], "jobs": []}))
    with pytest.raises(slurm.SlurmError, match="no JSON"):
        slurm.parse_squeue_json("squeue: error: something")
    with pytest.raises(slurm.SlurmError, match="no 'nodes' list"):
        slurm.parse_sinfo_json("{}")


def node(state, flags=(), reason=""):
    return {"name": "n1", "state": state, "state_flags": list(flags), "reason": reason, "partitions": ["debug"],
            "cpus": 4, "alloc_cpus": 0}


@pytest.mark.parametrize(("raw", "condition", "usable"), [
    (node("idle"), "idle", True),
    (node("mixed"), "mixed", True),
    (node("idle", ["DRAIN"], "disk"), "drained", False),
    (node("allocated", ["DRAIN"]), "draining", False),
    (node("down", ["NOT_RESPONDING"]), "down", False),
    (node("idle", ["NOT_RESPONDING"]), "down", False),
    ({**node(["IDLE", "DRAIN"]), "state_flags": None}, "drained", False),
])
def test_node_states_read_as_an_operator_says_them(raw, condition, usable):
    [parsed] = slurm.parse_sinfo_json(json.dumps({"errors": [], "nodes": [raw]}))
    assert (parsed.condition, parsed.usable) == (condition, usable)
    assert isinstance(parsed, NodeState) and parsed.partitions == ("debug",)


def test_partitions_and_records():
    text = "debug*|up|1:00:00\ndebug*|up|1:00:00\nlong|down|UNLIMITED\n"
    assert slurm.parse_partitions(text) == [slurm.PartitionInfo("debug", True, True, 60),
                                            slurm.PartitionInfo("long", False, False, None)]
    with pytest.raises(ValueError):
        slurm.parse_partitions("debug up 1:00:00")
    record = slurm.parse_record("JobId=12 JobName=wrap JobState=PENDING Reason=ReqNodeNotAvail,_Reserved ExitCode=0:0")
    assert (record["JobId"], record["JobState"], record["Reason"], record["ExitCode"]) == \
        ("12", "PENDING", "ReqNodeNotAvail,_Reserved", "0:0")


def test_rendered_configuration_is_the_one_that_works_without_cgroups():
    node_line = parse_slurmd_c("NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 "
                               "RealMemory=24105\nUpTime=0-12:18:27\n")
    assert node_line == Node(cpus=2, memory_mb=24105, sockets=1, cores_per_socket=2, threads_per_core=1)
    text = render_conf(Path("/srv/site"), node_line, 6817, 6818, "root")

    assert text == render_conf(Path("/srv/site"), node_line, 6817, 6818, "root")
    lines = text.splitlines()
    for expected in ("ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
                     "SelectTypeParameters=CR_Core", "AuthInfo=socket=/srv/site/munge/munge.socket.2",
                     "SlurmctldPort=6817", "SlurmdPort=6818",
                     "NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 "
                     "RealMemory=24105 State=UNKNOWN",
                     "PartitionName=debug Nodes=localhost Default=YES MaxTime=60 State=UP OverSubscribe=FORCE:8",
                     "PartitionName=long Nodes=localhost Default=NO MaxTime=10080 State=UP OverSubscribe=FORCE:8"):
        assert expected in lines
    assert not any("cgroup" in line.lower() for line in lines)
    with pytest.raises(ValueError):
        parse_slurmd_c("slurmd: fatal: something")

