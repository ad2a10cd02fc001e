"""Drift with a real local JupyterHub: the hub's settings are edited and its JupyterHub restarted while the console is
down (as someone on the machine would), the console reports it drifted, and Reconcile puts its configuration back."""
import json
from pathlib import Path

import pytest

from console.extensions import db
from console.models import Hub
from console.services import drift
from console.services import hubs as hub_service
from tests.console.test_people import Browser
from tests.conftest import csrf_from
from tests.e2e.test_local_hubs import main_processes, wait_operation
from tests.helpers import wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def hub_row():
    db.session.expire_all()
    return db.session.execute(db.select(Hub).filter_by(slug="north-lab")).unique().scalar_one()


def test_a_hub_changed_behind_the_consoles_back_is_reported_drifted_and_reconciled(app, client, local_fleet,
                                                                                   create_user):
    from console.worker import start_in_process

    app.config.update(PROBE_SECONDS=1, RECHECK_SECONDS=0.5)
    headers = local_fleet
    background, stop = start_in_process(app)
    created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                          headers=headers).get_json()
    wait_operation(client, headers, created["operation"])
    hub = hub_row()
    assert drift.of(hub).state == drift.IN_SYNC, drift.of(hub)
    hub_dir = Path(hub.backend_state["dir"])
    assert (hub_dir / "running-config.json").stat().st_mode & 0o777 == 0o600

    # The console goes down; meanwhile someone edits the hub's settings and restarts its JupyterHub by hand.
    stop.set()
    background.join(30)
    settings = json.loads((hub_dir / "settings.json").read_text())
    assert settings["Spawner"]["default_url"] == "/lab"
    settings["Spawner"]["default_url"] = "/tree"
    (hub_dir / "settings.json").write_text(json.dumps(settings))
    [before] = main_processes(hub_dir)
    python = before.cmdline()[0]
    backend = hub_service.backend_for(hub.cluster)
    backend._start(hub_dir, hub.backend_state["ports"], python, lambda line: None)
    [edited] = wait_for(lambda: main_processes(hub_dir), 30, what="the restarted JupyterHub")
    assert edited.pid != before.pid

    # The console comes back: its monitor reads what the hub runs now.
    background, stop = start_in_process(app)
    try:
        found = wait_for(lambda: (d := drift.of(hub_row())).state == drift.DRIFTED and d, 60,
                         what="the hub reported drifted")
        assert found.running != found.wanted
        operator = Browser(app, create_user("operator"))
        report = operator.get("/fleet/drift").get_data(as_text=True)
        assert 'data-hub="north-lab" data-drift="drifted"' in report
        answer = operator.post("/hubs/north-lab/reconcile", data={"csrf_token": csrf_from(report)})
        assert answer.status_code == 302
        wait_operation(client, headers, int(answer.headers["Location"].rsplit("/", 1)[1]))
        assert json.loads((hub_dir / "settings.json").read_text())["Spawner"]["default_url"] == "/lab"
        [reconciled] = main_processes(hub_dir)
        assert reconciled.pid != edited.pid  # restarted with the console's settings
        assert drift.of(hub_row()).state == drift.IN_SYNC
        page = operator.get("/hubs/north-lab").get_data(as_text=True)
        assert 'data-status="in-sync"' in page
        wait_operation(client, headers,
                       client.delete("/api/v1/hubs/north-lab", headers=headers).get_json()["operation"])
    finally:
        stop.set()
        background.join(30)
