"""The fixed files of a local hub's directory: its config file and the modules it imports (logins, accounts)."""
from __future__ import annotations

import os
from pathlib import Path

from tenants.auth import FEDERATED_SOURCE, FIRST_ADMIN_SOURCE

SOURCES = {"jupyterhub_config.py": Path(__file__).with_name("local_jupyterhub_config.py"),
           "local_accounts.py": Path(__file__).with_name("local_accounts.py"),
           "first_admin_authenticator.py": FIRST_ADMIN_SOURCE, "federated_authenticator.py": FEDERATED_SOURCE,
           # the hub digests the settings it loads with the console's own function (drift)
           "config_digest.py": Path(__file__).with_name("config_digest.py")}


def write_hub_config(directory: Path) -> Path:
    """Write the files into ``directory`` (mode 0600 each); returns the config file's path."""
    for name, source in SOURCES.items():
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(source.read_text())
    return directory / "jupyterhub_config.py"
