"""Troubleshooting a hub from its page: the end of its log as the viewer may read it, its running servers, the way
to its own admin page.

The log comes from the hub's backend (``Backend.log_tail``: ``hub.log`` for a local hub, the hub pod's log on
Kubernetes) and passes through :func:`redact` before anyone reads it: every secret value of the hub's config is
blanked, and so is whatever looks like a credential (an Authorization header, a ``token=`` or ``?code=`` in a URL);
for a viewer whose role does not reach the whole fleet (an institution admin), the server's paths too.  Operators see
paths, never secrets.  The running servers are what the monitoring sweep last saw (``ServerSnapshot``): showing them
asks the hub nothing.
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from flask import current_app

from console.extensions import db
from console.models import Hub, ServerSnapshot, User
from console.permissions import FleetReach, role_of
from console.services import config as config_service
from console.services import hubs as hub_service

MASK = "********"
PATH_MASK = "[server path]"
LOG_LINES = 200  # how much of the log the hub page shows
MAX_LINE = 2000  # characters kept of one line, cut after blanking so no part of a secret shows
SERVERS_SHOWN = 100
# A secret this short is blanked only where it stands alone: blanking every "abc" would garble the log.
SHORT_SECRET = 6

# Credentials that are no value of the hub's config but pass through its log: a request's Authorization header,
# OAuth's ?code=, a token, secret or password given as key=value or as a JSON/Python mapping's item.
_AUTHORIZATION = re.compile(r"""(?i)(authorization['"]?\s*[:=]\s*['"]?(?:(?:bearer|token|basic)\s+)?)[^\s'",;}]+""")
_KEY_VALUE = re.compile(r"""(?i)((?:(?<![\w-])[\w-]*(?:token|secret|password)|[?&;](?:code|_xsrf))=)"""
                        r"""[^&\s'"#,;]+""")
_MAPPING_ITEM = re.compile(r"""(?i)(['"][\w-]*(?:token|secret|password)['"]\s*:\s*['"])[^'"]+""")
# Terminal colours (configurable-http-proxy writes them) and other control characters but the tab.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")
# Paths under the usual top-level directories of a server; not JupyterHub's URL paths (/hub/..., /user/...).
_END = r"""[^\s'"`,;:()\[\]<>]*"""
_SERVER_PATH = re.compile(r"(?<![\w.:/~-])/(?:home|root|tmp|var|usr|opt|srv|etc|run|mnt|media|data|proc|sys|lib|"
                          r"lib64|bin|sbin|nix|snap|work|private|Users)(?=/|\b)" + _END)


@dataclass(frozen=True)
class LogView:
    """The end of a hub's log as one viewer may read it: ``lines`` oldest first; ``reason`` why there are none, or
    which run of the hub they come from; ``source`` where they were read (empty for viewers who see no server
    paths)."""

    lines: list[str] = field(default_factory=list)
    reason: str = ""
    source: str = ""


@dataclass(frozen=True)
class Overview:
    """What the hub page's Troubleshooting section shows besides the log."""

    servers: list[ServerSnapshot]
    more: bool  # more servers run than are listed
    admin_url: str | None


def secret_values(tree: Any) -> list[str]:
    """Every string leaf of ``tree`` (a hub's ``HubSpec.secrets``), with the forms it takes in a URL or in JSON;
    longest first, so a secret holding another is blanked whole.  Pure."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item)
        elif isinstance(node, str) and node:
            found.update({node, quote(node, safe=""), quote_plus(node), json.dumps(node)[1:-1]})

    walk(tree)
    return sorted(found, key=len, reverse=True)


def _blank_paths(text: str, roots: list[str]) -> str:
    def masked(match: re.Match) -> str:
        last = match.group(0).rstrip("/").rpartition("/")[2]
        return f"{PATH_MASK}/{last}" if "." in last.strip(".") else PATH_MASK  # a file's name says where it failed

    for root in roots:
        text = re.sub(re.escape(root) + _END, masked, text)
    return _SERVER_PATH.sub(masked, text)


def redact(lines: Iterable[str], secrets: Iterable[str], paths: Iterable[str] | None = None) -> list[str]:
    """``lines`` with every one of ``secrets`` and every credential-like value replaced by ``MASK``; with ``paths``
    (the server's own directories: data dir, hub directories, environments) those and any path under a usual
    top-level directory (/home, /root, /usr, ...) replaced by ``PATH_MASK``, keeping a file's name; ``paths`` None
    keeps paths (operators).  Terminal colour codes and control characters are dropped, and each line is cut to
    ``MAX_LINE`` characters after blanking.  Pure."""
    secrets = [s for s in secrets if s]
    short = [re.compile(rf"(?<![\w-]){re.escape(s)}(?![\w-])") for s in secrets if len(s) < SHORT_SECRET]
    long_ = [s for s in secrets if len(s) >= SHORT_SECRET]
    roots = None if paths is None else sorted({p.rstrip("/") for p in paths if p and p.strip("/")}, key=len,
                                              reverse=True)
    out = []
    for line in lines:
        line = _CONTROL.sub("", line)
        for secret in long_:
            line = line.replace(secret, MASK)
        for pattern in short:
            line = pattern.sub(MASK, line)
        line = _AUTHORIZATION.sub(lambda m: m.group(1) + MASK, line)
        line = _KEY_VALUE.sub(lambda m: m.group(1) + MASK, line)
        line = _MAPPING_ITEM.sub(lambda m: m.group(1) + MASK, line)
        if roots is not None:
            line = _blank_paths(line, roots)
        out.append(line[:MAX_LINE])
    return out


def sees_server_paths(user: User) -> bool:
    """Whether ``user`` reads the server's paths in logs (a fleet-wide role), as ``console.errors.shown`` decides."""
    return isinstance(role_of(user).reach, FleetReach)


def server_paths(hub: Hub) -> list[str]:
    """The directories of this server a hub's log may name: the console's data directory and release environments,
    the hub's own directory, its cluster's directories, the console's code and Python environment."""
    settings = hub.cluster.settings or {}
    found = [current_app.config.get("DATA_DIR"), current_app.config.get("RELEASE_ENVIRONMENTS"),
             (hub.backend_state or {}).get("dir"), sys.prefix, sys.base_prefix,
             str(Path(__file__).resolve().parents[2])]  # the project: the proxy's node_modules are there
    found += [value for key, value in settings.items() if isinstance(value, str) and value.startswith("/")
              and key in ("root", "homes", "environments", "python", "proxy_command")]
    return [str(path) for path in found if path]


def hub_log(user: User, hub: Hub, lines: int = LOG_LINES) -> LogView:
    """The end of ``hub``'s log as ``user`` may read it (the caller loaded the hub for ``hub.view``): read from its
    backend, secrets blanked for everyone, server paths for viewers who may not see them (:func:`redact`)."""
    backend = hub_service.backend_for(hub.cluster)
    try:
        tail = backend.log_tail(hub.backend_state or {}, lines)
    finally:
        close = getattr(backend, "close", None)  # a Kubernetes backend holds a connection pool
        if close is not None:
            close()
    secrets = secret_values(config_service.hub_spec(hub).secrets)
    fleet = sees_server_paths(user)
    paths = None if fleet else server_paths(hub)
    return LogView(lines=redact(tail.lines, secrets, paths), reason=redact([tail.reason], secrets, paths)[0],
                   source=tail.source if fleet else "")


def running_servers(hub: Hub, limit: int = SERVERS_SHOWN) -> tuple[list[ServerSnapshot], bool]:
    """The hub's running and starting servers as the monitoring sweep last saw them, the most recently active first;
    at most ``limit``, and whether there are more.  One query; the hub is not asked."""
    rows = db.session.execute(
        db.select(ServerSnapshot).where(ServerSnapshot.hub_id == hub.id, ServerSnapshot.state != "stopped")
        .order_by(ServerSnapshot.last_activity.desc().nulls_last(), ServerSnapshot.username)
        .limit(limit + 1)).scalars().all()
    return rows[:limit], len(rows) > limit


def admin_url(hub: Hub) -> str | None:
    """JupyterHub's own admin page of ``hub`` (its users and their servers), or None while it has no address."""
    return f"{hub.url.rstrip('/')}/hub/admin" if hub.url else None


def overview(hub: Hub) -> Overview:
    """The Troubleshooting section of the hub page, but the log (loaded apart: it may ask the hub's cluster)."""
    servers, more = running_servers(hub)
    return Overview(servers=servers, more=more, admin_url=admin_url(hub))
