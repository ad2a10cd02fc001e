"""The ``slurm`` backend: hubs on a Slurm cluster's submit host, each user's server a Slurm job.

A slurm hub is a local hub (``clusters.local``: its directory, settings.json, ports, JupyterHub and its proxy on the
submit host, found by their ``HUBFLEET_HUB_DIR`` marker) whose spawner is ``HubfleetSlurmSpawner``
(``slurm_spawner.py``, copied into the hub's directory with ``slurm_jobs.py``, the batch script the console's preview
shows).  Every server is a job named ``hubfleet-<hub>-<user>``, submitted with ``sbatch`` as the hub user's own
system account (``hf-<hub>-<user>-<hash>``, the local backend's isolation scheme), so the console must run as root.
The job runs the hub environment's ``batchspawner-singleuser``, which tells the hub the port it chose; the server
listens on ``server_ip`` (127.0.0.1 when the jobs run on the submit host).

Jobs are not hub processes: they carry no marker and are never signalled as the hub's processes are (Slurm, not
the hub, runs them).  A hub restart (a new configuration, a release) leaves them running (``cleanup_servers`` off);
the restarted hub finds them again through the job ids in its database and polls them with ``squeue``.  ``stop``
and ``remove`` cancel every job of the hub's accounts and wait until Slurm has ended them (before the accounts go).

Settings (the cluster's, validated by ``console.services.slurm_clusters``): ``slurm_conf``, ``partitions``
(``[{"name", "max_time_minutes", "max_cpus", "max_memory_gb", "max_gpus"}]``, the operator's policy, first one the
default), ``qos``, ``root``, ``homes``, ``port_range``, ``ip`` (where hubs serve), ``server_ip``.
"""
from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import psutil

from clusters import slurm
from clusters.base import BackendError, Check, HubSpec, Log, register
from clusters.local import LocalBackend, hub_accounts, MARKER
from clusters.slurm_health import job_name_prefix
from tenants import slurm_jobs

SPAWNER_SOURCE = Path(__file__).with_name("slurm_spawner.py")
REASONS_SOURCE = Path(__file__).with_name("slurm_reasons.py")
JOBS_SOURCE = Path(slurm_jobs.__file__)
CLIENT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/usr/local/sbin"
CANCEL_TIMEOUT = 30.0  # seconds Slurm gets to end a removed hub's jobs
ONBOARD_JOB_TIMEOUT = 30.0


def slurm_env(slurm_conf: str) -> dict[str, str]:
    """The environment Slurm's client commands run with on the submit host: the cluster's ``SLURM_CONF`` and a
    ``PATH`` with the commands."""
    return {"SLURM_CONF": str(slurm_conf), "PATH": CLIENT_PATH, "LANG": "C.UTF-8"}


