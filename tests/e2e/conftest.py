import contextlib

import psutil
import pytest

from clusters.local import MARKER


@pytest.fixture(autouse=True)
def no_stray_hub_processes(tmp_path):
    """Kill whatever a failed test left running under its temporary directory, so one failure stays one."""
    yield
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARKER, "").startswith(str(tmp_path)):
                proc.kill()
