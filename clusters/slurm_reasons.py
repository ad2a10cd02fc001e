"""Why a Slurm job waits or failed, in words a student understands, with what to do about it.

Slurm says why a job is pending with a short reason (``squeue``'s ``%r``, ``state_reason`` in ``squeue --json``:
``Resources``, ``Priority``, ``PartitionTimeLimit``, ``ReqNodeNotAvail``, ``QOSMaxWallDurationPerJobLimit``...) and
how a job ended with its state (``FAILED``, ``NODE_FAIL``, ``OUT_OF_MEMORY``, ``TIMEOUT``...).  :func:`explain`
turns either into one or two sentences for the person whose notebook server it is: what is happening, then what
they (or their admin) can do.  The hub page's Slurm section and the spawner's messages to a waiting user use it.

Standard library only: the hub's spawner imports it from a copy in the hub's directory.
"""
from __future__ import annotations

from typing import Any

# Reasons a pending job gives, by Slurm's name (slurm/slurm.h job_state_reason, as squeue prints them).
PENDING: dict[str, str] = {
    "None": "Slurm has not looked at your server's job yet: it is usually considered within seconds.",
    "Resources": ("The partition is full: your server starts when a node frees up. A profile asking for fewer "
                  "CPUs, less memory or less time may start sooner."),
    "Priority": ("Other jobs are ahead of yours in the queue: your server starts when their turn is over. "
                 "Nothing to do but wait."),
    "Dependency": "The job waits for another job to finish first.",
    "BeginTime": "The job was asked to start later, and waits for that time.",
    "PartitionTimeLimit": ("The time limit asked is longer than the partition allows: pick a shorter profile "
                           "(your admin can fix the profile)."),
    "PartitionNodeLimit": ("The job asks for more nodes, CPUs or memory than the partition allows one job: pick a "
                           "smaller profile (your admin can fix the profile)."),
    "PartitionDown": ("The partition is closed by the centre (maintenance or an outage): your server starts when "
                      "it reopens. Pick a profile on another partition to start now."),
    "PartitionInactive": ("The partition is closed to new jobs by the centre: pick a profile on another "
                          "partition."),
    "ReqNodeNotAvail": ("The nodes your server needs are not available (drained, down or reserved for "
                        "maintenance): it starts when they are back. Tell the centre if it lasts."),
    "NodeDown": "A node the job needs is down: it starts when the node is back. Tell the centre if it lasts.",
    "BadConstraints": ("No node has what the job asks for (more memory, CPUs or GPUs than any node has): it can "
                       "never start. Pick a smaller profile and tell your admin, who can fix it."),
    "InvalidQOS": "The QOS the profile names does not exist for you: pick another profile and tell your admin.",
    "QOSNotAllowed": "You may not use the QOS the profile names: pick another profile and tell your admin.",
    "InvalidAccount": ("Your Slurm account is not valid on this cluster: ask the centre to add you to an "
                       "account."),
    "AccountNotAllowed": "Your account may not use this partition: pick another profile or ask the centre.",
    "QOSMaxWallDurationPerJobLimit": ("The time limit asked is longer than your QOS allows: pick a shorter "
                                      "profile (your admin can fix the profile)."),
    "Reservation": "The job waits for its reservation to begin.",
    "Licenses": "The job waits for a software licence to be free.",
    "JobHeldUser": "The job is held: it starts once released (scontrol release).",
    "JobHeldAdmin": "The centre holds the job: ask them why.",
    "launch failed requeued held": ("The server's job could not be launched on its node and is held: stop the "
                                    "server and start it again; tell the centre if it happens again."),
    "BurstBufferResources": "The job waits for burst-buffer storage to be free.",
    "Cleaning": "The node is still cleaning up after an earlier job: your server starts in a moment.",
    "Prolog": "The node is running its start-up script for the job: your server starts in a moment.",
    "NodeLimit": "The job asks for more nodes than it may have: pick a smaller profile.",
}