@register("slurm")
class SlurmBackend(LocalBackend):
    """Run hubs on this host (the cluster's submit host) as :class:`~clusters.local.LocalBackend` does, their
    servers as Slurm jobs of the cluster whose configuration is ``slurm_conf``."""

    supervised = True

    def __init__(self, root: str, slurm_conf: str, partitions: list[dict[str, Any]], qos: list[str] | None = None,
                 port_range: tuple[int, int] | list[int] = (18000, 18999), ip: str = "127.0.0.1",
                 homes: str = "/home", server_ip: str = "127.0.0.1", job_timeout: float = ONBOARD_JOB_TIMEOUT,
                 **local: Any):
        super().__init__(root, port_range=port_range, ip=ip, homes=homes, **local)
        self.slurm_conf = str(slurm_conf)
        self.partitions = [dict(p) for p in partitions]
        self.qos = list(qos or [])
        self.server_ip = server_ip
        self.job_timeout = job_timeout
        self.env = slurm_env(self.slurm_conf)

    @property
    def policy(self) -> dict[str, Any]:
        """The cluster's settings as ``tenants.slurm_jobs`` reads them (partitions and QOS offered)."""
        return {"partitions": self.partitions, "qos": self.qos}

    def throw_away(self, name: str) -> "SlurmBackend":
        nested = SlurmBackend.__new__(SlurmBackend)
        nested.__dict__.update(self.__dict__, root=self.root / self.NESTED / name)
        return nested

    # -- onboarding -----------------------------------------------------------------------------------------------

    def onboard(self) -> list[Check]:
        """The checks a person would make before hubs use the cluster (``clusters.slurm.onboard``): slurmctld
        answers, the policy's partitions are offered and up with a usable node, a test job runs."""
        return slurm.onboard(self.env, tuple(p["name"] for p in self.partitions), self.job_timeout)

    # -- rendering ------------------------------------------------------------------------------------------------

    def job_profiles(self, spec: HubSpec) -> list[dict[str, Any]]:
        """The hub's profiles as the spawner offers them: ``{"display_name", "default", "options"}``, options from
        ``slurm_jobs.job_options`` (the profile's ``slurm`` object completed with the cluster's defaults)."""
        rendered = spec.full_config().get("HubfleetSlurmSpawner", {}).get("profiles") or []
        return [{"display_name": p["display_name"], "default": bool(p.get("default")),
                 "options": slurm_jobs.job_options(p.get("slurm"), self.policy)} for p in rendered]

    def _settings(self, spec: HubSpec, hub_dir: Path, ports: dict[str, int], token: str, check_token: str,
                  python: str) -> dict:
        if not self.accounts:
            raise BackendError("a slurm hub submits each user's server as that user's own system account, so the "
                               "console must run as root on the submit host (with useradd)")
        settings = super()._settings(spec, hub_dir, ports, token, check_token, python)
        settings.pop("SystemAccountSpawner", None)
        bin_dir = Path(python).parent
        spawner = settings["Spawner"]
        environment = {k: v for k, v in spawner.get("environment", {}).items() if k != MARKER}
        environment.update(SLURM_CONF=self.slurm_conf, PATH=f"{bin_dir}:{CLIENT_PATH}")
        spawner.update(environment=environment, cmd=[str(bin_dir / "jupyterhub-singleuser")])
        settings["JupyterHub"].update(spawner_class="hubfleet-slurm", cleanup_servers=False)
        settings["HubfleetSlurmSpawner"] = {
            "hub_slug": spec.slug, "hub_dir": str(hub_dir), "home_root": str(self.homes), "bind_ip": self.server_ip,
            "slurm_env": {"SLURM_CONF": self.slurm_conf, "PATH": environment["PATH"]},
            "batchspawner_singleuser_cmd": str(bin_dir / "batchspawner-singleuser"),
            "profiles": self.job_profiles(spec), "default_options": slurm_jobs.job_options(None, self.policy),
            # a job may wait in the queue: the hub gives it longer than a local process; the spawner gives up
            # first, so the person is told why Slurm held the job rather than that a timeout passed
            "start_timeout": 300, "pending_limit": 240, "http_timeout": 120}
        return settings

    def _write_settings(self, spec: HubSpec, hub_dir: Path, python: str) -> tuple[dict, bool]:
        ports, changed = super()._write_settings(spec, hub_dir, python)
        for source in (SPAWNER_SOURCE, REASONS_SOURCE, JOBS_SOURCE):
            shutil.copyfile(source, hub_dir / source.name)
            (hub_dir / source.name).chmod(0o600)
        return ports, changed

    def processes(self, hub_dir: Path) -> list[psutil.Process]:
        """The hub's processes on this host, without those of Slurm jobs (a server's job that runs here, on a
        single-node cluster): Slurm ends those, and a hub restart leaves them running."""
        found = []
        for proc in super().processes(hub_dir):
            with contextlib.suppress(psutil.Error):
                if "SLURM_JOB_ID" not in proc.environ():
                    found.append(proc)
        return found

    # -- jobs -----------------------------------------------------------------------------------------------------

    def jobs(self, state: dict) -> list[slurm.Job]:
        """The hub's jobs in Slurm's queue (pending, running, completing), found by name.  Raises SlurmError."""
        hub_dir = self._dir_of(state)
        if hub_dir is None:
            return []
        prefix = job_name_prefix(hub_dir.name)
        return [job for job in slurm.jobs(self.env) if job.name.startswith(prefix)]

    def cancel_jobs(self, hub_dir: Path, log: Log) -> None:
        """Cancel every job of the hub's accounts (its servers, and anything a user submitted from one) and wait
        until Slurm has ended them.  Raises BackendError when Slurm cannot be asked or a job outlives the wait: the
        accounts must not go while their jobs run."""
        accounts = {entry.pw_name for entry in hub_accounts(hub_dir)}
        if not accounts:
            return
        try:
            for name in sorted(accounts):
                slurm.run(self.env, "scancel", f"--user={name}")
            deadline = time.monotonic() + CANCEL_TIMEOUT
            while (left := [j for j in slurm.jobs(self.env) if j.user in accounts]) \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
        except slurm.SlurmError as exc:
            raise BackendError(f"could not cancel the hub's Slurm jobs: {exc}") from None
        if left:
            raise BackendError(f"Slurm had not ended the hub's jobs {', '.join(str(j.id) for j in left)} "
                               f"{CANCEL_TIMEOUT:g} s after scancel")
        log(f"cancelled the Slurm jobs of {len(accounts)} account(s) of the hub")

    def stop(self, state: dict, log: Log) -> None:
        hub_dir = self._dir_of(state)
        if hub_dir is not None:
            self._stop(hub_dir, log)
            self.cancel_jobs(hub_dir, log)

    def remove(self, state: dict, log: Log) -> None:
        hub_dir = self._dir_of(state)
        if hub_dir is not None:
            self.stop(state, log)
        super().remove(state, log)
