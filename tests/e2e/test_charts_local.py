"""A real local hub with one person at work: its page charts one running server and one active user as soon as the
monitor has swept it once, although JupyterHub itself counts its active users only once an hour."""
import json
import re
from html import unescape

import pytest

from tests.e2e.helpers import login_and_start_server
from tests.helpers import wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def test_a_person_at_work_shows_on_the_charts_at_the_next_sweep(app, client, local_fleet, login, create_user):
    app.config.update(PROBE_SECONDS=2, RECHECK_SECONDS=1)
    from console.worker import start_in_process

    thread, stop = start_in_process(app)
    try:
        created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north",
                                                    "cluster": "local"}, headers=local_fleet).get_json()
        admin = created["first_admin"]
        wait_for(lambda: client.get(f"/api/v1/operations/{created['operation']}", headers=local_fleet)
                 .get_json()["state"] == "succeeded", 120, what="the hub to start")
        url = client.get("/api/v1/hubs/north-lab", headers=local_fleet).get_json()["url"]
        lab = login_and_start_server(url, admin["username"], admin["password"])
        assert lab.status_code == 200
        login(client, create_user("operator"))

        def charted():
            page = client.get("/hubs/north-lab").get_data(as_text=True)
            return 'now: <strong class="chart-latest">1 running server</strong>' in page and \
                'now: <strong class="chart-latest">1 active user</strong>' in page and page

        page = wait_for(charted, 30, what="a sweep to see the running server and its user")
        running = re.search(r'id="chart-running".*?data-chart=\'([^\']*)\'', page, re.S).group(1)
        assert json.loads(unescape(running))["y"][-1] == 1  # the newest point, exactly
    finally:
        stop.set()
        thread.join(60)
