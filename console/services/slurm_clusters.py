"""Slurm clusters: registered with their submit host's settings, onboarded like Kubernetes clusters.

A slurm cluster's hubs run on the host the console runs on (the cluster's submit host), as local hubs do, and start
every user's server as a Slurm job (``clusters/slurm_backend.py``).  Registering one records its settings, which
are also the operator's policy for the cluster (the partitions and QOS its hubs may use, with the maxima a profile
may ask for; ``tenants/slurm_jobs.py`` checks profiles against them), and queues its onboarding check
(``clusters.slurm.onboard``: slurmctld answers, the partitions are up with a usable node, a test job runs).  The
cluster takes hubs once every check passed; each failure is shown with its fix.

Settings: ``{"slurm_conf", "partitions": [{"name", "max_time_minutes", "max_cpus", "max_memory_gb", "max_gpus"}],
"qos": [...], "root", "homes", "port_range": [first, last], "ip", "server_ip"}``; a maximum of None means no limit
of ours.
"""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from flask import current_app
from infra import providers

from console.extensions import db
from console.models import Cluster, User
from console.permissions import require
from console.services import FieldErrors, audit
from console.services.clusters import _port_range, queue_check

PARTITION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LIMITS = (("max_time_minutes", "minutes"), ("max_cpus", "CPUs"), ("max_memory_gb", "GB of memory"),
          ("max_gpus", "GPUs"))
MAX_PARTITIONS = 50
HUB_BACKENDS = ("local", "slurm")  # clusters whose hubs take ports on this host


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_partition_lines(text: str) -> list[dict[str, Any]] | str:
    """The form's partitions, one a line: ``name max_time_minutes max_cpus max_memory_gb max_gpus`` (the maxima
    optional from the right, ``-`` for none), as the API's list; a line that is not of that shape is returned as
    it is, for :func:`clean_settings` to name.  Pure."""
    partitions: list[dict[str, Any]] = []
    for line in (text or "").splitlines():
        words = line.replace(",", " ").split()
        if not words:
            continue
        if len(words) > 1 + len(LIMITS):
            return line.strip()
        entry: dict[str, Any] = {"name": words[0]}
        for (key, _), word in zip(LIMITS, words[1:]):
            entry[key] = None if word == "-" else word
        partitions.append(entry)
    return partitions


