"""One Python environment per JupyterHub version, for local hubs: created once, then reused.

The version this project itself installs runs from the console's own environment; any other gets a virtualenv
``<root>/<version>/`` with that JupyterHub and the same companions (JupyterLab, the authenticators, the culler,
nbgitpuller for "Open in my hub" links, batchspawner for slurm hubs).  An environment made before a companion joined
the list gets it added, in place, the next time a hub asks for it.

Files under ``<root>`` for a version ``V``: ``V/`` (the environment; ``V/.ready`` once complete), ``.V.lock`` (held
by whoever builds it), ``.V.log`` (the last build's pip output) and ``.V.failed`` (why the last build failed).  A
build runs either inline (:func:`python_for`, for a hub deploy) or detached (:func:`start_build`, so a worker is not
held for minutes); both take the same lock, so any number of workers and builds never build one version twice at once.

Environments are for everyone: hub users' system accounts run their servers with them, so ``<root>`` is mode 0755,
builds run with umask 022, whatever the console's umask, and an environment is made from a Python other accounts may
run (:func:`base_python`).  Where the console's own Python is out of their reach (under a private home, say),
:func:`python_for` with ``shared`` gives an environment even for the installed version.

Run as a script (``python environments.py build VERSION ROOT``) it is the detached builder; it then imports nothing
but the standard library.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Callable

# batchspawner is pinned: slurm hubs' spawner (clusters/slurm_spawner.py) subclasses it and relies on its internals.
# Every environment gets it (a small pure-Python package), so any release can run a hub of either local or slurm type.
COMPANIONS = ("jupyterlab", "oauthenticator", "jupyterhub-ltiauthenticator", "jupyterhub-idle-culler", "nbgitpuller",
              "batchspawner==1.3.0")
INDEX_TIMEOUT = 30  # seconds pip may take to list JupyterHub's versions
INDEX_CACHE_SECONDS = 300  # a version list is reused this long: publishing twice asks the index once

_index_cache: tuple[float, list[str]] | None = None
_builds: dict[str, subprocess.Popen] = {}  # detached builders this process started, reaped when they exit


class EnvironmentSetupError(RuntimeError):
    """The environment for a JupyterHub version could not be created, or the package index could not be asked."""


def _public_root(root: str | Path) -> None:
    """Make ``root`` (mode 0755: hub users' accounts run what is in it)."""
    Path(root).mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(root, 0o755)


def unreachable(program: str | Path) -> Path | None:
    """The first directory on the way to ``program`` that other accounts may not pass, or None."""
    for candidate in {Path(program), Path(program).resolve()}:
        for directory in reversed(candidate.parents):
            if not directory.stat().st_mode & stat.S_IXOTH:
                return directory
    return None


def base_python() -> str:
    """The interpreter environments are made from: this one, or, when other accounts cannot run it, the system's
    Python of the same version.  Raises EnvironmentSetupError when there is none."""
    if unreachable(sys.executable) is None:
        return sys.executable
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
    if found and unreachable(found) is None:
        return found
    raise EnvironmentSetupError(f"hub users' accounts cannot run {sys.executable} (other users may not pass "
                                f"{unreachable(sys.executable)}) and there is no {name} they may run")


def installed_jupyterhub() -> str:
    return installed_version("jupyterhub")


def _paths(jupyterhub_version: str, root: str | Path) -> dict[str, Path]:
    root = Path(root)
    return {"env": root / jupyterhub_version, "ready": root / jupyterhub_version / ".ready",
            "lock": root / f".{jupyterhub_version}.lock", "log": root / f".{jupyterhub_version}.log",
            "failed": root / f".{jupyterhub_version}.failed"}


def last_words(output: str, count: int = 3) -> str:
    """The meaningful end of pip's output: its ERROR lines (without the list of every version it knows), else the
    last ``count`` lines that are not warnings; joined with " / ".  Pure."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [re.sub(r" \(from versions: [^)]*\)", "", line) for line in lines if line.startswith("ERROR")]
    chosen = errors or [line for line in lines if not line.startswith("WARNING")]
    return " / ".join(line[:300] for line in chosen[-count:])


def _build(jupyterhub_version: str, root: str | Path, log: Callable[[str], None]) -> None:
    """Create the environment; the caller holds the version's lock.  Raises EnvironmentSetupError (and records why
    in ``.V.failed``) when pip cannot install it."""
    paths = _paths(jupyterhub_version, root)
    python = paths["env"] / "bin" / "python"
    paths["failed"].unlink(missing_ok=True)
    log(f"creating the environment for JupyterHub {jupyterhub_version} in {paths['env']} (once per version)")
    steps = ([base_python(), "-m", "venv", "--clear", str(paths["env"])],
             [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
              f"jupyterhub=={jupyterhub_version}", *COMPANIONS])
    with open(paths["log"], "w") as out:
        for step in steps:
            out.write("$ " + " ".join(step) + "\n")
            out.flush()
            result = subprocess.run(step, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, umask=0o022)
            out.write(result.stdout)
            if result.returncode != 0:
                reason = f"could not install JupyterHub {jupyterhub_version}: {last_words(result.stdout)}"
                paths["failed"].write_text(reason)
                raise EnvironmentSetupError(reason)
    paths["ready"].write_text(jupyterhub_version)
    log(f"environment for JupyterHub {jupyterhub_version} ready")


def missing_companions(env: str | Path) -> list[str]:
    """The companions not installed in the environment ``env`` (one built before they were all listed); a look at its
    ``*.dist-info`` directories, no process started."""
    installed = {re.sub(r"[-_.]+", "-", entry.name.split("-")[0]).lower()
                 for entry in Path(env).glob("lib/python*/site-packages/*.dist-info")}
    return [name for name in COMPANIONS if re.split(r"[<>=!~\[ ]", name)[0] not in installed]


def _top_up(jupyterhub_version: str, root: str | Path, log: Callable[[str], None]) -> None:
    """Install the missing companions into a ready environment, in place (its hubs may be running), with JupyterHub
    held at its version; the caller holds the version's lock.  A failure is logged and the environment kept: its
    hubs run as before, only without what is missing."""
    paths = _paths(jupyterhub_version, root)
    missing = missing_companions(paths["env"])
    step = [str(paths["env"] / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
            "--progress-bar", "off", f"jupyterhub=={jupyterhub_version}", *missing]
    log(f"adding {', '.join(missing)} to the environment for JupyterHub {jupyterhub_version}")
    with open(paths["log"], "a") as out:
        out.write("$ " + " ".join(step) + "\n")
        out.flush()
        result = subprocess.run(step, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, umask=0o022)
        out.write(result.stdout)
    if result.returncode != 0:
        log(f"could not add {', '.join(missing)}: {last_words(result.stdout)}")


def python_for(jupyterhub_version: str | None, root: str | Path, log: Callable[[str], None],
               shared: bool = False) -> str:
    """The interpreter whose environment runs ``jupyterhub_version`` (None: the installed one); with ``shared``, one
    that other accounts may run too.

    Creates the environment the first time (a minute or so of pip), waiting for a build another process runs; safe
    to call twice and from two workers at once.  Raises EnvironmentSetupError with pip's last words when the version
    cannot be installed.
    """
    if not jupyterhub_version or jupyterhub_version == installed_jupyterhub():
        if not shared or unreachable(sys.executable) is None:
            return sys.executable
        jupyterhub_version = installed_jupyterhub()
    paths = _paths(jupyterhub_version, root)
    python = str(paths["env"] / "bin" / "python")

    def usable() -> bool:  # an environment made before there were hub accounts may be out of their reach
        return paths["ready"].exists() and not (shared and unreachable(python))

    if usable() and not missing_companions(paths["env"]):
        return python
    _public_root(root)
    with open(paths["lock"], "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not usable():
            _build(jupyterhub_version, root, log)
        elif missing_companions(paths["env"]):
            _top_up(jupyterhub_version, root, log)
    return python


def start_build(jupyterhub_version: str, root: str | Path) -> bool:
    """Start building the environment in a detached process (it outlives this one) and return at once.

    Returns True if a build was started; False when the environment is ready or a build holds the lock already.
    The new builder inherits the lock, taken here first, so it is never started twice.  Follow it with
    :func:`build_state`.
    """
    paths = _paths(jupyterhub_version, root)
    _public_root(root)
    with open(paths["lock"], "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if paths["ready"].exists():
            return False
        paths["failed"].unlink(missing_ok=True)
        # -I: the script's own directory (clusters/) must not shadow a standard module in the builder
        _builds[str(paths["env"])] = subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).resolve()), "build", jupyterhub_version, str(root)],
            pass_fds=(lock.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
    return True  # closing our copy of the lock leaves it held by the builder until it exits


def build_state(jupyterhub_version: str, root: str | Path) -> tuple[str, str]:
    """("ready" | "building" | "failed" | "absent", reason) of the version's environment; reason only for "failed".

    Cheap (a file test and a non-blocking lock attempt); never raises for a missing root.
    """
    for key, child in list(_builds.items()):
        if child.poll() is not None:
            del _builds[key]
    paths = _paths(jupyterhub_version, root)
    if paths["ready"].exists():
        return "ready", ""
    if not paths["lock"].exists():
        return "absent", ""
    with open(paths["lock"], "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "building", ""
    if paths["ready"].exists():  # finished between the two looks
        return "ready", ""
    if paths["failed"].exists():
        return "failed", paths["failed"].read_text().strip()
    return "absent", ""


def build_log(jupyterhub_version: str, root: str | Path) -> Path:
    """Where the version's last build wrote pip's output."""
    return _paths(jupyterhub_version, root)["log"]


def jupyterhub_versions(timeout: float = INDEX_TIMEOUT) -> list[str]:
    """Every JupyterHub version the package index offers (pre-releases included), asked through this environment's
    pip, so from the same index a build would install from.  Cached for a few minutes.

    Raises EnvironmentSetupError with pip's last words when the index cannot be asked.
    """
    global _index_cache
    if _index_cache and time.monotonic() - _index_cache[0] < INDEX_CACHE_SECONDS:
        return _index_cache[1]
    try:
        result = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "--pre",
                                 "--disable-pip-version-check", "jupyterhub"],
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EnvironmentSetupError(f"the package index did not answer within {timeout:g}s") from None
    found = re.search(r"^Available versions: (.+)$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or not found:
        raise EnvironmentSetupError(f"the package index could not be asked: "
                                    f"{last_words(result.stderr + result.stdout) or 'no answer'}")
    versions = [v.strip() for v in found.group(1).split(",")]
    _index_cache = (time.monotonic(), versions)
    return versions


def _main(argv: list[str]) -> int:
    """The detached builder: ``build VERSION ROOT``, run holding the lock :func:`start_build` took for it."""
    if len(argv) != 3 or argv[0] != "build":
        print("usage: environments.py build VERSION ROOT", file=sys.stderr)
        return 2
    try:
        _build(argv[1], argv[2], lambda line: None)
    except EnvironmentSetupError:
        return 1
    except BaseException as exc:  # whatever stops the builder, the waiting operation must learn why
        _paths(argv[1], argv[2])["failed"].write_text(f"the build of JupyterHub {argv[1]} stopped: {exc!r}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
