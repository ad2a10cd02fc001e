"""Preflight: does a hub's own JupyterHub take a rendered configuration?  Asked before a running hub is touched.

Contract of :func:`preflight`:

- ``config`` is the configuration as the hub's backend gets it: traitlets sections (``HubSpec.config`` of a local
  hub) or Zero to JupyterHub values, whose ``hub.config`` holds the sections.
- ``python`` is the interpreter of the hub's JupyterHub environment (``clusters.environments.python_for``), so the
  hub's own JupyterHub and authenticator versions judge it.
- A throw-away process loads the configuration as ``jupyterhub -f`` loads a local hub's (the same fixed config file,
  reading a ``settings.json`` beside it), instantiates the authenticator and the spawner classes with it (a value a
  trait refuses is caught there) and normalizes and validates ``admin_users`` and ``allowed_users`` as JupyterHub's
  startup does.  It starts nothing and opens no port.
- Secrets never reach a command line or an environment variable: the file is written with mode 0600 into a private
  temporary directory, removed afterwards.  Secret values are blanked from the reason.
- Returns a :class:`Preflight`: ``ok``, a one-line ``reason`` when not ok, and the seconds it took.  It does not
  raise for a bad configuration, a crashing child or a timeout: each is a reason.

What it cannot see is what only a running JupyterHub finds (ports, its database, roles naming services, managed
services): a rollout's health check and its automatic rollback cover those.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusters.local_files import write_hub_config

HERE = Path(__file__).resolve().parent
SECRET_KEYS = frozenset({"client_secret", "user_password", "api_token", "cookie_secret"})


@dataclass(frozen=True)
class Preflight:
    ok: bool
    reason: str = ""
    seconds: float = 0.0


def sections_of(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The traitlets sections of a rendered config: z2jh values keep them under ``hub.config``."""
    if isinstance(config.get("hub"), dict) and "config" in config["hub"]:
        return config["hub"]["config"] or {}
    return config


def _secrets(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SECRET_KEYS and isinstance(value, str) and value:
                found.add(value)
            else:
                found |= _secrets(value)
    elif isinstance(node, list):
        for value in node:
            found |= _secrets(value)
    return found


def preflight(config: dict[str, Any], python: str, timeout: float = 60.0) -> Preflight:
    """Load ``config`` with the JupyterHub of ``python`` in a throw-away process; see the module's contract."""
    started = time.monotonic()
    sections = sections_of(config)
    with tempfile.TemporaryDirectory(prefix="hubfleet-preflight-") as directory:  # mode 0700
        settings = Path(directory) / "settings.json"
        fd = os.open(settings, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(sections, out)
        config_file = write_hub_config(Path(directory))
        # The console's own settings (database URL, keys) are none of the child's business.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBFLEET_", "JUPYTERHUB_"))}
        try:
            result = subprocess.run([python, str(HERE / "preflight_check.py"), str(config_file)], cwd=directory,
                                    env=env, capture_output=True, text=True, timeout=timeout,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Preflight(False, f"JupyterHub took more than {timeout:g}s to load the configuration",
                             time.monotonic() - started)
        except OSError as exc:
            return Preflight(False, f"could not run {python}: {exc.strerror}", time.monotonic() - started)
    seconds = time.monotonic() - started
    try:
        verdict = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = [line for line in result.stderr.splitlines() if line.strip()][-1:] or [f"exit {result.returncode}"]
        verdict = {"ok": False, "reason": f"the check crashed: {tail[0][:300]}"}
    reason = verdict.get("reason") or ""
    for secret in _secrets(sections):
        reason = reason.replace(secret, "********")
    return Preflight(bool(verdict.get("ok")), reason, seconds)
