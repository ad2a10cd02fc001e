import contextlib

import psutil
import pytest

from clusters import local
from clusters.local import MARKER
from console.services.institutions import ensure_local_cluster


@pytest.fixture(autouse=True)
def no_stray_hub_processes(tmp_path):
    """Kill whatever a failed test left running under its temporary directory and remove the system accounts its
    hubs made, so one failure stays one."""
    yield
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARKER, "").startswith(str(tmp_path)):
                proc.kill()
    for hub_dir in [d for d in local._children if d.startswith(str(tmp_path))]:
        local._children.pop(hub_dir).wait(10)  # reap what this process started
    for account in local.hub_accounts(tmp_path, prefix=True):  # and the system accounts of its hubs' users
        local.remove_account(account, lambda line: None)


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
