# The fixed JupyterHub config file of a local Hubfleet hub.  Everything hub-specific is in settings.json beside it,
# written by clusters/local.py: traitlets sections mapped to values, applied here as they are.  Before applying them it
# records their digest (config_digest.py, copied beside it) for the console's drift report.
#
# It also defines the hub's own classes, named in settings.json by the names in OWN_CLASSES (this file runs with the
# hub's JupyterHub environment, which has no Hubfleet installed, so they live here and use the standard library):
# - FirstAdminAuthenticator: a hub whose institution configured no login admits nobody, except the hub's generated
#   first admin, whose password it checks against a scrypt hash;
# - FederatedAuthenticator (imported only by hubs that use it): federated login through the console;
# - SystemAccountSpawner: every hub user's server runs as a system account of its own (the console runs as root);
# - OnePersonSpawner: without root every server runs as the console's own user, so the hub serves one person.
# - HubfleetSlurmSpawner (imported only by slurm hubs, from slurm_spawner.py): each server is a Slurm job.
import asyncio
import json
import os
import pathlib
import pwd
import signal
import sys

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner, set_user_setuid
from traitlets import List, Unicode

# A console started in the background by a shell ignores SIGINT, and an ignored signal is inherited: JupyterHub would
# start its proxy and managed services (the idle culler) ignoring it, and on shutdown wait 10 s for each of those it
# stops with SIGINT.  JupyterHub installs its own handler once it runs; until then, Python's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the backend writes our modules beside us
from first_admin_authenticator import FirstAdminAuthenticator  # noqa: E402
from local_accounts import account_name, ensure_account  # noqa: E402  (shared with the backend: local_accounts.py)


class SystemAccountSpawner(LocalProcessSpawner):
    """Each hub user's server runs as a system account of its own (see :func:`account_name`), created at its first
    start with a home of mode 0700 under ``home_root``; the console removes the accounts with the hub."""

    hub_slug = Unicode(config=True)
    hub_dir = Unicode(config=True)
    home_root = Unicode("/home", config=True)

    @property
    def account(self):
        return account_name(self.hub_slug, self.hub_dir, self.user.name)

    async def start(self):
        await asyncio.to_thread(ensure_account, self.account, self.hub_dir, self.home_root)
        return await super().start()

    def make_preexec_fn(self, name):
        return set_user_setuid(self.account)

    def user_env(self, env):
        entry = pwd.getpwnam(self.account)
        env.update(USER=entry.pw_name, HOME=entry.pw_dir, SHELL=entry.pw_shell or "/bin/bash")
        return env


class OnePersonSpawner(SimpleLocalProcessSpawner):
    """Servers run as the console's own OS user (it cannot create accounts), so the hub serves one person: the first
    user who starts a server owns it (``owner_file``); ``exempt`` users (the console's synthetic check) aside."""

    owner_file = Unicode(config=True)
    exempt = List(Unicode(), config=True)

    async def start(self):
        if self.user.name not in self.exempt:
            try:
                fd = os.open(self.owner_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(self.user.name)
            except FileExistsError:
                owner = pathlib.Path(self.owner_file).read_text()
                if owner != self.user.name:
                    raise RuntimeError(f"This hub serves one person ({owner}): the console that runs it cannot "
                                       f"create a system account per user (it does not run as root).") from None
        return await super().start()


OWN_CLASSES = {"hubfleet-first-admin": FirstAdminAuthenticator, "hubfleet-accounts": SystemAccountSpawner,
               "hubfleet-one-person": OnePersonSpawner}

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file


def own_class(name):
    """The class a settings value names, or the value as it is (a JupyterHub entry point name, an import path)."""
    if name == "hubfleet-federated":
        from federated_authenticator import FederatedAuthenticator
        return FederatedAuthenticator
    if name == "hubfleet-slurm":  # slurm hubs only: it needs batchspawner (see slurm_spawner.py)
        from slurm_spawner import HubfleetSlurmSpawner
        return HubfleetSlurmSpawner
    return OWN_CLASSES.get(name, name)


def record_digest(settings):
    """Write the digest of the settings this hub loaded, with its process id, to ``config_digest.RECORD`` (mode
    0600, replaced whole): the console compares it with what it would deploy now (drift)."""
    from config_digest import RECORD, settings_digest

    here = pathlib.Path(__file__).parent
    partial = here / f".{RECORD}.{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"digest": settings_digest(settings), "pid": os.getpid()}, out)
    os.replace(partial, here / RECORD)


_settings = json.loads((pathlib.Path(__file__).parent / "settings.json").read_text())
record_digest(_settings)
for section, values in _settings.items():
    for key, value in values.items():
        c[section][key] = own_class(value) if key.endswith("_class") and isinstance(value, str) else value
