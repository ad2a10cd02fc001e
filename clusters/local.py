"""The ``local`` backend: every hub is a real JupyterHub process on this machine.

Each hub gets a directory ``<root>/<slug>/`` (mode 0700) holding a fixed ``jupyterhub_config.py``, the rendered
``settings.json`` (ports, paths, the console's service token), JupyterHub's own SQLite database, its cookie secret and
``hub.log``, each of mode 0600.  JupyterHub starts configurable-http-proxy itself.  At start the config file
records the digest of the settings it loaded, with its process id, in ``running-config.json``
(``clusters/config_digest.py``): :meth:`LocalBackend.status` reports it, and the console compares it with what it
would deploy (drift).

Hub users are kept apart the way The Littlest JupyterHub does it.  When the console runs as root, every hub user's
server runs as a system account of its own (``hf-<hub>-<user>-<hash>``, created at the user's first start by the
hub's ``SystemAccountSpawner``, see ``local_jupyterhub_config.py``), with a home of mode 0700 under ``homes``
(``/home``); the account's comment names the hub's directory, which is how ``remove`` finds and deletes the accounts
(their processes killed, their homes removed).  Such users read nothing of the console (its data directory is 0711,
everything in it 0600/0700 but the release environments) nor of another hub or user.  Without root no account can be
made: servers then run as the console's own user, so the hub serves one person (the first who starts a server) on
127.0.0.1 only, and its status says why.

Every process that belongs to a hub (JupyterHub, its proxy, its single-user servers) carries the environment variable
``HUBFLEET_HUB_DIR=<its directory>``.  That marker, not a remembered pid, is how the backend finds a hub's processes:
after a console crash between starting a hub and saving its state, the next ``deploy`` adopts the running process
instead of starting a second one, and ``remove`` never leaves a proxy or a notebook server behind.

A decommissioned hub is archived (``archive``) into ``<archives>/<name>.tar.gz`` (``archives`` beside ``root`` by
default; layout in ``clusters/archives.py``); ``restore_archive`` puts one into a new hub before its first start,
making its users' accounts as the spawner would (``local_accounts.py``, shared with the hub).
"""
from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from clusters import archives as archive_files
from clusters.base import LOG_TAIL_BYTES, ArchiveResult, BackendError, HubLog, HubSpec, HubStatus, Log, register
from clusters.environments import EnvironmentSetupError, python_for, unreachable
from clusters.local_accounts import account_name, ensure_account
from clusters.synthetic import CHECK_USER
from clusters.local_files import write_hub_config
from clusters.config_digest import RECORD, settings_digest

MARKER = "HUBFLEET_HUB_DIR"
SERVICE_NAME = "hubfleet"
# What the console may do with its token: read-only probing.
SERVICE_SCOPES = ["read:hub", "list:users", "read:users", "read:users:activity", "read:servers", "read:metrics"]
# A second token, for synthetic checks only: they create a test user and start and stop its server.
CHECK_SERVICE = "hubfleet-check"
CHECK_SCOPES = ["admin:users", "admin:servers", "read:users", "read:servers"]
PROBE_TIMEOUT = 2.0
# Setting names whose values are secrets: never copied out of the hub's directory.
SECRET_KEYS = frozenset({"client_secret", "user_password", "api_token", "admin_password", "admin_password_hash"})
ACCOUNT_COMMENT = "hubfleet {}"  # as local_jupyterhub_config.py marks a hub's system accounts: its directory
SINGLE_USER = ("the console does not run as root, so it cannot create a system account per hub user: this hub "
               "serves one person (the first to start a server), on 127.0.0.1 only")
ACCOUNTS = "each hub user's server runs as a system account of its own"
PORTS_PER_HUB = 3
# The last line of a Python traceback ("ValueError: Found undefined service ...") in a hub's log.
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b[\w.]*: \S")  # public proxy port, proxy API port, hub's internal port
# Seconds a hub's processes get to exit after SIGTERM before what is left is killed; a hub takes well under 2 s.
STOP_GRACE = 10.0

