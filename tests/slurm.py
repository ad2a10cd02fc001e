"""The real single-node Slurm cluster of the test session (``slurm_site``), started from the machine's packages.

Each pytest-xdist worker starts its own :class:`~clusters.slurm_site.SlurmSite`: separate directories, munge sockets
and free ports, so two run side by side on one machine (tests/clusters/test_slurm.py checks that with a second
site).  A site comes up in well under a second, which is cheaper than coordinating one shared site between workers.
The fixture stops it at the end of the session with nothing left running; tests that change the cluster (drain the
node, submit jobs) put it back as they found it.
"""
from __future__ import annotations

import os

import pytest

from clusters.slurm_site import SlurmSite, missing


def require_slurm() -> None:
    """Skip the calling test when this machine has no Slurm, or fail it where Slurm is required (``make test``
    sets HUBFLEET_REQUIRE_SLURM=1), so a missing Slurm never passes unseen there."""
    reason = missing()
    if reason:
        if os.environ.get("HUBFLEET_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm is required here but cannot start: {reason}")
        pytest.skip(f"Slurm tests not run: {reason}")


@pytest.fixture(scope="session")
def slurm_site():
    """A running :class:`SlurmSite` (partitions ``debug``, the default with a one-hour limit, and ``long``); skips
    the test when this machine has no Slurm (``scripts/ensure-slurm.sh`` installs it), fails it under ``make test``
    (HUBFLEET_REQUIRE_SLURM=1)."""
    require_slurm()
    site = SlurmSite().start()
    try:
        yield site
    finally:
        site.stop()
