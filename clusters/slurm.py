"""Talking to a Slurm cluster from its submit host: onboarding checks and the parsers for what Slurm prints.

Everything goes through Slurm's own client commands (``scontrol``, ``sinfo``, ``squeue``, ``sbatch``, ``scancel``)
run with an explicit environment (``SLURM_CONF`` and ``PATH`` at least), never a REST daemon: a centre's submit host
has the commands and munge, while slurmrestd is an optional extra few centres expose.

``sinfo --json`` and ``squeue --json`` are read where Slurm offers them (22.05 does, without slurmrestd: the openapi
plugins ship with the client).  Their schema moved between releases (22.05 writes ``"time_limit": 60`` and
``"job_state": "PENDING"``, 23.02 and later ``{"set": true, "infinite": false, "number": 60}`` and
``["PENDING"]``); the parsers read both.  Partitions come from a fixed ``sinfo --format`` because 22.05's
``sinfo --json`` lists nodes only.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass

from clusters.base import Check

NOT_CHECKED = "not checked: slurmctld does not answer"
TEST_JOB_NAME = "hubfleet-onboarding"
COMMAND_TIMEOUT = 15.0
# Node state words (base state or flag) that mean the scheduler will not start a job there.
UNUSABLE = frozenset({"DOWN", "DRAIN", "FAIL", "NOT_RESPONDING", "POWERED_DOWN", "POWER_DOWN", "FUTURE",
                      "INVALID", "INVALID_REG", "UNKNOWN", "MAINTENANCE", "REBOOT_REQUESTED", "REBOOT_ISSUED"})
FINISHED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                      "BOOT_FAIL", "DEADLINE"})


class SlurmError(Exception):
    """A Slurm command failed or printed something unreadable; the message is what Slurm said."""


@dataclass(frozen=True)
class Job:
    """One job as ``squeue`` shows it.  ``time_limit`` in minutes (None: unlimited), ``memory_mb`` per node (None:
    not requested), ``reason`` is Slurm's short reason ("Resources", "Priority", "None") and ``description`` its
    longer text when it gives one."""

    id: int
    name: str
    user: str
    partition: str
    state: str
    reason: str
    description: str
    time_limit: int | None
    cpus: int
    memory_mb: int | None
    nodes: str


@dataclass(frozen=True)
class NodeState:
    """One node as ``sinfo`` shows it: its base state and flags (upper case, e.g. ``{"IDLE", "DRAIN"}``), the
    reason an operator or Slurm gave, and the partitions it belongs to."""

    name: str
    states: frozenset[str]
    reason: str
    partitions: tuple[str, ...]
    cpus: int
    alloc_cpus: int

    @property
    def usable(self) -> bool:
        """Whether the scheduler may start jobs on the node (not down, drained, failing, powered off...)."""
        return not (self.states & UNUSABLE)

    @property
    def condition(self) -> str:
        """The node's state in one word, as an operator says it: drained, draining, down, idle, mixed..."""
        if self.states & {"DOWN", "NOT_RESPONDING"}:
            return "down"
        if "DRAIN" in self.states:
            return "draining" if self.states & {"ALLOCATED", "MIXED", "COMPLETING"} else "drained"
        if "FAIL" in self.states:
            return "failing"
        for word in ("ALLOCATED", "MIXED", "IDLE", "COMPLETING", "RESERVED"):
            if word in self.states:
                return word.lower()
        return ", ".join(sorted(self.states)).lower() or "unknown"


@dataclass(frozen=True)
class PartitionInfo:
    """One partition: whether it is the cluster's default and accepts jobs (``up``), its MaxTime in minutes (None:
    unlimited)."""

    name: str
    default: bool
    up: bool
    max_minutes: int | None


# -- parsers (pure) ---------------------------------------------------------------------------------------------------