# JupyterHub processes this process started, by hub directory.  Kept so they are reaped when they exit (no zombies)
# and are not garbage-collected while running; hubs started by an earlier console are found by their marker instead.
_children: dict[str, subprocess.Popen] = {}


def _reap(hub_dir: Path) -> None:
    child = _children.get(str(hub_dir))
    if child is not None and child.poll() is not None:
        _children.pop(str(hub_dir), None)  # the monitor and the worker may both get here


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def can_create_accounts() -> bool:
    """Whether this process can create a system account per hub user (it runs as root, with ``useradd``)."""
    return os.geteuid() == 0 and shutil.which("useradd") is not None


def isolation() -> str:
    """How local hubs started from this process keep their users apart, in a sentence for a person."""
    return ACCOUNTS if can_create_accounts() else SINGLE_USER.replace("this hub serves", "each hub serves")


def hub_accounts(hub_dir: Path | str, prefix: bool = False) -> list[pwd.struct_passwd]:
    """The system accounts of the hub in ``hub_dir`` (with ``prefix``: of every hub under it)."""
    comment = ACCOUNT_COMMENT.format(hub_dir)
    return [entry for entry in pwd.getpwall()
            if entry.pw_gecos == comment or (prefix and entry.pw_gecos.startswith(comment))]