def _limit(value: Any, key: str, word: str) -> int | float | None:
    if _blank(value):
        return None
    try:
        number = float(value) if key == "max_memory_gb" else int(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(f"{key}: a whole number of {word}, or nothing for no limit.") from None
    if isinstance(value, bool) or number < (0 if key == "max_gpus" else 1) or number > 100_000:
        raise ValueError(f"{key}: {'0 or more' if key == 'max_gpus' else 'at least 1'} {word}.")
    return int(number) if float(number).is_integer() else number


def clean_settings(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(settings, errors by field) for a slurm cluster named ``raw["name"]``: its ``slurm_conf`` an absolute path to
    a readable file; ``partitions`` one or more, distinct names, maxima whole numbers (memory in GB may be a
    fraction) or none; ``qos`` names; ``root`` and ``homes`` absolute paths (defaults: ``<DATA_DIR>/clusters/<name>``
    and ``/home``); ``port_first``..``port_last`` a range of at least 3 ports that no local or slurm cluster uses
    (default: none, it must be given); ``ip`` where hubs serve (default ``LOCAL_HUB_IP``); ``server_ip`` where the
    servers listen on their nodes (default 127.0.0.1: the jobs run on this host; 0.0.0.0 on a centre's nodes).
    Reads the database."""
    errors: dict[str, str] = {}
    name = str(raw.get("name") or "").strip()
    if not providers.NAME_RE.match(name):
        errors["name"] = "3 to 30 characters: lower-case letters, digits and hyphens, starting with a letter."
    elif db.session.execute(db.select(Cluster.id).filter_by(name=name)).first():
        errors["name"] = f"A cluster named {name!r} already exists."
    conf = str(raw.get("slurm_conf") or "").strip()
    if not conf or not os.path.isabs(conf):
        errors["slurm_conf"] = ("The absolute path of the cluster's slurm.conf on this host, such as "
                                "/etc/slurm/slurm.conf.")
    elif not os.path.isfile(conf) or not os.access(conf, os.R_OK):
        errors["slurm_conf"] = f"There is no readable file {conf} on this host."
    partitions = raw.get("partitions")
    clean_partitions: list[dict[str, Any]] = []
    if isinstance(partitions, str):
        errors["partitions"] = (f"Not a partition line: {partitions!r}. Write: name max_minutes max_cpus max_gb "
                                f"max_gpus.")
    elif not isinstance(partitions, list) or not partitions:
        errors["partitions"] = "Name at least one partition its hubs' servers may run in."
    elif len(partitions) > MAX_PARTITIONS:
        errors["partitions"] = f"At most {MAX_PARTITIONS} partitions."
    else:
        for index, item in enumerate(partitions):
            if not isinstance(item, dict) or not PARTITION_RE.match(str(item.get("name") or "")):
                errors["partitions"] = f"Partition {index + 1}: a name of letters, digits, '.', '_' or '-'."
                break
            entry = {"name": str(item["name"])}
            try:
                for key, word in LIMITS:
                    entry[key] = _limit(item.get(key), key, word)
            except ValueError as exc:
                errors["partitions"] = f"Partition {entry['name']}: {exc}"
                break
            if any(p["name"] == entry["name"] for p in clean_partitions):
                errors["partitions"] = f"Partition {entry['name']} is named twice."
                break
            clean_partitions.append(entry)
    qos = raw.get("qos") or []
    if isinstance(qos, str):
        qos = qos.replace(",", " ").split()
    if not isinstance(qos, list) or not all(isinstance(q, str) and PARTITION_RE.match(q) for q in qos):
        errors["qos"] = "QOS names: letters, digits, '.', '_' or '-', separated by spaces."
        qos = []
    root = str(raw.get("root") or "").strip() or (
        str(Path(current_app.config["DATA_DIR"]) / "clusters" / name) if name else "")
    homes = str(raw.get("homes") or "").strip() or "/home"
    for key, value in (("root", root), ("homes", homes)):
        if not os.path.isabs(value):
            errors[key] = "An absolute path on this host."
    ports = []
    for key in ("port_first", "port_last"):
        try:
            port = int(str(raw.get(key)).strip())
            if not 1024 <= port <= 65535:
                raise ValueError
            ports.append(port)
        except (TypeError, ValueError):
            errors[key] = "A port number from 1024 to 65535."
    if len(ports) == 2:
        if ports[1] - ports[0] < 2:
            errors["port_last"] = "At least 3 ports: each hub takes three."
        else:
            clash = _port_clash(*ports)
            if clash:
                errors["port_first"] = clash
    ip = str(raw.get("ip") or "").strip() or current_app.config["LOCAL_HUB_IP"]
    server_ip = str(raw.get("server_ip") or "").strip() or "127.0.0.1"
    for key, value in (("ip", ip), ("server_ip", server_ip)):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            errors[key] = "An IP address, such as 127.0.0.1 or 0.0.0.0."
    settings = {"slurm_conf": conf, "partitions": clean_partitions, "qos": list(dict.fromkeys(qos)),
                "root": root, "homes": homes, "port_range": ports, "ip": ip, "server_ip": server_ip}
    return settings, errors


def _port_clash(first: int, last: int) -> str | None:
    """Why ``first``..``last`` cannot be a slurm cluster's ports: another cluster whose hubs run here has some."""
    others = db.session.execute(db.select(Cluster).where(Cluster.backend.in_(HUB_BACKENDS),
                                                         Cluster.state != "destroyed")).scalars()
    for other in others:
        ports = _port_range(other)
        if ports and first <= ports[1] and ports[0] <= last:
            return (f"Ports {first} to {last} overlap those of {other.backend} cluster {other.name} "
                    f"({ports[0]} to {ports[1]}); choose a range outside it.")
    return None


def register_slurm(user: User, raw: dict[str, Any]) -> Cluster:
    """Register a Slurm cluster reached from this host (cluster.manage) and queue its onboarding check; it takes
    hubs once that passes.  Raises FieldErrors naming every field at fault, nothing written.  Commits."""
    require(user, "cluster.manage")
    settings, errors = clean_settings(raw)
    if errors:
        raise FieldErrors(errors)
    name = str(raw["name"]).strip()
    cluster = Cluster(name=name, provider=None, backend="slurm", state="registered", settings=settings)
    db.session.add(cluster)
    queue_check(cluster, user.email)
    audit(user.email, "cluster.register", name, backend="slurm", slurm_conf=settings["slurm_conf"],
          partitions=[p["name"] for p in settings["partitions"]], qos=settings["qos"])
    db.session.commit()
    return cluster
