"""Test doubles for backends: first-class, registered like the real ones.

They keep all they know in the ``state`` dict the console stores, so they behave the same in the web process, an
in-process worker or a separate ``hubfleet worker``.

- ``fake``: deploys instantly and is ready at once.
- ``fake-slow``: takes ``delay`` seconds to deploy (default 2), blocking the caller.
- ``fake-delayed``: deploys at once and becomes ready ``delay`` seconds later (default 5), as a real hub does.
- ``fake-never-ready``: deploys, runs, never answers health.
- ``fake-failing``: every deploy raises :class:`BackendError`.

Any of them fails a deploy whose config says ``{"FakeBackend": {"fail_deploy": true}}``, as a release whose
settings break JupyterHub would.

Archives are real files: ``archive`` writes the layout of :mod:`clusters.archives` (a small SQLite database naming
the hub's users, and their homes as a test wrote them with ``FakeBackend.write_home``) to the ``archives`` setting's
directory; ``restore_archive`` reads it back, checksums checked, and the restored hub's users find their files
(``FakeBackend.homes``).  ``FakeBackend.fail_archive`` makes the next archive of a hub fail, as a full disk would.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import tempfile
import time
from pathlib import Path

# Hubs of the fakes that a test declared dead (``FakeBackend.kill``), by slug: alive() answers False for them
# until their next deploy, as a killed local hub's process table would.
_killed: set[str] = set()
# Lines a test made the fakes' hubs write to their logs (``FakeBackend.write_log``), by slug; gone with the hub.
_logs: dict[str, list[str]] = {}
# Users' files on the fakes' hubs, by slug: {user: {file name: text}}; gone with the hub, back with a restore.
_homes: dict[str, dict[str, dict[str, str]]] = {}
# Hubs whose next archive fails (``FakeBackend.fail_archive``).
_archive_failures: set[str] = set()

from clusters import archives as archive_files  # noqa: E402
from clusters.base import ArchiveResult, BackendError, HubLog, HubSpec, HubStatus, Log, register  # noqa: E402
from clusters.config_digest import settings_digest  # noqa: E402


@register("fake")
class FakeBackend:
    """``reachable``: the hubs' URLs answer HTTP (a test points them at stand-in servers), so probe them;
    ``probe_token``: the token the probe sends them (none by default)."""

    supervised = True
    render_target = "local"

    def __init__(self, delay: float = 0.0, reachable: bool = False, probe_token: str | None = None,
                 archives: str | None = None, **_ignored):
        self.delay = float(delay)
        self.reachable = reachable
        self.probe_token = probe_token
        self.archives = Path(archives or Path(tempfile.gettempdir()) / "hubfleet-fake-archives")

    @staticmethod
    def write_home(slug: str, user: str, name: str, text: str) -> None:
        """Make user ``user`` of hub ``slug`` write ``text`` to the file ``name`` in their home."""
        _homes.setdefault(slug, {}).setdefault(user, {})[name] = text

    @staticmethod
    def homes(slug: str) -> dict[str, dict[str, str]]:
        """The users' files on hub ``slug``: {user: {file name: text}}."""
        return {user: dict(files) for user, files in _homes.get(slug, {}).items()}

    @staticmethod
    def fail_archive(slug: str) -> None:
        """Make the next archive of hub ``slug`` fail (nothing is written)."""
        _archive_failures.add(slug)

    def archive(self, state: dict, target: str, log: Log) -> ArchiveResult:
        slug = state.get("slug")
        if not state.get("deployed"):
            raise BackendError("the hub has no database to archive: it never started")
        if slug in _archive_failures:
            _archive_failures.discard(slug)
            raise BackendError(f"no space left to archive {slug}")
        with tempfile.TemporaryDirectory() as scratch:
            database = Path(scratch) / archive_files.DATABASE
            with contextlib.closing(sqlite3.connect(database)) as db:
                db.execute("CREATE TABLE users (name TEXT)")
                db.executemany("INSERT INTO users VALUES (?)", [(user,) for user in sorted(_homes.get(slug, {}))])
                db.commit()
            homes = {}
            for user, files in _homes.get(slug, {}).items():
                homes[user] = Path(scratch) / "homes" / user
                homes[user].mkdir(parents=True)
                for name, text in files.items():
                    (homes[user] / name).write_text(text)
            result = archive_files.write(self.archives / target, slug, database, homes)
        log(f"archived {slug} to {result.location}")
        return result

    def restore_archive(self, spec: HubSpec, state: dict, archive: str, log: Log, sha256: str | None = None) -> None:
        if state.get("deployed") and spec.slug not in _killed:
            raise BackendError(f"hub {spec.slug} is running already: an archive is restored before its first start")
        restored: dict[str, dict[str, str]] = {}
        with archive_files.open_checked(archive, sha256) as tar, tempfile.TemporaryDirectory() as scratch:
            archive_files.extract_database(tar, Path(scratch) / archive_files.DATABASE)
            for user in archive_files.manifest_of(tar)["users"]:
                home = Path(scratch) / user["name"]
                home.mkdir()
                archive_files.extract_home(tar, user["name"], home)
                restored[user["name"]] = {f.name: f.read_text() for f in home.iterdir() if f.is_file()}
        _homes[spec.slug] = restored
        log(f"restored {len(restored)} user(s) into {spec.slug}")

    def purge_archive(self, location: str, log: Log) -> None:
        Path(location).unlink(missing_ok=True)
        log(f"deleted {location}")

    @staticmethod
    def kill(slug: str) -> None:
        """Make the hub ``slug`` look as if its processes died (tests of supervision)."""
        _killed.add(slug)

    @staticmethod
    def write_log(slug: str, *lines: str) -> None:
        """Append ``lines`` to the log of the hub ``slug``, as if the hub had written them (tests of log views)."""
        _logs.setdefault(slug, []).extend(lines)

    @staticmethod
    def fingerprint(spec: HubSpec) -> str:
        # The state is stored by the console, so it keeps a digest of the config, never the config (secrets).
        return hashlib.sha256(json.dumps([spec.config, spec.secrets, spec.jupyterhub_version], sort_keys=True).encode()).hexdigest()

    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict:
        if spec.config.get("FakeBackend", {}).get("fail_deploy"):
            raise BackendError(f"{spec.slug} refuses this configuration")
        if state.get("deployed") and state.get("config") == self.fingerprint(spec) and spec.slug not in _killed:
            log(f"{spec.slug} already deployed")
            return state
        if self.delay:
            log(f"deploying {spec.slug} (takes {self.delay:g}s)")
            time.sleep(self.delay)
        log(f"deployed {spec.slug}")
        _killed.discard(spec.slug)
        return {"deployed": True, "slug": spec.slug, "url": f"http://{spec.slug}.fake.invalid/", "config": self.fingerprint(spec),
                "version": spec.jupyterhub_version or "fake", "config_digest": self.config_digest(spec),
                "restarts": state.get("restarts", 0)}

    @staticmethod
    def config_digest(spec: HubSpec) -> str:
        """As a local hub digests its settings; the fake hub reports the one of its last deploy (kept in its
        state)."""
        return settings_digest(spec.full_config())

    def restart(self, spec: HubSpec, state: dict, log: Log) -> dict:
        state = self.deploy(spec, {}, log)
        return {**state, "restarts": state.get("restarts", 0) + 1}

    def stop(self, state: dict, log: Log) -> None:
        log("stopped")

    def backup(self, state: dict, name: str, log: Log) -> str:
        log(f"backed up as {name}")
        return name

    def restore(self, state: dict, backup: str, log: Log) -> None:
        log(f"restored {backup}")

    def remove(self, state: dict, log: Log) -> None:
        _killed.add(state.get("slug"))  # gone until deployed again
        _logs.pop(state.get("slug"), None)
        _homes.pop(state.get("slug"), None)
        log("removed")

    def status(self, state: dict) -> HubStatus:
        if not self.alive(state):
            return HubStatus(running=False, ready=False, message="not deployed", phase="pending")
        return HubStatus(running=True, ready=True, url=state["url"], version=state.get("version", "fake"), users=0,
                         phase="succeeded", config_digest=state.get("config_digest"))

    def alive(self, state: dict) -> bool | None:
        return bool(state.get("deployed")) and state.get("slug") not in _killed

    def log_tail(self, state: dict, lines: int = 200) -> HubLog:
        if not state.get("deployed"):
            return HubLog(reason="the hub was never deployed, so it has no log yet")
        written = [f"[I JupyterHub app] Running JupyterHub version {state.get('version', 'fake')}",
                   f"[I JupyterHub app] JupyterHub is now running at {state['url']}",
                   *_logs.get(state["slug"], [])]
        return HubLog(lines=written[-lines:] if lines > 0 else [], source=f"fake log of {state['slug']}")

    def api_url(self, state: dict) -> str | None:
        return state["url"] + "hub/api/" if self.reachable and state.get("url") else None

    def api_token(self, state: dict, purpose: str = "probe") -> str | None:
        return self.probe_token if purpose == "probe" else None


