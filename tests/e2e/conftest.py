import contextlib
import shutil
import tempfile
from pathlib import Path

import psutil
import pytest

from clusters import local
from clusters.local import MARKER
from console.services.institutions import ensure_local_cluster


def clean_up_hubs(root: Path) -> None:
    """Kill every hub process under ``root``, reap what this process started there, and remove the system accounts
    its hubs made."""
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARKER, "").startswith(str(root)):
                proc.kill()
    for hub_dir in [d for d in local._children if d.startswith(str(root))]:
        local._children.pop(hub_dir).wait(10)
    for account in local.hub_accounts(root, prefix=True):
        local.remove_account(account, lambda line: None)


@pytest.fixture(autouse=True)
def no_stray_hub_processes(tmp_path):
    """Whatever a failed test left running under its temporary directory goes with it, so one failure stays one."""
    yield
    clean_up_hubs(tmp_path)


@pytest.fixture
def public_tmp():
    """A directory every account may pass (mode 0755; pytest's own tmp dir is private to root), for a console
    whose hub users run as accounts of their own; removed afterwards with its hubs' processes and accounts."""
    path = Path(tempfile.mkdtemp(prefix="hubfleet-public-"))
    path.chmod(0o755)
    yield path
    clean_up_hubs(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def local_fleet(app, ctx, create_institution, create_user, api_headers):
    """Institution "north" and a local cluster "local" in the test's data dir; returns an operator's API headers."""
    create_institution("north")
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    return api_headers(create_user("operator"))


@pytest.fixture
def worker_thread(app):
    """The worker, its lanes and the monitor in this process, for the length of the test."""
    from console.worker import start_in_process

    thread, stop = start_in_process(app)
    yield
    stop.set()
    thread.join(30)
