"""Profiles as Slurm job options: an institution's profiles checked against a Slurm cluster's policy, the options a
user's server is submitted with, and the batch script Slurm receives.

A profile of the institution's environment may carry ``{"slurm": {"partition", "qos", "time_minutes", "cpus",
"memory_gb", "gpus"}}``, every key optional.  The operator's policy for a Slurm cluster is in its settings:
``{"partitions": [{"name", "max_time_minutes", "max_cpus", "max_memory_gb", "max_gpus"}, ...], "qos": [...]}``
(a maximum left out or None: no limit of ours; Slurm's own limits still apply).

Three steps, three functions, all pure:

- :func:`check_shape`: the ``slurm`` object alone (known keys, types), as ``tenants.environment`` checks every
  profile whatever cluster its hubs run on;
- :func:`check_profiles`: every profile against one cluster's policy (partition and QOS offered, time, CPUs, memory
  and GPUs within the partition's maxima), as the console checks before saving when the institution has hubs there;
- :func:`job_options` and :func:`batch_script`: what a server is submitted with, defaults filled in.

The hub's spawner imports this module from a copy in the hub's directory, where only the standard library is
installed: it imports nothing else, so the script the preview shows is the script the spawner submits.
"""
from __future__ import annotations

from typing import Any

FIELDS = ("partition", "qos", "time_minutes", "cpus", "memory_gb", "gpus")
DEFAULT_TIME_MINUTES = 60
DEFAULT_CPUS = 1
DEFAULT_MEMORY_GB = 2
MAX_NAME = 64  # partition and QOS names; Slurm's own are short words
MAX_COUNT = 100_000  # minutes (69 days), CPUs, GPUs, GB: beyond any server a person starts
# batchspawner formats the script with str.format and these of its variables; the spawner adds job_name.
PLACEHOLDERS = ("job_name", "homedir", "keepvars", "cmd")
LOG_FILE = "jupyterhub_slurmspawner_%j.log"  # batchspawner's own name for it, where people look first


def _whole(value: Any, minimum: int, what: str) -> int:
    """A whole number at least ``minimum`` from a JSON number or a form's text; ValueError with the message."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_COUNT:
        raise ValueError(f"Enter a whole number of {what}, at least {minimum}.")
    return value


def _gigabytes(value: Any) -> int | float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_COUNT:
        raise ValueError("Enter the memory in GB as a number above 0, such as 4 or 0.5.")
    return int(value) if float(value).is_integer() else value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_NAME \
            or any(c.isspace() or c in ",{}'\"" for c in value.strip()):
        raise ValueError(f"Enter the {what}'s name, one word such as debug.")
    return value.strip()


_PARSERS = {
    "partition": lambda v: _name(v, "partition"),
    "qos": lambda v: _name(v, "QOS"),
    "time_minutes": lambda v: _whole(v, 1, "minutes"),
    "cpus": lambda v: _whole(v, 1, "CPUs"),
    "memory_gb": _gigabytes,
    "gpus": lambda v: _whole(v, 0, "GPUs"),
}


def check_shape(value: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(clean options, errors by key) for one profile's ``slurm`` object, whatever the cluster: an object of the
    known keys, each of its type (numbers given as text, from a form, become numbers; blank values are left
    out).  Errors are keyed by the option's name ("time_minutes"), or "" when ``value`` is not an object."""
    if not isinstance(value, dict):
        return {}, {"": "Give the job options as an object, such as {\"partition\": \"debug\"}."}
    clean: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, item in value.items():
        if key not in _PARSERS:
            errors[str(key)] = f"Unknown job option; known: {', '.join(FIELDS)}."
        elif item is None or (isinstance(item, str) and not item.strip()):
            continue
        else:
            try:
                clean[key] = _PARSERS[key](item)
            except ValueError as exc:
                errors[key] = str(exc)
    return clean, errors


def _partitions(cluster_settings: dict | None) -> list[dict[str, Any]]:
    return [p for p in (cluster_settings or {}).get("partitions") or [] if isinstance(p, dict) and p.get("name")]


def _plural(count: float, word: str) -> str:
    return f"{count:g} {word}{'' if count == 1 else 's'}"


