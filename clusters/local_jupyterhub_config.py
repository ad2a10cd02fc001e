# The fixed JupyterHub config file of a local Hubfleet hub.  Everything hub-specific is in settings.json beside it,
# written by clusters/local.py: traitlets sections mapped to values, applied here as they are.
#
# It also defines the hub's own classes, named in settings.json by the names in OWN_CLASSES (this file runs with the
# hub's JupyterHub environment, which has no Hubfleet installed, so they live here and use the standard library):
# - FirstAdminAuthenticator: a hub whose institution configured no login admits nobody, except the hub's generated
#   first admin, whose password it checks against a scrypt hash;
# - FederatedAuthenticator (imported only by hubs that use it): federated login through the console;
# - SystemAccountSpawner: every hub user's server runs as a system account of its own (the console runs as root);
# - OnePersonSpawner: without root every server runs as the console's own user, so the hub serves one person.
import asyncio
import hashlib
import json
import os
import pathlib
import pwd
import re
import signal
import subprocess
import sys
import threading

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner, set_user_setuid
from traitlets import List, Unicode

# A console started in the background by a shell ignores SIGINT, and an ignored signal is inherited: JupyterHub would
# start its proxy and managed services (the idle culler) ignoring it, and on shutdown wait 10 s for each of those it
# stops with SIGINT.  JupyterHub installs its own handler once it runs; until then, Python's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the backend writes the login's module beside us
from first_admin_authenticator import FirstAdminAuthenticator  # noqa: E402


ACCOUNT_COMMENT = "hubfleet {}"  # the comment (GECOS) field of a hub's accounts names its directory; see local.py
_useradd = threading.Lock()  # one account change at a time from this hub (shadow's own lock spans processes)


def account_name(hub, hub_dir, username):
    """``hf-<hub>-<user>-<hash>``: readable, at most 32 characters (the Linux limit), unique per hub directory and
    user (the hash covers both, so two consoles' hubs of one name, or names that only differ where they were cut
    or cleaned, never share an account)."""
    digest = hashlib.sha256(f"{hub_dir}\0{username}".encode()).hexdigest()[:7]
    readable = re.sub(r"[^a-z0-9]+", "-", f"{hub}-{username}".lower())[:21].strip("-")
    return f"hf-{readable}-{digest}"


def ensure_account(name, hub_dir, home_root):
    """Create the system account ``name`` with a private home (mode 0700) unless it exists; returns its pwd entry.

    Refuses an existing account that is not this hub's (its comment names another hub directory, or none).
    """
    comment = ACCOUNT_COMMENT.format(hub_dir)
    with _useradd:
        try:
            found = pwd.getpwnam(name)
        except KeyError:
            home = os.path.join(home_root, name)
            done = subprocess.run(["useradd", "--comment", comment, "--home-dir", home, "--create-home",
                                   "--shell", "/bin/bash", "--user-group", name],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True)
            try:
                found = pwd.getpwnam(name)
            except KeyError:
                raise RuntimeError(f"could not create the system account {name}: "
                                   f"{done.stderr.strip()[:300]}") from None
    if found.pw_gecos != comment:
        raise RuntimeError(f"the system account {name} exists and is not one of this hub's")
    os.chmod(found.pw_dir, 0o700)
    return found


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
    return OWN_CLASSES.get(name, name)


for section, values in json.loads((pathlib.Path(__file__).parent / "settings.json").read_text()).items():
    for key, value in values.items():
        c[section][key] = own_class(value) if key.endswith("_class") and isinstance(value, str) else value