def parse_minutes(text: str) -> int | None:
    """Slurm's time limit text in minutes, rounded up: ``30``, ``30:00``, ``1:00:00``, ``2-12``, ``7-00:00:00``;
    None for ``UNLIMITED``/``INFINITE``.  Raises ValueError for anything else (``NOT_SET``, ``INVALID``, "")."""
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ValueError(f"not a Slurm time limit: {text!r}")
    days, first, second, third = match.groups()
    if days is not None:
        # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
    elif third is not None:
        hours, minutes, seconds = int(first), int(second), int(third)
    elif second is not None:
        hours, minutes, seconds = 0, int(first), int(second)
    else:
        hours, minutes, seconds = 0, int(first), 0
    total = int(days or 0) * 1440 + hours * 60 + minutes
    return total + (1 if seconds else 0)


def _number(value) -> int | None:
    """A number as 22.05 writes it (plain) or as 23.02+ does (``{"set", "infinite", "number"}``); None when unset or
    infinite."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if value is None or isinstance(value, bool):
        return None
    return int(value)


def _words(value) -> list[str]:
    """A state as 22.05 writes it (one string) or as 23.02+ does (a list), upper case."""
    if isinstance(value, str):
        return [value.upper()] if value else []
    return [str(item).upper() for item in value or []]


def _document(text: str, key: str) -> list[dict]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SlurmError(f"Slurm printed no JSON: {text.strip()[:200]!r}") from exc
    errors = [e.get("error") or e.get("description") or str(e) for e in data.get("errors") or []
              if isinstance(e, dict)]
    if errors:
        raise SlurmError("; ".join(map(str, errors)))
    items = data.get(key)
    if not isinstance(items, list):
        raise SlurmError(f"Slurm's JSON has no {key!r} list")
    return items


def parse_squeue_json(text: str) -> list[Job]:
    """The jobs of ``squeue --json`` (22.05's schema or a later one).  Raises SlurmError when the output is not
    JSON, carries Slurm errors, or has no job list."""
    jobs = []
    for item in _document(text, "jobs"):
        memory = _number(item.get("memory_per_node"))
        if memory is None and _number(item.get("memory_per_cpu")) is not None:
            memory = _number(item.get("memory_per_cpu")) * (_number(item.get("cpus")) or 1)
        states = _words(item.get("job_state"))
        jobs.append(Job(id=int(_number(item.get("job_id")) or 0), name=item.get("name") or "",
                        user=item.get("user_name") or "", partition=item.get("partition") or "",
                        state=states[0] if states else "UNKNOWN", reason=item.get("state_reason") or "",
                        description=item.get("state_description") or "",
                        time_limit=_number(item.get("time_limit")), cpus=_number(item.get("cpus")) or 0,
                        memory_mb=memory, nodes=item.get("nodes") or ""))
    return jobs


def parse_sinfo_json(text: str) -> list[NodeState]:
    """The nodes of ``sinfo --json`` with their states, reasons and partitions (22.05's schema or a later one)."""
    nodes = []
    for item in _document(text, "nodes"):
        states = frozenset(_words(item.get("state")) + _words(item.get("state_flags")))
        nodes.append(NodeState(name=item.get("name") or item.get("hostname") or "", states=states,
                               reason=(item.get("reason") or "").strip(),
                               partitions=tuple(item.get("partitions") or ()), cpus=_number(item.get("cpus")) or 0,
                               alloc_cpus=_number(item.get("alloc_cpus")) or 0))
    return nodes


PARTITION_FORMAT = "--format=%P|%a|%l"


def parse_partitions(text: str) -> list[PartitionInfo]:
    """The partitions of ``sinfo --noheader --format=%P|%a|%l`` (name with ``*`` on the default, availability, time
    limit), once each in the order Slurm lists them.  Raises ValueError on a line of another shape."""
    seen: dict[str, PartitionInfo] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split("|")
        if len(parts) != 3:
            raise ValueError(f"not a partition line: {line!r}")
        name, avail, limit = parts
        default = name.endswith("*")
        name = name.rstrip("*")
        seen.setdefault(name, PartitionInfo(name=name, default=default, up=avail.strip().lower() == "up",
                                            max_minutes=parse_minutes(limit)))
    return list(seen.values())


def parse_record(text: str) -> dict[str, str]:
    """One ``scontrol show ... -o`` record (``JobId=12 JobName=wrap JobState=PENDING Reason=Resources ...``) as a
    dict of its top-level keys; a value runs to the next space."""
    return dict(re.findall(r"(?:^|\s)([A-Za-z][\w:/]*)=(\S*)", text))


# -- running the commands ---------------------------------------------------------------------------------------------

def run(env: dict[str, str], *argv: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """The standard output of one Slurm command run with ``env``; SlurmError with Slurm's own message when it fails,
    is missing or hangs."""
    try:
        result = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise SlurmError(f"{argv[0]} is not installed on this host") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{argv[0]} did not answer within {timeout:.0f} s") from exc
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        raise SlurmError(message[:500] or f"{argv[0]} exited with status {result.returncode}")
    return result.stdout


def jobs(env: dict[str, str], *job_ids: int, finished: bool = False) -> list[Job]:
    """The cluster's jobs (or just ``job_ids``) from ``squeue --json``: pending, running and completing ones, and
    with ``finished`` also those that ended within the last MinJobAge seconds (``squeue --json`` lists them, plain
    ``squeue`` does not), whose state and reason say how they ended."""
    argv = ["squeue", "--json"] + ([f"--jobs={','.join(map(str, job_ids))}"] if job_ids else [])
    found = parse_squeue_json(run(env, *argv))
    return [job for job in found
            if (not job_ids or job.id in job_ids) and (finished or job.state not in FINISHED)]


def nodes(env: dict[str, str]) -> list[NodeState]:
    """Every node with its state and reason, from ``sinfo --json``."""
    return parse_sinfo_json(run(env, "sinfo", "--json"))


def partitions(env: dict[str, str]) -> list[PartitionInfo]:
    """Every partition, from ``sinfo``."""
    return parse_partitions(run(env, "sinfo", "--noheader", PARTITION_FORMAT))


# -- onboarding -------------------------------------------------------------------------------------------------------

PING_FIX = ("start slurmctld on the controller; check that SLURM_CONF on this host names it (SlurmctldHost, "
            "SlurmctldPort) and that munged runs here with the cluster's key")
PARTITION_FIX = ("offer the partitions in slurm.conf (PartitionName=... State=UP) and run `scontrol reconfigure`, "
                 "or register the cluster with the partitions it has")
NODE_FIX = "fix the cause, then `scontrol update nodename=<node> state=resume`"
JOB_FIX = ("read SlurmdLogFile on the node that ran it: a job that fails at once usually means process tracking "
           "(cgroups) does not work there or the user is unknown on the node")


def onboard(env: dict[str, str], expected: tuple[str, ...] = (), job_timeout: float = 30.0) -> list[Check]:
    """Whether hubs can start servers on this Slurm cluster, check by check, each failure with its fix: slurmctld
    answers ``scontrol ping``; the ``expected`` partitions exist and are up (any partition when none are expected);
    each of them has a node the scheduler may use (drained or down nodes named with their reasons); a test job
    (``hostname``, one minute limit) submitted to the first expected partition runs and succeeds within
    ``job_timeout`` seconds, else is cancelled and reported with Slurm's reason.  Never raises."""
    try:
        answer = run(env, "scontrol", "ping").strip()
        if "UP" not in answer:
            raise SlurmError(answer or "scontrol ping printed nothing")
    except SlurmError as exc:
        return [Check("slurmctld answers", False, str(exc), PING_FIX),
                Check("partitions offered", False, NOT_CHECKED, PARTITION_FIX),
                Check("nodes available", False, NOT_CHECKED, NODE_FIX),
                Check("a test job runs", False, NOT_CHECKED, JOB_FIX)]
    checks = [Check("slurmctld answers", True, answer)]
    for name, fix, check in (("partitions offered", PARTITION_FIX, lambda: _check_partitions(env, expected)),
                             ("nodes available", NODE_FIX, lambda: _check_nodes(env, expected)),
                             ("a test job runs", JOB_FIX, lambda: _check_job(env, expected, job_timeout))):
        try:
            ok, detail = check()
        except (SlurmError, ValueError, OSError, subprocess.SubprocessError) as exc:
            ok, detail = False, str(exc)
        checks.append(Check(name, ok, detail, "" if ok else fix))
    return checks


def _check_partitions(env, expected) -> tuple[bool, str]:
    offered = {p.name: p for p in partitions(env)}
    if not offered:
        return False, "sinfo lists no partition"
    wanted = expected or tuple(offered)
    absent = [name for name in wanted if name not in offered]
    down = [name for name in wanted if name in offered and not offered[name].up]
    if absent or down:
        said = ([f"not offered: {', '.join(absent)} (sinfo lists {', '.join(offered)})"] if absent else []) + \
               ([f"not up: {', '.join(down)}"] if down else [])
        return False, "; ".join(said)
    return True, ", ".join(_describe(offered[name]) for name in wanted)


def _describe(part: PartitionInfo) -> str:
    limit = "no time limit" if part.max_minutes is None else f"max {part.max_minutes} min"
    return f"{part.name}{' (default)' if part.default else ''}: {limit}"


def _check_nodes(env, expected) -> tuple[bool, str]:
    found = nodes(env)
    unusable = [n for n in found if not n.usable]
    said = [f"{n.name} {n.condition}" + (f": {n.reason}" if n.reason else "") for n in unusable[:5]]
    if len(unusable) > 5:
        said.append(f"and {len(unusable) - 5} more")
    wanted = expected or tuple(dict.fromkeys(p for n in found for p in n.partitions))
    empty = [p for p in wanted if not any(n.usable and p in n.partitions for n in found)]
    if not found or empty:
        head = f"no usable node in {', '.join(empty)}" if found else "sinfo lists no node"
        return False, "; ".join([head] + said)
    usable = sum(n.usable for n in found)
    return True, "; ".join([f"{usable} of {len(found)} nodes usable"] + said)


def _check_job(env, expected, job_timeout) -> tuple[bool, str]:
    argv = ["sbatch", "--parsable", f"--job-name={TEST_JOB_NAME}", "--time=1", "--ntasks=1", "--output=/dev/null",
            "--wrap=hostname"] + ([f"--partition={expected[0]}"] if expected else [])
    job_id = run(env, *argv).strip().split(";")[0]
    began = time.monotonic()
    record: dict[str, str] = {}
    waiting: list[Job] = []
    try:
        while time.monotonic() - began < job_timeout:
            record = parse_record(run(env, "scontrol", "show", "job", "--oneliner", job_id))
            if record.get("JobState") in FINISHED:
                break
            time.sleep(0.1)
    finally:
        if record.get("JobState") not in FINISHED:
            waiting = jobs(env, int(job_id))
            run(env, "scancel", job_id)
    state, reason = record.get("JobState", "?"), record.get("Reason", "")
    if state not in FINISHED and waiting:
        reason = waiting[0].reason + (f" ({waiting[0].description})" if waiting[0].description else "")
    took = time.monotonic() - began
    if state == "COMPLETED" and record.get("ExitCode") == "0:0":
        return True, f"job {job_id} ran hostname on {record.get('NodeList', '?')} in {took:.1f} s"
    if state in FINISHED:
        return False, f"job {job_id} ended {state} (exit code {record.get('ExitCode', '?')}, reason {reason})"
    return False, f"job {job_id} was still {state} after {job_timeout:.0f} s and was cancelled; Slurm's reason: {reason}"
