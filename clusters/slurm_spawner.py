"""The spawner of a slurm hub: every user's server is a Slurm job, submitted as the user's own system account.

This file runs inside the hub's JupyterHub (its own environment, no Hubfleet installed): ``SlurmBackend`` copies it
into the hub's directory beside ``local_accounts.py`` (the accounts, shared with local hubs) and ``slurm_jobs.py``
(the batch script, shared with the console's preview, so a job is exactly the script an admin was shown).  The hub's
config file imports it only when settings.json names ``hubfleet-slurm``.

:class:`HubfleetSlurmSpawner` keeps batchspawner (1.3.0, pinned) behind one subclass, so it can be replaced, and
corrects what batchspawner gets wrong for us:

- the address: batchspawner resets ``ip`` to 0.0.0.0 at every start; the server listens on ``bind_ip`` instead
  (127.0.0.1 when the jobs run on the submit host, as on a single-node cluster), and the hub reaches it there, or,
  when ``bind_ip`` is not a loopback address, on the node Slurm reports;
- the account: batchspawner submits through ``sudo -E -u <hub user name>``; here ``sbatch``, ``squeue`` and
  ``scancel`` run as the hub user's system account (``hf-<hub>-<user>-<hash>``, made at the first start) through
  ``runuser -m``, which needs no sudoers rule and no password when JupyterHub runs as root (it does: it makes the
  accounts), and with ``-m`` keeps the environment the job inherits (``SLURM_CONF``, ``PATH``, the server's token);
- the job: its script is ``slurm_jobs.batch_script`` of the chosen profile's options, formatted with batchspawner's
  variables and ``job_name``, ``hubfleet-<hub>-<user>`` (how the console finds a hub's jobs);
- the deprecation warning JupyterHub 6 logs when batchspawner touches ``Spawner.db`` (batchspawner issue #306): the
  session is handed over without it;
- waiting: the person watching their server start is told why Slurm holds the job, in words
  (``slurm_reasons.explain``); a job still pending after ``pending_limit`` seconds, or one that ended without
  starting, fails the start with Slurm's reason in words instead of a generic timeout.
"""
import asyncio
import html
import ipaddress
import os
import pwd
import re
import time

from batchspawner import SlurmSpawner
from batchspawner.batchspawner import JobStatus
from traitlets import Dict, Float, List, Unicode, default

from local_accounts import account_name, ensure_account
from slurm_jobs import batch_script
from slurm_reasons import explain


# What sbatch says when it refuses a job at once, as the pending reason Slurm gives a job it keeps for the same cause.
SBATCH_REFUSALS = (("requested node configuration is not available", "BadConstraints"),
                   ("memory specification can not be satisfied", "BadConstraints"),
                   ("invalid partition", "PartitionInactive"), ("invalid qos", "InvalidQOS"),
                   ("time limit", "PartitionTimeLimit"))


class JobDidNotStart(RuntimeError):
    """A server's job that Slurm will not (or did not) run; JupyterHub shows ``jupyterhub_message`` to the person,
    on the spawn page and in the API's answer, where other errors read "Internal Server Error"."""

    def __init__(self, message):
        super().__init__(message)
        self.jupyterhub_message = message