def remove_account(entry: pwd.struct_passwd, log: Log) -> None:
    """Kill every process of the account, then delete it with its home."""
    killed = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.uids().real == entry.pw_uid:
                proc.kill()
                killed.append(proc)
    deadline = time.monotonic() + 5  # userdel refuses an account that still runs something
    while any(_running(proc) for proc in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    done = subprocess.run(["userdel", "--remove", entry.pw_name], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True)
    if done.returncode not in (0, 12):  # 12: its home was gone already
        raise BackendError(f"could not remove the system account {entry.pw_name}: {done.stderr.strip()[:300]}")
    log(f"removed the system account {entry.pw_name} and its home")


def read_end(path: Path, limit: int = LOG_TAIL_BYTES) -> list[str]:
    """The lines in the last ``limit`` bytes of the file at ``path`` (the first one dropped when the read began in
    the middle of a line).  Seeks from the end, so a log of any size costs the same.  Raises ``OSError``."""
    with open(path, "rb") as file:
        start = max(0, file.seek(0, os.SEEK_END) - limit)
        file.seek(start)
        lines = file.read().decode(errors="replace").splitlines()
    return lines[1:] if start else lines


def blank(text: str, secrets: list[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by asterisks (give the longest first)."""
    for secret in secrets:
        text = text.replace(secret, "********")
    return text


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # also when an older console made it


def _private_file(path: Path, mode: str = "w"):
    """Open ``path`` for writing ("w") or appending ("a"), created with mode 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode)


def _default_proxy_command() -> str:
    found = Path(__file__).resolve().parent.parent / "node_modules" / ".bin" / "configurable-http-proxy"
    if found.exists():
        return str(found)
    return shutil.which("configurable-http-proxy") or "configurable-http-proxy"


@register("local")
class LocalBackend:
    """Run hubs as local JupyterHub processes under ``root``.

    ``port_range`` is ``(first, last)`` inclusive; each hub takes three ports from it.  ``python`` is the interpreter
    whose environment has JupyterHub installed (a release may name another).  ``homes`` holds the home directories of
    hub users' system accounts.  ``ip`` is where hubs serve when they have system accounts; 127.0.0.1 otherwise.
    ``archives`` is where decommissioned hubs' archives go (default: ``archives`` beside ``root``, mode 0700).
    """

    supervised = True  # nothing else restarts a local hub whose process died
    render_target = "local"
    NESTED = ".throw-away"  # directory of the root that holds throw-away roots (see ``throw_away``)

    def __init__(self, root: str, port_range: tuple[int, int] | list[int] = (18000, 18999), ip: str = "127.0.0.1",
                 python: str | None = None, proxy_command: str | None = None, start_timeout: int = 60,
                 singleuser_cmd: list[str] | None = None, environments: str | None = None, homes: str = "/home",
                 archives: str | None = None):
        self.root = Path(root)
        self.archives = Path(archives) if archives else self.root.parent / "archives"
        self.port_range = (int(port_range[0]), int(port_range[1]))
        self.accounts = can_create_accounts()
        self.ip = ip if self.accounts else "127.0.0.1"
        self.homes = Path(homes)
        self.python = python or sys.executable
        self.proxy_command = proxy_command or _default_proxy_command()
        self.start_timeout = start_timeout
        self.singleuser_cmd = singleuser_cmd
        self.environments = Path(environments) if environments else self.root.parent / "environments"
        self.ports_root = self.root  # whose hubs' ports this backend must not take, and where their lock is

    def throw_away(self, name: str) -> "LocalBackend":
        """A backend for short-lived hubs (a release's smoke test) in ``root/.throw-away/<name>``: same settings, and
        the same ports, so a throw-away hub and the cluster's hubs never take one port twice."""
        nested = LocalBackend.__new__(LocalBackend)
        nested.__dict__.update(self.__dict__, root=self.root / self.NESTED / name)
        return nested

    # -- paths and processes ------------------------------------------------------------------------------------

    def hub_dir(self, slug: str) -> Path:
        return self.root / slug

    def _dir_of(self, state: dict) -> Path | None:
        return Path(state["dir"]) if state.get("dir") else None

    @staticmethod
    def iter_processes(hub_dir: Path):
        """Yield every live process carrying this hub's marker (JupyterHub, proxy, single-user servers)."""
        wanted = str(hub_dir)
        for proc in psutil.process_iter():
            if proc.pid == os.getpid():
                continue
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(MARKER) == wanted and proc.status() != psutil.STATUS_ZOMBIE:
                    yield proc

    def processes(self, hub_dir: Path) -> list[psutil.Process]:
        """The hub's processes, and whatever its users' accounts run (a user may start one without the marker)."""
        found = list(self.iter_processes(hub_dir))
        uids = {entry.pw_uid for entry in hub_accounts(hub_dir)}
        if uids:
            pids = {proc.pid for proc in found}
            for proc in psutil.process_iter():
                with contextlib.suppress(psutil.Error):
                    if proc.uids().real in uids and proc.pid not in pids:
                        found.append(proc)
        return found

    def _main_process(self, hub_dir: Path, pid: int | None = None) -> psutil.Process | None:
        """The hub's JupyterHub process; ``pid`` is a hint checked first to spare a scan of every process."""
        _reap(hub_dir)
        config = str(hub_dir / "jupyterhub_config.py")
        candidates = []
        if pid:
            with contextlib.suppress(psutil.Error):
                candidates = [psutil.Process(pid)]
        for proc in itertools.chain(candidates, self.iter_processes(hub_dir)):
            with contextlib.suppress(psutil.Error):
                if config in proc.cmdline() and proc.environ().get(MARKER) == str(hub_dir) \
                        and proc.status() != psutil.STATUS_ZOMBIE:
                    return proc
        return None

    # -- ports ----------------------------------------------------------------------------------------------------

    def _reserved_ports(self) -> set[int]:
        taken: set[int] = set()
        for settings in [*self.ports_root.glob("*/ports.json"),
                         *self.ports_root.glob(f"{self.NESTED}/*/*/ports.json")]:
            with contextlib.suppress(OSError, ValueError):
                taken.update(json.loads(settings.read_text()).values())
        return taken

    def _port_is_free(self, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As JupyterHub and the proxy bind: connections of a stopped hub in TIME_WAIT do not make a port busy.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.ip, port))
            except OSError:
                return False
        return True

    def _allocate_ports(self, hub_dir: Path) -> dict[str, int]:
        """Ports already recorded for the hub, or three new ones from the range; kept in ``ports.json``.

        Runs under a file lock so two workers on one machine never hand out the same port.
        """
        ports_file = hub_dir / "ports.json"
        _private_dir(self.root)
        with open(self.ports_root / ".ports.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if ports_file.exists():
                return json.loads(ports_file.read_text())
            taken = self._reserved_ports()
            chosen = []
            for port in range(self.port_range[0], self.port_range[1] + 1):
                if port not in taken and self._port_is_free(port):
                    chosen.append(port)
                    if len(chosen) == PORTS_PER_HUB:
                        break
            else:
                raise BackendError(f"no free ports left in {self.port_range[0]}-{self.port_range[1]}")
            ports = dict(zip(("public", "proxy_api", "hub"), chosen))
            with _private_file(ports_file) as out:
                out.write(json.dumps(ports))
            return ports

    # -- rendering ------------------------------------------------------------------------------------------------

    def _settings(self, spec: HubSpec, hub_dir: Path, ports: dict[str, int], token: str, check_token: str,
                  python: str) -> dict:
        settings = {section: dict(values) for section, values in spec.full_config().items()}

        def put(section: str, **values):
            settings.setdefault(section, {}).update(values)

        hub = settings.setdefault("JupyterHub", {})
        for service in hub.get("services", []):
            if service.get("command"):  # a managed service (e.g. the idle culler) is one of the hub's processes
                service["environment"] = {**service.get("environment", {}), MARKER: str(hub_dir)}
        put("JupyterHub",
            ip=self.ip, port=ports["public"], hub_ip="127.0.0.1", hub_port=ports["hub"],
            db_url=f"sqlite:///{hub_dir / 'jupyterhub.sqlite'}",
            cookie_secret_file=str(hub_dir / "jupyterhub_cookie_secret"),
            pid_file=str(hub_dir / "jupyterhub.pid"),
            services=[*hub.get("services", []), {"name": SERVICE_NAME, "api_token": token},
                      {"name": CHECK_SERVICE, "api_token": check_token}],
            load_roles=[*hub.get("load_roles", []),
                        {"name": "hubfleet-console", "scopes": SERVICE_SCOPES, "services": [SERVICE_NAME]},
                        {"name": "hubfleet-check", "scopes": CHECK_SCOPES, "services": [CHECK_SERVICE]}])
        public_url = f"http://{self.ip}:{ports['public']}/"
        put("OAuthenticator", oauth_callback_url=f"{public_url}hub/oauth_callback")
        put("ConfigurableHTTPProxy", api_url=f"http://127.0.0.1:{ports['proxy_api']}",
            command=[self.proxy_command], should_start=True)
        put("JupyterHub", upgrade_db=True)  # a newer release migrates the database (backed up before, see backup())
        put("Spawner", cmd=self.singleuser_cmd or [python, "-m", "jupyterhub.singleuser"],
            environment={**settings.get("Spawner", {}).get("environment", {}), MARKER: str(hub_dir)})
        # The spawner is the backend's to choose, whatever a release says: it is what keeps users apart.
        if self.accounts:
            put("JupyterHub", spawner_class="hubfleet-accounts")
            put("SystemAccountSpawner", hub_slug=spec.slug, hub_dir=str(hub_dir), home_root=str(self.homes))
        else:
            put("JupyterHub", spawner_class="hubfleet-one-person")
            put("OnePersonSpawner", owner_file=str(hub_dir / "owner"), exempt=[CHECK_USER],
                home_dir_template=str(hub_dir / "home" / "{username}"))
        return settings

    def _python(self, spec: HubSpec, log: Log) -> str:
        """The hub's interpreter: with system accounts, one they may run (an environment, if need be)."""
        if spec.jupyterhub_version is None and (not self.accounts or self.python != sys.executable):
            return self.python
        try:
            return python_for(spec.jupyterhub_version, self.environments, log, shared=self.accounts)
        except EnvironmentSetupError as exc:
            raise BackendError(str(exc)) from None

    def _write_settings(self, spec: HubSpec, hub_dir: Path, python: str) -> tuple[dict, bool]:
        """Write settings.json for ``spec``; returns (ports, changed)."""
        _private_dir(self.root)
        _private_dir(hub_dir)
        write_hub_config(hub_dir)
        ports = self._allocate_ports(hub_dir)
        token = self._read_token(hub_dir) or secrets.token_hex(32)
        check_token = self._read_token(hub_dir, CHECK_SERVICE) or secrets.token_hex(32)
        settings_file = hub_dir / "settings.json"
        new = json.dumps(self._settings(spec, hub_dir, ports, token, check_token, python), indent=1,
                         sort_keys=True)
        old = settings_file.read_text() if settings_file.exists() else None
        if new != old:
            with _private_file(settings_file) as out:
                out.write(new)
        return ports, new != old

    @staticmethod
    def _read_token(hub_dir: Path, name: str = SERVICE_NAME) -> str | None:
        try:
            settings = json.loads((hub_dir / "settings.json").read_text())
        except (OSError, ValueError):
            return None
        for service in settings.get("JupyterHub", {}).get("services", []):
            if service.get("name") == name:
                return service.get("api_token")
        return None

    # -- the interface --------------------------------------------------------------------------------------------

    def _state(self, hub_dir: Path, ports: dict[str, int], pid: int | None) -> dict:
        return {"dir": str(hub_dir), "ports": ports, "pid": pid, "url": f"http://{self.ip}:{ports['public']}/",
                "isolation": "system accounts" if self.accounts else "single-user"}

    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict:
        hub_dir = self.hub_dir(spec.slug)
        python = self._python(spec, log)
        ports, changed = self._write_settings(spec, hub_dir, python)
        main = self._main_process(hub_dir)
        if main and not changed:
            log(f"JupyterHub already running for {spec.slug} (pid {main.pid}); adopting it")
            return self._state(hub_dir, ports, main.pid)
        if main:
            log("configuration changed; restarting JupyterHub")
        return self._start(hub_dir, ports, python, log)

    def restart(self, spec: HubSpec, state: dict, log: Log) -> dict:
        hub_dir = self.hub_dir(spec.slug)
        python = self._python(spec, log)
        ports, _ = self._write_settings(spec, hub_dir, python)
        return self._start(hub_dir, ports, python, log)

    def backup(self, state: dict, name: str, log: Log) -> str:
        hub_dir = self._dir_of(state)
        database = hub_dir / "jupyterhub.sqlite"
        target = hub_dir / "backups" / f"{name}.sqlite"
        _private_dir(target.parent)
        target.touch(mode=0o600)
        # SQLite's online backup: consistent even while JupyterHub writes
        with contextlib.closing(sqlite3.connect(database)) as source, \
                contextlib.closing(sqlite3.connect(target)) as copy:
            source.backup(copy)
        log(f"backed up the hub's database to {target}")
        return str(target)

    def restore(self, state: dict, backup: str, log: Log) -> None:
        hub_dir = self._dir_of(state)
        self._stop(hub_dir, log)
        shutil.copyfile(backup, hub_dir / "jupyterhub.sqlite")
        log(f"restored the hub's database from {backup}")

    # -- archives -----------------------------------------------------------------------------------------------

    def _home_of(self, hub_dir: Path, username: str) -> Path | None:
        """Where the hub's spawner keeps ``username``'s home (None: the user never had one)."""
        if not self.accounts:
            home = hub_dir / "home" / username
            return home if home.is_dir() else None
        try:
            return Path(pwd.getpwnam(account_name(hub_dir.name, str(hub_dir), username)).pw_dir)
        except KeyError:
            return None

    def archive(self, state: dict, target: str, log: Log) -> ArchiveResult:
        """Write ``<archives>/<target>``: the hub's database, copied with SQLite's online backup (consistent while
        JupyterHub writes), and the home of every user in that copy (found as the spawner made it: the user's
        system account, or ``home/<user>`` without root).  The hub keeps running."""
        hub_dir = self._dir_of(state)
        if hub_dir is None or not (hub_dir / "jupyterhub.sqlite").exists():
            raise BackendError("the hub has no database to archive: it never started")
        copy = Path(self.backup(state, f"archive-{secrets.token_hex(4)}", log))
        try:
            with contextlib.closing(sqlite3.connect(copy)) as db:
                users = [row[0] for row in db.execute("SELECT name FROM users ORDER BY name")]
            homes = {name: self._home_of(hub_dir, name) for name in users}
            result = archive_files.write(self.archives / target, hub_dir.name, copy, homes)
        finally:
            copy.unlink(missing_ok=True)
        log(f"archived the database and {sum(1 for h in homes.values() if h)} home(s) of {len(users)} user(s) "
            f"to {result.location} ({result.size} bytes, sha256 {result.sha256})")
        return result

    def restore_archive(self, spec: HubSpec, state: dict, archive: str, log: Log, sha256: str | None = None) -> None:
        """Put the archive's database into the new hub's directory and each user's home where the hub's spawner
        will look for it: with root, in a system account made exactly as ``SystemAccountSpawner`` makes it (same
        name, comment and home; ``local_accounts.py``), its files owned by that account; without root, in
        ``home/<user>``.  At its first start JupyterHub finds its users in the database and the spawner adopts the
        accounts.  Refuses a hub that already runs and an archive whose ``sha256`` does not match."""
        hub_dir = self.hub_dir(spec.slug)
        if self._main_process(hub_dir) is not None:
            raise BackendError(f"hub {spec.slug} is running already: an archive is restored before its first start")
        _private_dir(self.root)
        _private_dir(hub_dir)
        with archive_files.open_checked(archive, sha256) as tar:
            manifest = archive_files.manifest_of(tar)
            archive_files.extract_database(tar, hub_dir / "jupyterhub.sqlite")
            log(f"restored the hub's database from {Path(archive).name}")
            for user in manifest.get("users", []):
                name = user["name"]
                if self.accounts:
                    try:
                        entry = ensure_account(account_name(spec.slug, str(hub_dir), name), str(hub_dir),
                                               str(self.homes))
                    except RuntimeError as exc:
                        raise BackendError(str(exc)) from None
                    home, owner = Path(entry.pw_dir), (entry.pw_uid, entry.pw_gid)
                else:
                    home, owner = hub_dir / "home" / name, (None, None)
                    home.mkdir(mode=0o700, parents=True, exist_ok=True)
                files = archive_files.extract_home(tar, name, home, *owner)
                log(f"restored {name}'s home ({files} file(s))"
                    + (f" for account {home.name}" if self.accounts else ""))

    def purge_archive(self, location: str, log: Log) -> None:
        path = Path(location)
        if path.exists():
            path.unlink()
            log(f"deleted the archive {path}")
        else:
            log(f"the archive {path} was already gone")

    def _start(self, hub_dir: Path, ports: dict[str, int], python: str, log: Log) -> dict:
        self._stop(hub_dir, log)  # a proxy left by a killed hub would hold the ports
        busy = [p for p in ports.values() if not self._wait_port_free(p)]
        if busy:
            raise BackendError(f"ports {busy} are in use by another program; cannot start the hub")
        blocked = unreachable(python) if self.accounts else None
        if blocked is not None:
            raise BackendError(f"hub users' accounts could not run {python}: other users may not pass {blocked} "
                               f"(make it at least mode 0711)")
        # The console's own settings (database URL, secret key) are none of the hub's business.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBFLEET_")}
        env[MARKER] = str(hub_dir)
        # the proxy, and the hub's own environment (JupyterHub runs its `alembic` from PATH to upgrade its database)
        env["PATH"] = os.pathsep.join([str(Path(self.proxy_command).parent), str(Path(python).parent),
                                       env.get("PATH", "")])
        env.pop("JUPYTERHUB_API_TOKEN", None)
        with _private_file(hub_dir / "hub.log", "ab") as out:
            proc = subprocess.Popen(
                [python, "-m", "jupyterhub", "-f", str(hub_dir / "jupyterhub_config.py")],
                cwd=hub_dir, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                umask=0o077,  # what JupyterHub writes (its database, cookie secret) is its own
                start_new_session=True)  # its own process group: a console exit or Ctrl-C does not reach it
        _children[str(hub_dir)] = proc
        # The log's place is not printed: the hub's page shows the log itself (``log_tail``), and its path only to
        # operators.
        log(f"started JupyterHub (pid {proc.pid}) on {self.ip}:{ports['public']}")
        log(ACCOUNTS if self.accounts else SINGLE_USER)
        return self._state(hub_dir, ports, proc.pid)

    def _wait_port_free(self, port: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self._port_is_free(port):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _stop(self, hub_dir: Path, log: Log, grace: float = STOP_GRACE) -> None:
        """Stop every process of the hub: SIGTERM to all of them at once, wait until they have exited, SIGKILL only
        what is still there after ``grace`` seconds.  Returns as soon as the last one is gone.

        JupyterHub gets the signal first, so it records its servers as stopped and takes its proxy down itself; its
        proxy, managed services and single-user servers get theirs directly too, so none waits on JupyterHub
        stopping them one after the other (with SIGINT and a 10 s patience each).
        """
        processes = self.processes(hub_dir)
        config = str(hub_dir / "jupyterhub_config.py")
        main = [p for p in processes if _cmdline(p) and config in _cmdline(p)]
        if processes:
            log(f"stopping JupyterHub (pid {main[0].pid})" if main else "stopping the hub's leftover processes")
        for proc in main + [p for p in processes if p not in main]:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
        self._wait_gone(hub_dir, processes, grace)
        # A process born meanwhile (a proxy JupyterHub restarted as it went down) carries the marker too.
        leftovers = self.processes(hub_dir)
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if leftovers:
            log(f"killed {len(leftovers)} process(es) of the hub still running {grace:g}s after SIGTERM")
            self._wait_gone(hub_dir, leftovers, 5.0)
        child = _children.pop(str(hub_dir), None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(1)

    @staticmethod
    def _wait_gone(hub_dir: Path, processes: list[psutil.Process], timeout: float) -> None:
        """Wait until none of ``processes`` runs any more (an exited process its parent has not reaped yet counts
        as gone), at most ``timeout`` seconds.

        Polls instead of ``psutil.wait_procs``: that waits for a process that is not our child until its parent
        reaps it, which a hub's proxy or services, once JupyterHub is gone, leave to whoever adopts them.
        """
        deadline = time.monotonic() + timeout
        while True:
            _reap(hub_dir)  # our own child (JupyterHub) stays a zombie until we wait for it
            if not any(_running(p) for p in processes) or time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def stop(self, state: dict, log: Log) -> None:
        hub_dir = self._dir_of(state)
        if hub_dir is not None:
            self._stop(hub_dir, log)

    def remove(self, state: dict, log: Log) -> None:
        hub_dir = self._dir_of(state)
        if hub_dir is None:
            log("the hub was never deployed; nothing to remove")
            return
        self._stop(hub_dir, log)
        for entry in hub_accounts(hub_dir):
            remove_account(entry, log)
        if hub_dir.exists():
            shutil.rmtree(hub_dir)
            log(f"removed {hub_dir}")

    @staticmethod
    def config_digest(spec: HubSpec) -> str:
        """The digest a hub started with ``spec`` records of the settings it loads (machine settings aside)."""
        return settings_digest(spec.full_config())

    @staticmethod
    def _loaded_digest(hub_dir: Path, pid: int) -> str | None:
        """The digest the JupyterHub process ``pid`` recorded of the settings it loaded at start, or None (a hub
        started before hubs recorded one, or the record of an earlier process)."""
        try:
            record = json.loads((hub_dir / RECORD).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("pid") != pid or not isinstance(record.get("digest"), str):
            return None
        return record["digest"]

    def running_digest(self, state: dict) -> str | None:
        """Cheap (no network): the digest of the settings the hub's running JupyterHub loaded; None when it does
        not run or recorded none."""
        hub_dir = self._dir_of(state)
        main = self._main_process(hub_dir, state.get("pid")) if hub_dir is not None else None
        return self._loaded_digest(hub_dir, main.pid) if main is not None else None

    def status(self, state: dict) -> HubStatus:
        hub_dir = self._dir_of(state)
        main = self._main_process(hub_dir, state.get("pid")) if hub_dir is not None else None
        if main is None:
            return HubStatus(running=False, ready=False, url=state.get("url"),
                             phase="failed" if hub_dir is not None and hub_dir.exists() else "pending",
                             message="JupyterHub is not running" + self._log_tail(hub_dir))
        url = state["url"]
        try:
            health = httpx.get(url + "hub/health", timeout=PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            return HubStatus(running=True, ready=False, url=url, phase="progressing",
                             message=f"no answer yet: {exc.__class__.__name__}")
        if health.status_code != 200:
            return HubStatus(running=True, ready=False, url=url, phase="progressing",
                             message=f"/hub/health answered {health.status_code}")
        version = users = None
        headers = {"Authorization": f"token {self._read_token(hub_dir)}"}
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            version = httpx.get(url + "hub/api/", timeout=PROBE_TIMEOUT).json()["version"]
            page = httpx.get(url + "hub/api/users", params={"limit": 1}, timeout=PROBE_TIMEOUT,
                             headers={**headers, "Accept": "application/jupyterhub-pagination+json"})
            users = page.json()["_pagination"]["total"]
        return HubStatus(running=True, ready=True, url=url, version=version, users=users, phase="succeeded",
                         message=SINGLE_USER if state.get("isolation") == "single-user" else "",
                         config_digest=self._loaded_digest(hub_dir, main.pid))

    def alive(self, state: dict) -> bool | None:
        hub_dir = self._dir_of(state)
        return hub_dir is not None and self._main_process(hub_dir, state.get("pid")) is not None

    def _log_tail(self, hub_dir: Path | None, lines: int = 6) -> str:
        """The error JupyterHub stopped with (when its log ends with a traceback) and the end of its log, every
        secret of its settings blanked out (it goes into operation logs and hub pages).  Reads the last 64 KiB only:
        a hub that ran for months has a long log."""
        try:
            recent = read_end(hub_dir / "hub.log")
        except (OSError, TypeError):
            return ""
        error = next((line.strip() for line in reversed(recent[-40:]) if ERROR_LINE.match(line)), "")
        secrets = sorted(self._secrets(hub_dir), key=len, reverse=True)
        tail = [blank(line, secrets) for line in recent[-lines:]]
        error = blank(error, secrets)
        tail = [line[:300] for line in tail]  # cut after blanking, so no part of a secret shows; a line may be long
        return (f": {error[:300]}" if error else "") + ("; last lines of its log:\n" + "\n".join(tail) if tail else "")

    def log_tail(self, state: dict, lines: int = 200) -> HubLog:
        """The end of the hub's ``hub.log`` (JupyterHub's and its proxy's output), the secrets of its settings
        (client secrets, the console's service tokens) blanked; never raises."""
        hub_dir = self._dir_of(state)
        if hub_dir is None:
            return HubLog(reason="the hub was never deployed, so it has no log yet")
        path = hub_dir / "hub.log"
        try:
            recent = read_end(path)
        except FileNotFoundError:
            return HubLog(reason="JupyterHub has not been started yet, so there is no log", source=str(path))
        except OSError as exc:
            return HubLog(reason=f"the hub's log cannot be read: {exc.strerror or type(exc).__name__}",
                          source=str(path))
        secrets = sorted(self._secrets(hub_dir), key=len, reverse=True)
        tail = [blank(line, secrets) for line in (recent[-lines:] if lines > 0 else [])]
        return HubLog(lines=tail, reason="" if tail else "the hub's log is empty", source=str(path))

    @staticmethod
    def _secrets(hub_dir: Path) -> set[str]:
        found: set[str] = set()

        def walk(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key in SECRET_KEYS and isinstance(value, str) and value:
                        found.add(value)
                    else:
                        walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        with contextlib.suppress(OSError, ValueError):
            walk(json.loads((hub_dir / "settings.json").read_text()))
        return found

    def api_url(self, state: dict) -> str | None:
        return state["url"] + "hub/api/" if state.get("url") else None

    def api_token(self, state: dict, purpose: str = "probe") -> str | None:
        hub_dir = self._dir_of(state)
        if hub_dir is None:
            return None
        return self._read_token(hub_dir, CHECK_SERVICE if purpose == "check" else SERVICE_NAME)
