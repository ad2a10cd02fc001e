"""A real single-node Slurm cluster under one directory, for tests and development; never a centre's production Slurm.

:class:`SlurmSite` renders ``slurm.conf`` and a munge key for one machine, then :meth:`SlurmSite.start` runs munged,
slurmctld and slurmd from the distribution's packages (Debian's slurmctld, slurmd, slurm-client and munge;
``scripts/ensure-slurm.sh`` installs them) and :meth:`SlurmSite.stop` ends every process of the site again.

The settings are the ones that work on a machine without systemd and without cgroups (a container, a CI runner):

- munge's key, socket, seed, log and pid files live under the site's directory with absolute paths, the socket
  directory mode 0755 (munged checks it), and ``AuthInfo`` points Slurm at that socket;
- ``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none`` with no ``cgroup.conf``: cgroup tracking fails
  every job on such a machine and drains the node;
- one node named ``localhost`` with the CPUs and memory ``slurmd -C`` reports, slurmd started as ``-N localhost``;
- ``select/cons_tres`` with ``CR_Core`` and ``OverSubscribe=FORCE:8`` on every partition, so more notebook servers
  than cores can run at once;
- slurmctld starts first and slurmd only once ``scontrol ping`` answers: a slurmd started while slurmctld is down
  ignores SIGTERM for minutes.

Two sites run side by side on one machine (pytest-xdist workers each start one): each has its own directory, its own
munged, its own free ports for slurmctld and slurmd and its own spool, state and pid files, so the node name
``localhost`` never collides.

Every client command needs the site's :attr:`SlurmSite.env` (``SLURM_CONF`` and ``PATH``); nothing is written to
``/etc``.  Jobs submitted with that environment carry ``SLURM_CONF`` too, which is how :meth:`SlurmSite.stop` finds
the site's job processes (whose parents, slurmstepd, are not our children) and makes sure none is left.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel")
SBIN = "/usr/sbin"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


class SiteError(RuntimeError):
    """The site cannot start (a missing binary, a daemon that exited or never answered): the message says which,
    with the tail of its log."""


@dataclass(frozen=True)
class Partition:
    """One partition of the site: its name, its time limit in minutes (None: unlimited), whether it is the default."""

    name: str
    max_minutes: int | None = None
    default: bool = False


DEFAULT_PARTITIONS = (Partition("debug", 60, default=True), Partition("long", 7 * 24 * 60))


@dataclass(frozen=True)
class Node:
    """The machine as ``slurmd -C`` sees it (what the node line of slurm.conf must say, or slurmd drains it)."""

    cpus: int
    memory_mb: int
    sockets: int = 1
    cores_per_socket: int = 0
    threads_per_core: int = 1


def missing() -> str | None:
    """None if a site can start on this machine, else the reason in words (which binary is missing, or not root)."""
    absent = [name for name in DAEMONS + CLIENTS + ("mungekey",) if not _which(name)]
    if absent:
        return f"Slurm is not installed ({', '.join(absent)} missing): scripts/ensure-slurm.sh installs it"
    if os.geteuid() != 0:
        return "slurmd runs jobs as their users and must run as root"
    return None


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(SBIN) / name
    return str(candidate) if candidate.exists() else None


def parse_slurmd_c(text: str) -> Node:
    """The node line ``slurmd -C`` prints (``NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105``) as a :class:`Node`.
    Raises ValueError when CPUs or RealMemory is missing."""
    fields = dict(re.findall(r"(\w+)=(\S+)", text))
    try:
        cpus, memory = int(fields["CPUs"]), int(fields["RealMemory"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"slurmd -C printed no CPUs/RealMemory: {text.strip()[:200]!r}") from exc
    return Node(cpus=cpus, memory_mb=memory, sockets=int(fields.get("SocketsPerBoard", 1)),
                cores_per_socket=int(fields.get("CoresPerSocket", 0)),
                threads_per_core=int(fields.get("ThreadsPerCore", 1)))


def render_conf(root: Path, node: Node, ctld_port: int, slurmd_port: int, user: str,
                partitions: tuple[Partition, ...] = DEFAULT_PARTITIONS, cluster: str = "hubfleet") -> str:
    """The slurm.conf of a single-node site under ``root`` (absolute), pure: same arguments, same text.

    Paths are the ones :class:`SlurmSite` creates; ``user`` is SlurmUser and SlurmdUser (the user the site's daemons
    run as).  The timeouts are short because a test waits for them, not because a centre would choose them."""
    layout = (f"Sockets={node.sockets} CoresPerSocket={node.cores_per_socket} ThreadsPerCore={node.threads_per_core}"
              if node.cores_per_socket else "")
    lines = [
        f"ClusterName={cluster}",
        "SlurmctldHost=localhost",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        f"SlurmUser={user}",
        f"SlurmdUser={user}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={root}/munge/munge.socket.2",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/run/slurmctld.pid",
        f"SlurmdPidFile={root}/run/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log",
        f"SlurmdLogFile={root}/log/slurmd.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "MailProg=/bin/true",
        "SchedulerType=sched/backfill",
        # A batch job starts as soon as it is submitted instead of up to 3 s later (batch_sched_delay's default).
        "SchedulerParameters=batch_sched_delay=0",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "SlurmctldTimeout=10",
        "SlurmdTimeout=30",
        "InactiveLimit=0",
        "KillWait=2",
        "MinJobAge=300",
        "MessageTimeout=5",
        f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={node.cpus} {layout} RealMemory={node.memory_mb} State=UNKNOWN"
        .replace("  ", " "),
    ]
    for part in partitions:
        limit = part.max_minutes if part.max_minutes is not None else "INFINITE"
        lines.append(f"PartitionName={part.name} Nodes=localhost Default={'YES' if part.default else 'NO'} "
                     f"MaxTime={limit} State=UP OverSubscribe=FORCE:8")
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SlurmSite:
    """One single-node cluster under ``root`` (a fresh temporary directory when not given; munged refuses a socket
    below a directory that not everyone may enter, so a given ``root`` needs its parents mode 0755 or similar).

    Construct, :meth:`start`, use :attr:`env` for every client command, :meth:`stop`.  ``timings`` records how long
    the last start took to each milestone ("munge", "slurmctld", "slurmd": seconds since start began)."""

    root: Path | None = None
    partitions: tuple[Partition, ...] = DEFAULT_PARTITIONS
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self._owned = self.root is None
        self.root = Path(self.root or tempfile.mkdtemp(prefix="hubfleet-slurm-")).resolve()
        self.conf = self.root / "slurm.conf"
        self.ctld_port = self.slurmd_port = 0
        self._procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs to talk to this site: ``SLURM_CONF`` and a ``PATH`` with the client commands
        (plus HOME and LANG, so commands run from a bare environment)."""
        return {"SLURM_CONF": str(self.conf), "PATH": f"/usr/local/bin:/usr/bin:/bin:{SBIN}",
                "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def running(self) -> bool:
        """Whether all three daemons this site started are still alive."""
        return len(self._procs) == len(DAEMONS) and all(proc.poll() is None for proc in self._procs.values())

    # -- start ----------------------------------------------------------------------------------------------------

    def start(self) -> SlurmSite:
        """Render the configuration, start munged, slurmctld (until ``scontrol ping`` answers) and slurmd (until
        the node is idle) and return self.  Raises :class:`SiteError` saying which step failed, with the tail of
        that daemon's log, after ending every process it had started and removing the directory it created (a
        failed start leaves nothing behind)."""
        reason = missing()
        if reason:
            raise SiteError(reason)
        began = time.monotonic()
        try:
            self._prepare()
            self._start_munge()
            self.timings["munge"] = time.monotonic() - began
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._wait("slurmctld", self._pings)
            self.timings["slurmctld"] = time.monotonic() - began
            self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
            self._wait("slurmd", self._node_ready)
            self.timings["slurmd"] = time.monotonic() - began
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self) -> None:
        node = parse_slurmd_c(subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True,
                                             env=self.env, timeout=10).stdout)
        os.chmod(self.root, 0o755)
        for name in ("munge", "state", "spool", "run", "log"):
            (self.root / name).mkdir(mode=0o755, exist_ok=True)
            os.chmod(self.root / name, 0o755)
        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = _free_port()
        user = pwd.getpwuid(os.geteuid()).pw_name
        self.conf.write_text(render_conf(self.root, node, self.ctld_port, self.slurmd_port, user, self.partitions,
                                         cluster=f"hubfleet{self.ctld_port}"))

    def _start_munge(self) -> None:
        munge = self.root / "munge"
        key = munge / "munge.key"
        if not key.exists():
            subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True,
                           timeout=10)
        os.chmod(key, 0o400)
        self._spawn("munged", [_which("munged"), "--foreground", f"--socket={munge}/munge.socket.2",
                               f"--key-file={key}", f"--pid-file={munge}/munged.pid",
                               f"--seed-file={munge}/munged.seed", f"--log-file={self.log_dir}/munged.log"])
        self._wait("munged", lambda: (munge / "munge.socket.2").exists())

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.log_dir / f"{name}.out", "ab")
        try:
            self._procs[name] = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, cwd=self.root, start_new_session=True)
        finally:
            out.close()

    def _wait(self, name: str, ready) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            proc = self._procs[name]
            if proc.poll() is not None:
                raise SiteError(f"{name} exited with status {proc.returncode}: {self._tail(name)}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise SiteError(f"{name} did not become ready within {START_TIMEOUT:.0f} s: {self._tail(name)}")
            time.sleep(0.05)

    def _client(self, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=timeout)

    def _pings(self) -> bool:
        result = self._client("scontrol", "ping")
        return result.returncode == 0 and "UP" in result.stdout

    def _node_ready(self) -> bool:
        result = self._client("sinfo", "--noheader", "--Node", "--format=%T")
        states = result.stdout.split()
        return result.returncode == 0 and bool(states) and all(s in ("idle", "mixed", "allocated") for s in states)

    def _tail(self, name: str) -> str:
        lines: list[str] = []
        for path in (self.log_dir / f"{name}.log", self.log_dir / f"{name}.out"):
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()[-5:]
        return " | ".join(line.strip() for line in lines if line.strip())[-800:] or "(no log output)"

    # -- a controller outage ---------------------------------------------------------------------------------------

    def stop_controller(self) -> None:
        """End slurmctld only, as an outage or a controller upgrade does: slurmd and the running jobs go on, every
        client command fails until :meth:`start_controller`."""
        proc = self._procs.get("slurmctld")
        if proc is not None:
            _end(proc)

    def start_controller(self) -> None:
        """Start slurmctld again after :meth:`stop_controller`, from its saved state (the jobs it knew), and wait
        until ``scontrol ping`` answers.  Raises :class:`SiteError` as :meth:`start` does."""
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld", self._pings)

    # -- stop -----------------------------------------------------------------------------------------------------

    def stop(self, remove: bool = True) -> None:
        """End every process of the site and make sure each is gone: the jobs (cancelled while slurmctld still
        answers, then any process left whose environment names this site's slurm.conf, such as slurmstepd and job
        steps), slurmd, slurmctld, munged.  Idempotent; never raises for a process that already ended.  Removes the
        directory when the site created it and ``remove`` is true.  Raises :class:`SiteError` only if a process
        survives SIGKILL."""
        if self._procs.get("slurmctld") and self._procs["slurmctld"].poll() is None:
            try:
                jobs = self._client("squeue", "--noheader", "--format=%i", timeout=5).stdout.split()
                if jobs:
                    self._client("scancel", *jobs, timeout=5)
            except (OSError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.get(name)
            if proc is not None:
                _end(proc)
        leftovers = self._site_processes()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while (alive := self._site_processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._procs.clear()
        if alive:
            raise SiteError(f"processes of the Slurm site at {self.root} survived SIGKILL: {alive}")
        while _orphaned_zombies() and time.monotonic() < deadline:
            time.sleep(0.05)
        if remove and self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    def _site_processes(self) -> list[int]:
        """Pids of every process (other than this one) whose environment holds this site's SLURM_CONF."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                status = (entry / "stat").read_text()
            except OSError:
                continue
            if marker in environ.split(b"\0") and status.rsplit(")", 1)[-1].split()[0] != "Z":
                found.append(int(entry.name))
        return found


def _orphaned_zombies() -> list[int]:
    """Ended slurmstepd processes not yet reaped by pid 1.  slurmd double-forks each slurmstepd, so its exit is
    reaped by the machine's init, which in a container may take a second; stop() waits for that (bounded) so that
    nothing named slurm is listed after it returns.  Zombies hold no resources, so it does not fail over them."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.find("(") + 1:stat.rfind(")")], stat[stat.rfind(")") + 1:].split()
        if name == "slurmstepd" and rest[:2] == ["Z", "1"]:
            found.append(int(entry.name))
    return found


def _end(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL to the process's whole session after a bounded wait, then reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT / 2)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait(timeout=STOP_TIMEOUT)