def check_profiles(environment: dict[str, Any], cluster_settings: dict[str, Any]) -> dict[str, str]:
    """What of ``environment``'s profiles the cluster's policy does not allow, by field path
    ("profiles.1.slurm.time_minutes": "At most 240 minutes on partition debug."); empty when all fit.

    Checked per profile, with its options completed as :func:`job_options` completes them (a profile naming no
    partition is checked against the partition its jobs go to): the partition and QOS are among those offered,
    the time, CPUs, memory and GPUs within the partition's maxima, and each option of its type.  Profiles without
    a ``slurm`` object get the defaults, which fit by construction.  Pure; never raises.
    """
    errors: dict[str, str] = {}
    profiles = environment.get("profiles") if isinstance(environment, dict) else None
    offered = _partitions(cluster_settings)
    names = [p["name"] for p in offered]
    qos_offered = [q for q in (cluster_settings or {}).get("qos") or [] if isinstance(q, str)]
    for index, profile in enumerate(profiles if isinstance(profiles, list) else []):
        if not isinstance(profile, dict) or profile.get("slurm") is None:
            continue
        prefix = f"profiles.{index}.slurm"
        clean, shape_errors = check_shape(profile["slurm"])
        errors.update({f"{prefix}.{key}" if key else prefix: message for key, message in shape_errors.items()})
        if not offered:
            errors[f"{prefix}.partition"] = "This cluster offers no partition to run servers in."
            continue
        if "partition" in clean and clean["partition"] not in names:
            errors[f"{prefix}.partition"] = (f"Partition {clean['partition']} is not offered on this cluster; "
                                             f"choose {_choice(names)}.")
            continue
        if "qos" in clean and clean["qos"] not in qos_offered:
            errors[f"{prefix}.qos"] = (f"QOS {clean['qos']} is not offered on this cluster; choose "
                                       f"{_choice(qos_offered)}." if qos_offered else
                                       "This cluster offers no QOS to choose; leave it out.")
        partition = offered[names.index(clean.get("partition", names[0]))]
        for key, limit_key, word in (("time_minutes", "max_time_minutes", "minute"), ("cpus", "max_cpus", "CPU"),
                                     ("memory_gb", "max_memory_gb", "GB of memory"), ("gpus", "max_gpus", "GPU")):
            limit = partition.get(limit_key)
            if key in clean and isinstance(limit, (int, float)) and clean[key] > limit:
                if key == "gpus" and limit == 0:
                    message = f"Partition {partition['name']} has no GPUs."
                elif key == "memory_gb":
                    message = f"At most {limit:g} GB of memory on partition {partition['name']}."
                else:
                    message = f"At most {_plural(limit, word)} on partition {partition['name']}."
                errors[f"{prefix}.{key}"] = message
    return errors


def _choice(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"one of {', '.join(names)}"


def job_options(profile_slurm: dict[str, Any] | None, cluster_settings: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """The options a server is submitted with: {"partition", "qos", "time_minutes", "cpus", "memory_gb",
    "gpus"}, from a profile's ``slurm`` object (None or {}: no profile) completed with defaults: the cluster's first
    partition, no QOS (None: Slurm's default for the user), 60 minutes, 1 CPU, 2 GB and no GPU, the time and
    memory lowered to the partition's maxima where those are lower.  Values are taken as given (see
    :func:`check_profiles` for the policy); keys of unknown names or wrong types are dropped.  Pure."""
    given, _ = check_shape(profile_slurm or {})
    offered = _partitions(cluster_settings)
    partition = next((p for p in offered if p["name"] == given.get("partition")), offered[0] if offered else {})
    options: dict[str, Any] = {
        "partition": given.get("partition") or partition.get("name"),
        "qos": given.get("qos"),
        "time_minutes": given.get("time_minutes", DEFAULT_TIME_MINUTES),
        "cpus": given.get("cpus", DEFAULT_CPUS),
        "memory_gb": given.get("memory_gb", DEFAULT_MEMORY_GB),
        "gpus": given.get("gpus", 0),
    }
    for key, limit_key in (("time_minutes", "max_time_minutes"), ("memory_gb", "max_memory_gb")):
        limit = partition.get(limit_key)
        if key not in given and isinstance(limit, (int, float)) and 0 < limit < options[key]:
            options[key] = limit
    return options


def memory_option(memory_gb: float) -> str:
    """Slurm's ``--mem`` value for a number of GB: ``4G``, or whole megabytes (``512M``) for a fraction."""
    if float(memory_gb).is_integer():
        return f"{int(memory_gb)}G"
    return f"{max(1, round(memory_gb * 1024))}M"


def batch_script(options: dict[str, Any], command: str = "{cmd}") -> str:
    """The batch script a server is submitted as, from :func:`job_options`'s options: ``#SBATCH`` lines for the job
    name, partition, QOS (when set), time limit (minutes), CPUs per task, memory, GPUs (``--gres=gpu:N`` when N > 0),
    the output file in the user's home, the working directory and the environment to pass on, then ``command``.

    Placeholders are left for the spawner, which formats the text with batchspawner's ``str.format`` variables:
    ``{job_name}`` ("hubfleet-<hub slug>-<user>"), ``{homedir}``, ``{keepvars}`` (the variables JupyterHub gives
    the server) and, unless ``command`` is given, ``{cmd}``.  Option values cannot hold braces (see
    :func:`check_shape`), so formatting changes nothing else.  Pure: same options, same text."""
    lines = ["#!/bin/bash", "#SBATCH --job-name={job_name}"]
    if options.get("partition"):
        lines.append(f"#SBATCH --partition={options['partition']}")
    if options.get("qos"):
        lines.append(f"#SBATCH --qos={options['qos']}")
    lines += [f"#SBATCH --time={int(options['time_minutes'])}",
              f"#SBATCH --cpus-per-task={int(options['cpus'])}",
              f"#SBATCH --mem={memory_option(options['memory_gb'])}"]
    if options.get("gpus"):
        lines.append(f"#SBATCH --gres=gpu:{int(options['gpus'])}")
    lines += [f"#SBATCH --output={{homedir}}/{LOG_FILE}",
              "#SBATCH --chdir={homedir}",
              "#SBATCH --export={keepvars}",
              "",
              command,
              ""]
    return "\n".join(lines)
