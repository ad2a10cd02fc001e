import contextlib

import psutil
import pytest

from clusters import local
from clusters.local import MARKER


@pytest.fixture(autouse=True)
def no_stray_hub_processes(tmp_path):
    """Kill whatever a failed test left running under its temporary directory, so one failure stays one."""
    yield
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARKER, "").startswith(str(tmp_path)):
                proc.kill()
    for hub_dir in [d for d in local._children if d.startswith(str(tmp_path))]:
        local._children.pop(hub_dir).wait(10)  # reap what this process started
