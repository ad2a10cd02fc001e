"""One Python environment per JupyterHub version, for local hubs: created once, then reused.

The version this project itself installs runs from the console's own environment; any other gets a virtualenv
``<root>/<version>/`` with that JupyterHub and the same companions (JupyterLab, the authenticators, the culler).
"""
from __future__ import annotations

import fcntl
import subprocess
import sys
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Callable

COMPANIONS = ("jupyterlab", "oauthenticator", "jupyterhub-ltiauthenticator", "jupyterhub-idle-culler")


class EnvironmentSetupError(RuntimeError):
    """The environment for a JupyterHub version could not be created."""


def installed_jupyterhub() -> str:
    return installed_version("jupyterhub")


def python_for(jupyterhub_version: str | None, root: str | Path, log: Callable[[str], None]) -> str:
    """The interpreter whose environment runs ``jupyterhub_version`` (None: the installed one).

    Creates the environment the first time (a minute or so of pip); safe to call twice and from two workers at once.
    Raises EnvironmentSetupError with pip's last words when the version cannot be installed.
    """
    if not jupyterhub_version or jupyterhub_version == installed_jupyterhub():
        return sys.executable
    env = Path(root) / jupyterhub_version
    python = env / "bin" / "python"
    ready = env / ".ready"
    if ready.exists():
        return str(python)
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / f".{jupyterhub_version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists():
            return str(python)
        log(f"creating the environment for JupyterHub {jupyterhub_version} in {env} (once per version)")
        steps = ([sys.executable, "-m", "venv", "--clear", str(env)],
                 [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  f"jupyterhub=={jupyterhub_version}", *COMPANIONS])
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True)
            if result.returncode != 0:
                tail = [line for line in (result.stderr or result.stdout).splitlines()
                        if line.strip() and not line.startswith("WARNING")][-3:]
                raise EnvironmentSetupError(f"could not install JupyterHub {jupyterhub_version}: {' / '.join(tail)}")
        ready.write_text(jupyterhub_version)
        log(f"environment for JupyterHub {jupyterhub_version} ready")
    return str(python)
