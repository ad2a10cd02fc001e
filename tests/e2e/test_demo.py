"""The README's demo, as a new user runs it: `hubfleet demo` on an empty data directory."""
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import login_and_start_server
from tests.helpers import port_open, wait_for

pytestmark = pytest.mark.timeout(300)


def test_demo_brings_up_two_healthy_hubs_a_student_can_use(tmp_path):
    port = 18765
    env = {**os.environ, "HUBFLEET_DATA_DIR": str(tmp_path / "demo"), "HUBFLEET_LOCAL_PORT_RANGE": "[22000, 22999]",
           "HUBFLEET_PROBE_SECONDS": "2",
           # the environment hub users' accounts run, where they cannot run this Python: built once, kept across runs
           "HUBFLEET_RELEASE_ENVIRONMENTS": os.environ.get(
               "HUBFLEET_TEST_ENVIRONMENTS", str(Path(tempfile.gettempdir()) / "hubfleet-test-environments"))}
    env.pop("HUBFLEET_DATABASE_URL", None)
    with open(tmp_path / "demo.log", "wb") as out:
        demo = subprocess.Popen([sys.executable, "-m", "console.cli", "demo", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        banner = wait_for(lambda: "password:" in (tmp_path / "demo.log").read_text()
                          and port_open(port) and (tmp_path / "demo.log").read_text(), 60, what="the demo banner")
        email, password = re.search(r"operator\s+(\S+@\S+)\s+password: (\S+)", banner).groups()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as browser:
            login_page = browser.get("/login").text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', login_page).group(1)
            assert browser.post("/login", data={"email": email, "password": password,
                                                "csrf_token": csrf}).status_code == 302

            def both_healthy():
                page = browser.get("/").text
                rows = re.findall(r'<tr id="hub-([a-z-]+)">(.*?)</tr>', page, re.S)
                healthy = {slug for slug, row in rows if 'data-status="healthy"' in row}
                return healthy if len(healthy) == 2 else None

            slugs = wait_for(both_healthy, 120, interval=1, what="both demo hubs to be healthy")
            assert slugs == {"north-lab", "lakeside-lab"}
            hub_page = browser.get("/hubs/north-lab").text
            hub_url = re.search(r'<dt>URL</dt><dd><a href="([^"]+)"', hub_page).group(1)
            # the demo alone opts into the dummy login, on 127.0.0.1, and says so
            assert "Demo: any username and password" in hub_page and hub_url.startswith("http://127.0.0.1:")
        assert "with JupyterHub's dummy login: any username and any password" in banner
        lab = login_and_start_server(hub_url, "student1", "anything")
        assert lab.status_code == 200 and "JupyterLab" in lab.text
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(60)
    # Stopping the demo stops its hubs too.
    assert not port_open(hub_url)