class HubfleetSlurmSpawner(SlurmSpawner):
    """Submit the user's server as a Slurm job with the options of the profile they chose (``profiles``, each
    ``{"display_name", "default", "options"}``; ``default_options`` when the hub offers none)."""

    hub_slug = Unicode(config=True)
    hub_dir = Unicode(config=True)
    home_root = Unicode("/home", config=True)
    bind_ip = Unicode("127.0.0.1", config=True, help="where the server listens on the node that runs its job")
    profiles = List(Dict(), config=True)
    default_options = Dict(config=True)
    slurm_env = Dict(config=True, help="SLURM_CONF and PATH, for every Slurm command the spawner runs")

    pending_limit = Float(600, config=True, help="seconds a job may wait in the queue before the start fails")
    exec_prefix = Unicode("runuser -m -u {username} --", config=True)
    req_job_name = Unicode()

    @default("db")
    def _session_without_warning(self):
        return self._deprecated_db_session

    @property
    def account(self):
        return account_name(self.hub_slug, self.hub_dir, self.user.name)

    @default("req_username")
    def _account_name(self):
        return self.account

    @default("req_homedir")
    def _account_home(self):
        return pwd.getpwnam(self.account).pw_dir

    @default("req_job_name")
    def _job_name(self):
        # one word: it goes into an #SBATCH line and a shell command
        return re.sub(r"[^A-Za-z0-9_.@+-]", "-", f"hubfleet-{self.hub_slug}-{self.user.name}")

    def user_env(self, env):
        entry = pwd.getpwnam(self.account)
        env.update(USER=entry.pw_name, HOME=entry.pw_dir, SHELL=entry.pw_shell or "/bin/bash")
        return env

    async def run_command(self, cmd, input=None, env=None):
        # batchspawner gives sbatch the server's environment but squeue and scancel none: they need SLURM_CONF too
        return await super().run_command(cmd, input=input, env={**(env or os.environ), **self.slurm_env})

    # -- the profile ------------------------------------------------------------------------------------------------

    def _chosen(self):
        """The profile the user asked for (by name, from the form or the API's JSON body), else the default one,
        else the first; None when the hub offers none.  An unknown name is refused: the server does not start."""
        wanted = (self.user_options or {}).get("profile")
        if wanted:
            for profile in self.profiles:
                if profile["display_name"] == wanted:
                    return profile
            raise ValueError(f"This hub offers no profile named {wanted!r}.")
        return next((p for p in self.profiles if p.get("default")), self.profiles[0] if self.profiles else None)

    def job_options(self):
        """The job options of the chosen profile, as ``slurm_jobs.job_options`` made them in the console."""
        chosen = self._chosen()
        return chosen["options"] if chosen else self.default_options

    @default("options_form")
    def _profile_form(self):
        if len(self.profiles) < 2:
            return ""
        chosen = next((p for p in self.profiles if p.get("default")), self.profiles[0])["display_name"]
        options = "".join(
            f'<option value="{html.escape(p["display_name"])}"'
            f'{" selected" if p["display_name"] == chosen else ""}>{html.escape(p["display_name"])}</option>'
            for p in self.profiles)
        return f'<label for="profile">Profile</label><select class="form-control" name="profile" id="profile">' \
               f'{options}</select>'

    def options_from_form(self, formdata):
        return {"profile": formdata.get("profile", [""])[0]} if formdata.get("profile") else {}

    async def _get_batch_script(self, **subvars):
        return batch_script(self.job_options()).format(**subvars)

    # -- start ------------------------------------------------------------------------------------------------------

    async def submit_batch_script(self):
        self.ip = self.bind_ip  # batchspawner's start() has just reset it to 0.0.0.0
        self._pending_since = time.monotonic()
        try:
            return await super().submit_batch_script()
        except RuntimeError as exc:  # sbatch refused the job: its stderr
            said = " ".join(line.removeprefix("sbatch: error: ").strip()
                            for line in str(exc).splitlines() if line.strip())
            reason = next((name for marker, name in SBATCH_REFUSALS if marker in said.lower()), "")
            words = explain(reason, {"state": "FAILED"}) if reason else "Slurm refused your server's job."
            raise JobDidNotStart(f"{words} (Slurm: {said})") from exc

    async def start(self):
        self.job_options()  # an unknown profile fails here, before anything is made or submitted
        await asyncio.to_thread(ensure_account, self.account, self.hub_dir, self.home_root)
        await super().start()
        if ipaddress.ip_address(self.bind_ip).is_loopback:
            self.ip = self.bind_ip  # the job runs on this host: not the node name Slurm reports ("localhost")
        return self.ip, self.port

    # -- waiting ----------------------------------------------------------------------------------------------------

    async def slurm_reason(self):
        """(state, reason) of the job as ``squeue`` says them now (it lists jobs that ended a few minutes ago too);
        ("", "") when Slurm does not answer."""
        try:
            out = await self.run_command(f"squeue -h -j {self.job_id} -o '%T|%r'")
        except RuntimeError:
            return "", ""
        state, _, reason = (out or "").strip().partition("|")
        return state, reason

    async def query_job_status(self):
        status = await super().query_job_status()
        if status == JobStatus.PENDING:
            waited = time.monotonic() - self._pending_since
            if waited > self.pending_limit:
                _, reason = await self.slurm_reason()
                raise JobDidNotStart(f"Your server's job waited {int(waited // 60)} min in Slurm's queue without "
                                   f"starting. {explain(reason)} (Slurm: {reason or 'no reason given'})")
        elif status == JobStatus.NOTFOUND and self.job_id:
            state, reason = await self.slurm_reason()
            if state and state not in ("PENDING", "RUNNING", "CONFIGURING"):
                self.log.warning("job %s ended before it started: %s %s", self.job_id, state, reason)
                raise JobDidNotStart(f"Your server's job ended before it started. "
                                   f"{explain(reason, {'state': state})} (Slurm: {state}, {reason})")
        return status

    async def progress(self):
        """What the person sees while their server starts: while the job is queued, how long and why."""
        started = time.monotonic()
        while True:
            if self.state_ispending():
                _, reason = await self.slurm_reason()
                yield {"message": f"Waiting in Slurm's queue ({int(time.monotonic() - started)} s): "
                                  f"{explain(reason) if reason else 'the job is being scheduled.'}"}
            elif self.state_isrunning():
                yield {"message": "The job is running; waiting for your server to answer."}
                return
            else:
                yield {"message": "Submitting the job to Slurm."}
            await asyncio.sleep(2)
