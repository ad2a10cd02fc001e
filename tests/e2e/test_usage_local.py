"""Usage showback against a real local hub: real user servers started and stopped at known times, sweeps run by
hand (the monitor is not running), one sweep skipped across a stop.  The server-hours and active users the console
computes match what happened, to the minute: the stop time is the hub's own, not when a sweep noticed."""
import time
from datetime import timedelta

import httpx
import pytest

from clusters import lifecycle
from clusters.synthetic import CHECK_USER
from console.extensions import db
from console.models import Hub, ServerSession, utcnow
from console.services import hubs as hub_service
from console.services import monitoring, usage
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)


def sweep() -> None:
    """One monitoring sweep, as the monitor's tick runs it: probe every serving hub, record what it listed."""
    hubs = monitoring.live_hubs()
    results = monitoring.probe_fleet([hub for hub in hubs if hub.state in lifecycle.SERVING])
    monitoring.record(hubs, results, utcnow())
    db.session.commit()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_server_hours_and_active_users_of_a_real_hub_match_what_happened(app, client, local_fleet, create_user):
    from console.worker import start_in_process

    app.config.update(PROBE_SECONDS=1, PROBE_TIMEOUT=5)  # a gap: servers unlisted for over 3 s
    thread, stop = start_in_process(app, monitor=False)  # sweeps are the test's own
    try:
        created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                              headers=local_fleet).get_json()
        done = wait_for(lambda: (o := client.get(f"/api/v1/operations/{created['operation']}",
                                                 headers=local_fleet).get_json())["state"] in ("succeeded", "failed")
                        and o, 90, what="the hub to be created")
        assert done["state"] == "succeeded", done
    finally:
        stop.set()
        thread.join(30)
    db.session.rollback()
    hub = db.session.execute(db.select(Hub).filter_by(slug="north-lab")).unique().scalar_one()
    backend = hub_service.backend_for(hub.cluster)
    person = created["first_admin"]["username"]
    token = backend.api_token(hub.backend_state, purpose="check")  # may start and stop anyone's server

    with httpx.Client(base_url=backend.api_url(hub.backend_state), timeout=30,
                      headers={"Authorization": f"token {token}"}) as api:
        def running(name):
            server = api.get(f"users/{name}").json().get("servers", {}).get("")
            return bool(server and server.get("ready"))

        def start(name):
            began = utcnow()
            assert api.post(f"users/{name}/server").status_code in (201, 202)
            wait_for(lambda: running(name), 60, interval=0.2, what=f"{name}'s server")
            return began

        person_started = start(person)
        sweep()
        assert api.post(f"users/{CHECK_USER}").status_code in (201, 409)
        check_started = start(CHECK_USER)
        sweep()
        stopping = utcnow()
        assert api.delete(f"users/{person}/server").status_code in (202, 204)
        wait_for(lambda: not running(person) and not api.get(f"users/{person}").json().get("pending"), 30,
                 interval=0.2, what="the server to stop")
        stopped = utcnow()
        time.sleep(4)  # the sweeps that would have seen the stop are skipped: servers unlisted for over 3 s
        sweep()
        db.session.expire_all()
        # "now" is when that sweep listed the servers: a sweep slowed by a loaded machine opens no gap by itself
        measured = db.session.get(Hub, hub.id).servers_listed_at

        sessions = {s.username: s for s in db.session.execute(db.select(ServerSession)).scalars()}
        assert set(sessions) == {person, CHECK_USER}
        mine = sessions[person]
        assert abs(mine.started - person_started) < timedelta(seconds=60)
        assert mine.end_exact and stopping - timedelta(seconds=1) <= mine.ended <= stopped + timedelta(seconds=1), \
            (stopping, mine.ended, stopped)  # the hub's stop time, not the sweep's (4 s later)
        assert sessions[CHECK_USER].ended is None

        start_of_month, end_of_month = usage.parse_month(None, measured)
        operator = create_user("operator")

        def measures():
            found = usage.report(operator, start_of_month, end_of_month, hub=hub, now=measured)
            return found["institutions"][0]["hubs"][0]

        found = measures()
        truth = ((stopped - person_started) + (measured - check_started)).total_seconds() / 3600
        print(f"\nserver-hours computed {found['server_hours']:.5f}, known {truth:.5f}")
        assert abs(found["server_hours"] - truth) < 1 / 60  # within a minute
        assert (found["active_users"], found["peak_servers"]) == (1, 2)  # the synthetic check's user is no person
        assert found["inexact_sessions"] == 0
        assert any(g["from"] <= stopping.isoformat() and g["until"] >= stopped.isoformat() and not g["open"]
                   for g in found["gaps"]), found["gaps"]  # the skipped sweeps are marked

        sweep()  # more sweeps, after the fact, change nothing of what was counted up to then
        assert measures() == found
        api.delete(f"users/{CHECK_USER}/server")