# Families of limits named QOS...PerUser..., Assoc...: the user's (or group's) share is used up.
LIMIT_PREFIXES = ("QOSMax", "QOSGrp", "AssocMax", "AssocGrp", "MaxCpuPerAccount", "MaxJobsPerAccount")

# How a job ended, by its state: a server that never started, or stopped.
ENDED: dict[str, str] = {
    "FAILED": ("The server's job failed (it exited with an error): read jupyterhub_slurmspawner_<job id>.log in "
               "your home, or tell your admin."),
    "NODE_FAIL": "The node running your server failed: start it again, and tell the centre if it happens again.",
    "BOOT_FAIL": "The node could not boot for your server: start it again; tell the centre if it happens again.",
    "OUT_OF_MEMORY": ("Your server used more memory than its profile gives it and was stopped: pick a profile with "
                      "more memory."),
    "TIMEOUT": ("Your server reached its time limit and was stopped: save your work sooner, or pick a profile "
                "with a longer time limit."),
    "DEADLINE": "The job could not finish before its deadline and was stopped.",
    "PREEMPTED": "A job with higher priority needed the node, so your server was stopped: start it again.",
    "CANCELLED": "The server's job was cancelled before it started (stopped, or it waited too long).",
}


def explain(reason: str, job: dict[str, Any] | None = None) -> str:
    """Slurm's ``reason`` (a pending reason, or a final job state) in words, with what to do; never empty.

    ``job``, optional, adds what is known of the job: ``partition``, ``time_minutes`` and ``state`` (the job's
    state: a reason of a job that ended is read with it, so a cancelled waiting job says why it waited) and
    ``nodes_available`` (False when the partition has no usable node, which Slurm may report as plain
    ``Resources``).  A reason this module does not know is given as Slurm's own words.  Pure.
    """
    job = job or {}
    reason = (reason or "").strip()
    state = str(job.get("state") or "").upper()
    if reason == "Resources" and job.get("nodes_available") is False:
        reason = "ReqNodeNotAvail"
    text = _pending(reason)
    if text and job.get("partition"):
        text = text.replace("the partition", f"partition {job['partition']}", 1) \
            .replace("The partition", f"Partition {job['partition']}", 1)
    if text and reason in ("PartitionTimeLimit", "QOSMaxWallDurationPerJobLimit") and job.get("time_minutes"):
        text = text.replace("The time limit asked", f"The time limit asked ({job['time_minutes']} minutes)", 1)
    if state in ENDED and state != "CANCELLED":
        if reason in ("", "None", "NonZeroExitCode", "RaisedSignal") or reason.upper() == state or not text:
            return ENDED[state]
        return f"The server's job could not start. {text}"
    if state == "CANCELLED":
        if not text or reason == "None":
            return ENDED["CANCELLED"]
        cause = text.split(": ")[0].rstrip(".")  # what held it, without the advice for a job still waiting
        return f"{ENDED['CANCELLED']} Why it waited: {cause[0].lower()}{cause[1:]}."
    if text:
        return text
    if reason.upper() in ENDED:
        return ENDED[reason.upper()]
    return f"Slurm says: {reason or 'no reason given'}."


def _pending(reason: str) -> str:
    """The words for a pending reason, or "" for one not known."""
    if reason in PENDING:
        return PENDING[reason]
    base = reason.split(",")[0].strip()  # "ReqNodeNotAvail, UnavailableNodes:n01" as the description gives it
    if base in PENDING:
        return PENDING[base]
    if base.startswith("UnavailableNodes"):
        return PENDING["ReqNodeNotAvail"]
    if base.startswith(LIMIT_PREFIXES) and "WallDuration" in base:
        return PENDING["QOSMaxWallDurationPerJobLimit"]
    if base.startswith(LIMIT_PREFIXES):
        return ("You (or your group) already use everything your share of the cluster allows: your server starts "
                "when one of your other jobs ends. Stop servers or jobs you no longer need.")
    return ""
