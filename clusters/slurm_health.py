"""A hub's view of its Slurm cluster: the nodes its servers run on, its users' jobs waiting in the queue (for how
long, and why in words), and its jobs that ended badly a moment ago, read live from Slurm's client commands.

A hub's jobs are found by name: the spawner names each server's job ``hubfleet-<hub slug>-<user>``, so the hub's
prefix is ``hubfleet-<hub slug>-``.  Slugs may contain hyphens, so ``hubfleet-a-`` is also the start of hub
``a-b``'s jobs: the caller passes the longer prefixes of other hubs on the cluster in ``exclude_prefixes`` and the
longest matching prefix wins.

``squeue --json`` lists finished jobs for ``MinJobAge`` seconds (300 by default) after they end: that is how long a
job that failed to start stays visible with Slurm's reason.  Nothing here writes to Slurm.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from clusters import slurm
from clusters.slurm_reasons import explain

JOB_PREFIX = "hubfleet-"
DEFAULT_TIMEOUT = 5.0
DEFAULT_STUCK_AFTER = 600  # seconds pending before a server counts as stuck
MAX_NODES = 100  # nodes listed one by one; a centre's other nodes are counted only
CLIENT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/usr/local/sbin:/sbin"


def job_name_prefix(hub_slug: str) -> str:
    """The start of every job name of the hub's servers ("hubfleet-<slug>-"; the spawner appends the user)."""
    return f"{JOB_PREFIX}{hub_slug}-"


