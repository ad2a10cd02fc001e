"""Supervision of real local hubs, with nobody acting: a hub killed with SIGKILL (JupyterHub and its proxy) is shown
down within seconds, restarted by the supervisor and healthy again, its alert opened and closed once; a hub that keeps
crashing ends failed with the end of its log, and no more restarts are queued."""
import signal
import time
from pathlib import Path

import pytest

from clusters.local import LocalBackend
from console.extensions import db
from console.models import OPERATION_PENDING, Hub, Operation, WebhookTarget
from console.services import monitoring
from console.services.institutions import ensure_local_cluster
from tests.helpers import WebhookReceiver, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def supervised(app, ctx, client, create_institution, create_user, api_headers):
    """The in-process worker and monitor over a local cluster, probing every 5 s and looking again every second."""
    from console.worker import start_in_process

    app.config.update(PROBE_SECONDS=5, RECHECK_SECONDS=1, PROBE_TIMEOUT=2, ALERT_DOWN_SECONDS=1)
    create_institution("north")
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    headers = api_headers(create_user("operator"))
    background, stop = start_in_process(app)
    yield headers
    stop.set()
    background.join(60)
    backend = LocalBackend(str(Path(app.config["DATA_DIR"]) / "clusters" / "local" / "hubs"))
    for hub_dir in backend.root.glob("*"):  # the hubs go with the test
        if hub_dir.is_dir():
            backend._stop(hub_dir, lambda line: None)


def api_hub(client, headers, slug="north-lab"):
    return client.get(f"/api/v1/hubs/{slug}", headers=headers).get_json()


def backend_pid() -> int | None:
    db.session.rollback()  # read what the worker committed last
    return (db.session.execute(db.select(Hub.backend_state).filter_by(slug="north-lab")).scalar_one() or {}).get("pid")


def create_healthy(client, headers):
    assert client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                       headers=headers).status_code == 202
    wait_for(lambda: api_hub(client, headers)["health"] == "healthy", 60, what="the new hub healthy")


def kill_hub() -> int:
    """SIGKILL the hub's JupyterHub and its proxy (its idle culler is left orphaned, as after a real crash);
    returns JupyterHub's pid."""
    db.session.rollback()
    state = db.session.execute(db.select(Hub.backend_state).filter_by(slug="north-lab")).scalar_one()
    hub_dir = Path(state["dir"])
    [main] = [p for p in LocalBackend.iter_processes(hub_dir) if str(hub_dir / "jupyterhub_config.py") in p.cmdline()]
    [proxy] = [p for p in main.children() if "configurable-http-proxy" in " ".join(p.cmdline())]
    for proc in (main, proxy):
        proc.send_signal(signal.SIGKILL)
    return main.pid


def test_a_killed_hub_is_down_in_seconds_heals_by_itself_and_alerts_once(app, client, supervised):
    headers = supervised
    with WebhookReceiver() as receiver:
        app.config["OUTBOUND_ALLOW"] = [receiver.address]
        db.session.add(WebhookTarget(url=receiver.url, created_by="test"))
        db.session.commit()
        create_healthy(client, headers)
        killed_at = time.monotonic()
        killed = kill_hub()
        reasons = set()

        def seen(health):
            hub = api_hub(client, headers)
            reasons.add(f"{hub['status']['label']}: {hub['status']['reason']}")
            return hub["health"] == health

        wait_for(lambda: seen("down"), 15, interval=0.1, what="the killed hub shown down")
        down_after = time.monotonic() - killed_at
        wait_for(lambda: seen("healthy") and backend_pid() != killed, 30 - down_after, interval=0.1,
                 what="the hub healthy again")
        healed_after = time.monotonic() - killed_at
        wait_for(lambda: receiver.events("recovery"), 10, what="the recovery notice")
        time.sleep(2)  # two more monitor passes: nothing more is sent
        print(f"\nkilled hub shown down after {down_after:.1f} s, healthy again after {healed_after:.1f} s")

    assert [e["alert"]["kind"] for e in receiver.events("alert")] == ["down"]
    assert [e["alert"]["hub"] for e in receiver.events("recovery")] == ["north-lab"]
    assert receiver.events("alert")[0]["alert"]["reason"] == "its processes are not running"
    assert any("its processes are not running" in reason for reason in reasons), reasons
    hub = api_hub(client, headers)
    assert (hub["state"], hub["health"], hub["status"]["label"]) == ("running", "healthy", "Running")
    [restart] = db.session.execute(db.select(Operation).where(Operation.actor == monitoring.SUPERVISOR)
                                   ).unique().scalars()
    assert (restart.kind, restart.outcome) == ("reconcile", "succeeded")
    log = client.get(f"/api/v1/operations/{restart.id}", headers=headers).get_json()["log"]
    assert "stopping the hub's leftover processes" in log, log  # the orphaned idle culler went first


def test_a_hub_that_keeps_crashing_ends_failed_with_the_end_of_its_log(app, client, supervised):
    headers = supervised
    app.config.update(MAX_RESTARTS=2)
    create_healthy(client, headers)
    killed = [kill_hub()]
    for _ in range(2):  # each time it comes back, it dies again
        wait_for(lambda: api_hub(client, headers)["health"] == "healthy" and backend_pid() not in killed, 40,
                 interval=0.2, what="the hub restarted by the supervisor")
        killed.append(kill_hub())
    hub = wait_for(lambda: (h := api_hub(client, headers))["state"] == "failed" and h, 15, what="the hub failed")
    assert hub["status"]["label"] == "Failed"
    assert hub["status"]["reason"].startswith("keeps crashing: restarted 2 times, down again; JupyterHub is not "
                                              "running; last lines of its log:\n"), hub["status"]["reason"]
    assert "JupyterHub" in hub["status"]["reason"].split("last lines of its log:")[1]

    def restarts():
        db.session.rollback()
        return db.session.execute(db.select(Operation.state).where(Operation.actor == monitoring.SUPERVISOR)).all()

    assert len(restarts()) == 2
    time.sleep(3)  # three more monitor passes
    assert len(restarts()) == 2 and not [s for (s,) in restarts() if s in OPERATION_PENDING]
    assert api_hub(client, headers)["state"] == "failed"