@register("fake-slow")
class SlowBackend(FakeBackend):
    def __init__(self, delay: float = 2.0, **settings):
        super().__init__(delay=delay, **{k: v for k, v in settings.items() if k in ("reachable", "archives")})


@register("fake-delayed")
class DelayedBackend(FakeBackend):
    """Deploys at once; the hub answers ``delay`` seconds later.  The reconciler must not wait by blocking."""

    def __init__(self, delay: float = 5.0, **settings):
        super().__init__(**{k: v for k, v in settings.items() if k in ("reachable", "archives")})
        self.delay_ready = float(delay)

    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict:
        state = super().deploy(spec, state, log)
        return state if state.get("ready_at") else {**state, "ready_at": time.time() + self.delay_ready}

    def status(self, state: dict) -> HubStatus:
        status = super().status(state)
        wait = state.get("ready_at", 0) - time.time()
        if status.ready and wait > 0:
            return HubStatus(running=True, ready=False, url=status.url, message=f"starting (ready in {wait:.1f}s)",
                             retry_after=wait, phase="progressing")
        return status


@register("fake-never-ready")
class NeverReadyBackend(FakeBackend):
    def status(self, state: dict) -> HubStatus:
        if not self.alive(state):
            return HubStatus(running=False, ready=False, message="not deployed", phase="pending")
        return HubStatus(running=True, ready=False, url=state["url"], message="health check never answers",
                         phase="progressing")


@register("fake-failing")
class FailingBackend(FakeBackend):
    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict:
        log(f"deploying {spec.slug}")
        raise BackendError("the fake backend fails every deploy")