def client_env(settings: dict[str, Any]) -> dict[str, str]:
    """The environment Slurm's client commands run with for a cluster registered with ``settings``: its
    ``slurm_conf`` as SLURM_CONF, a PATH with the usual places of the commands (``settings["path"]`` when given).
    Nothing else of the console's environment is passed on."""
    return {"SLURM_CONF": str(settings.get("slurm_conf") or ""), "PATH": str(settings.get("path") or CLIENT_PATH),
            "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class NodeRow:
    """One node: its condition in one word (idle, mixed, allocated, drained, draining, down...), the reason given
    for it, its partitions and CPUs (allocated of total)."""

    name: str
    condition: str
    reason: str
    partitions: tuple[str, ...]
    cpus: int
    alloc_cpus: int
    usable: bool


@dataclass(frozen=True)
class HubJob:
    """One of the hub's jobs: whose server (``user``, from the job name), where, its state, Slurm's reason and the
    reason in words.  ``waited_seconds``: for a pending job, since submission; for a running or ended one, how long
    it waited before it started (None when it never started).  ``stuck``: pending beyond the limit."""

    id: int
    user: str
    partition: str
    state: str
    reason: str
    description: str
    explanation: str
    waited_seconds: int | None
    ran_seconds: int | None
    submitted_at: int | None  # Unix time
    nodes: str
    stuck: bool = False


@dataclass(frozen=True)
class SlurmView:
    """What the hub page's Slurm section and ``GET /api/v1/hubs/SLUG/slurm`` show.  ``error`` is set (and the
    lists may be empty) when Slurm did not answer."""

    read_at: int  # Unix time
    stuck_after_seconds: int
    nodes: list[NodeRow] = field(default_factory=list)
    node_counts: dict[str, int] = field(default_factory=dict)  # condition -> nodes, over every node considered
    nodes_left_out: int = 0
    pending: list[HubJob] = field(default_factory=list)
    running: list[HubJob] = field(default_factory=list)
    failed: list[HubJob] = field(default_factory=list)  # ended badly within MinJobAge
    error: str = ""

    @property
    def stuck(self) -> list[HubJob]:
        return [job for job in self.pending if job.stuck]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, the API's answer."""
        data = asdict(self)
        for node in data["nodes"]:
            node["partitions"] = list(node["partitions"])
        data["stuck"] = [job.id for job in self.stuck]
        return data


def _epoch(value: Any) -> int | None:
    """A time as 22.05 writes it (a number) or 23.02+ does ({"set", "number"}); None when unset or 0."""
    if isinstance(value, dict):
        value = value.get("number") if value.get("set", True) and not value.get("infinite") else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _times(text: str) -> dict[int, tuple[int | None, int | None, int | None]]:
    """(submit, start, end) Unix times by job id from ``squeue --json`` (slurm.parse_squeue_json keeps none)."""
    found = {}
    for item in json.loads(text).get("jobs") or []:
        job_id = item.get("job_id")
        job_id = job_id.get("number") if isinstance(job_id, dict) else job_id
        if isinstance(job_id, int):
            found[job_id] = (_epoch(item.get("submit_time")), _epoch(item.get("start_time")),
                             _epoch(item.get("end_time")))
    return found


def _owner(name: str, prefix: str, exclude_prefixes: tuple[str, ...]) -> str | None:
    """The user a job of ``name`` belongs to on this hub, or None when it is not one of the hub's jobs."""
    if not name.startswith(prefix) or len(name) == len(prefix):
        return None
    if any(name.startswith(other) for other in exclude_prefixes if len(other) > len(prefix)):
        return None
    return name[len(prefix):]


def _failed(job: slurm.Job) -> bool:
    """An ended job worth showing: it did not complete, and was not simply stopped after it ran (a cancelled job
    keeps the reason it was waiting for when it was cancelled before it started)."""
    if job.state == "COMPLETED":
        return False
    if job.state == "CANCELLED":
        return job.reason not in ("", "None")
    return True


def hub_view(env: dict[str, str], job_name_prefix: str, *, exclude_prefixes: tuple[str, ...] = (),
             partitions: tuple[str, ...] = (), stuck_after: int = DEFAULT_STUCK_AFTER,
             timeout: float = DEFAULT_TIMEOUT, now: float | None = None) -> SlurmView:
    """The hub's view of Slurm, read now with ``sinfo --json`` and ``squeue --json``, each bounded by ``timeout``
    seconds: the nodes of ``partitions`` (every node when empty), the hub's jobs (named ``job_name_prefix`` +
    user) pending, running and ended badly, each with its reason in words.  A job pending for more than
    ``stuck_after`` seconds is stuck.  Never raises: when a command fails or hangs, ``error`` says "Slurm did not
    answer: ..." with Slurm's own message.  Safe to call any time; reads only."""
    now = time.time() if now is None else now
    view = SlurmView(read_at=int(now), stuck_after_seconds=int(stuck_after))
    try:
        nodes = slurm.parse_sinfo_json(slurm.run(env, "sinfo", "--json", timeout=timeout))
        text = slurm.run(env, "squeue", "--json", timeout=timeout)
        jobs = slurm.parse_squeue_json(text)
        times = _times(text)
    except (slurm.SlurmError, ValueError, OSError) as exc:
        return SlurmView(read_at=view.read_at, stuck_after_seconds=view.stuck_after_seconds,
                         error=f"Slurm did not answer: {exc}")
    considered = [n for n in nodes if not partitions or set(n.partitions) & set(partitions)]
    counts: dict[str, int] = {}
    for node in considered:
        counts[node.condition] = counts.get(node.condition, 0) + 1
    # the nodes a person should look at first: unusable ones, then busy ones
    order = sorted(considered, key=lambda n: (n.usable, n.condition not in ("allocated", "mixed"), n.name))
    rows = [NodeRow(n.name, n.condition, n.reason, n.partitions, n.cpus, n.alloc_cpus, n.usable)
            for n in order[:MAX_NODES]]
    usable_partitions = {p for n in nodes if n.usable for p in n.partitions}
    pending, running, failed = [], [], []
    for job in jobs:
        user = _owner(job.name, job_name_prefix, exclude_prefixes)
        if user is None:
            continue
        submitted, started, ended = times.get(job.id, (None, None, None))
        details = {"partition": job.partition, "time_minutes": job.time_limit, "state": job.state,
                   "nodes_available": job.partition in usable_partitions}
        if job.state == "PENDING":
            waited = int(now - submitted) if submitted else None
            pending.append(_row(job, user, explain(job.reason, details), waited, None, submitted,
                                stuck=waited is not None and waited > stuck_after))
        elif job.state in slurm.FINISHED:
            if _failed(job):
                never = job.state == "CANCELLED" or not started or not ended or ended - started < 1
                failed.append(_row(job, user, explain(job.reason, details), None,
                                   None if never else int(ended - started), submitted))
        else:
            waited = int(started - submitted) if started and submitted else None
            running.append(_row(job, user, "", waited, int(now - started) if started else None, submitted))
    return SlurmView(read_at=view.read_at, stuck_after_seconds=view.stuck_after_seconds, nodes=rows,
                     node_counts=counts, nodes_left_out=max(0, len(considered) - MAX_NODES),
                     pending=sorted(pending, key=lambda j: j.id), running=sorted(running, key=lambda j: j.id),
                     failed=sorted(failed, key=lambda j: -j.id))


def _row(job: slurm.Job, user: str, explanation: str, waited: int | None, ran: int | None,
         submitted: int | None, stuck: bool = False) -> HubJob:
    return HubJob(id=job.id, user=user, partition=job.partition, state=job.state, reason=job.reason,
                  description=job.description, explanation=explanation, waited_seconds=waited, ran_seconds=ran,
                  submitted_at=submitted, nodes=job.nodes, stuck=stuck)
