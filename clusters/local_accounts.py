"""The system accounts of a local hub's users: their names and how one is made.

Shared by the hub's ``SystemAccountSpawner`` (``local_jupyterhub_config.py``, which runs with the hub's own JupyterHub
environment and imports this file from the hub's directory, where ``local_files`` copies it) and by the backend,
which makes the accounts of a restored hub's users before the hub first starts (``LocalBackend.restore_archive``).
Standard library only, for that reason.
"""
import hashlib
import os
import pwd
import re
import subprocess
import threading

ACCOUNT_COMMENT = "hubfleet {}"  # the comment (GECOS) field of a hub's accounts names its directory; see local.py
_useradd = threading.Lock()  # one account change at a time from this process (shadow's own lock spans processes)


def account_name(hub, hub_dir, username):
    """``hf-<hub>-<user>-<hash>``: readable, at most 32 characters (the Linux limit), unique per hub directory and
    user (the hash covers both, so two consoles' hubs of one name, or names that only differ where they were cut
    or cleaned, never share an account)."""
    digest = hashlib.sha256(f"{hub_dir}\0{username}".encode()).hexdigest()[:7]
    readable = re.sub(r"[^a-z0-9]+", "-", f"{hub}-{username}".lower())[:21].strip("-")
    return f"hf-{readable}-{digest}"


def ensure_account(name, hub_dir, home_root):
    """Create the system account ``name`` with a private home (mode 0700) unless it exists; returns its pwd entry.

    Refuses (RuntimeError) an existing account that is not this hub's (its comment names another hub directory, or
    none).  Safe to call twice.
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
