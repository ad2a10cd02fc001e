"""Monitoring real local hubs: probes go on at their own pace while the worker is held for a long time by another
operation, and a hub killed meanwhile is shown down; a real hub's own metrics reach the console; synthetic checks
spawn a real server, or report the hub's error.  Supervision (restart after a crash) is in test_supervision_local.py."""
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clusters.local import LocalBackend
from console.extensions import db
from console.models import Cluster, Hub, HubSample, Operation, utcnow
from console.services.institutions import ensure_local_cluster
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(300)
# The two longest real-hub tests run once, on SQLite: what they store is tested on both databases by the console's
# own tests (tests/console/test_monitoring.py, test_worker.py); the real hubs are the point here.
ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PROBE_SECONDS = 3


@pytest.fixture
def local_fleet(app, ctx, client, create_institution, create_user, api_headers):
    from console.worker import start_in_process

    app.config.update(PROBE_SECONDS=PROBE_SECONDS, RECHECK_SECONDS=1, PROBE_TIMEOUT=1.5, ALERT_DOWN_SECONDS=2)
    create_institution("north")
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    headers = api_headers(create_user("operator"))
    thread, stop = start_in_process(app)
    yield headers
    stop.set()
    thread.join(60)
    backend = LocalBackend(str(Path(app.config["DATA_DIR"]) / "clusters" / "local" / "hubs"))
    for hub_dir in backend.root.glob("*"):  # whatever a failed test left running goes with it
        if hub_dir.is_dir():
            backend._stop(hub_dir, lambda line: None)


def create(client, headers, slug, cluster="local"):
    op = client.post("/api/v1/hubs", json={"slug": slug, "institution": "north", "cluster": cluster},
                     headers=headers).get_json()["operation"]
    return wait_operation(client, headers, op)


def wait_operation(client, headers, op_id, timeout=120):
    return wait_for(lambda: (o := client.get(f"/api/v1/operations/{op_id}", headers=headers).get_json())["state"]
                    in ("succeeded", "failed") and o, timeout, what=f"operation {op_id}")


def api_hub(client, headers, slug):
    return client.get(f"/api/v1/hubs/{slug}", headers=headers).get_json()


@ONE_DATABASE
def test_probes_go_on_while_an_operation_holds_the_worker(app, client, local_fleet):
    headers = local_fleet
    for slug in ("north-a", "north-b"):
        assert create(client, headers, slug)["state"] == "succeeded"
    # A deploy that blocks the worker for 40 s, as building a JupyterHub environment or a Helm upgrade would.
    db.session.add(Cluster(name="slow", backend="fake-slow", state="ready", settings={"delay": 40}))
    db.session.commit()
    slow = client.post("/api/v1/hubs", json={"slug": "north-slow", "institution": "north", "cluster": "slow"},
                       headers=headers).get_json()["operation"]
    wait_for(lambda: client.get(f"/api/v1/operations/{slow}", headers=headers).get_json()["state"] == "running", 10,
             what="the slow operation to start")
    began = utcnow()

    wait_for(lambda: utcnow() - began > timedelta(seconds=10), 15)
    state = db.session.execute(db.select(Hub.backend_state).filter_by(slug="north-b")).scalar_one()
    hub_dir = Path(state["dir"])
    [main] = [p for p in LocalBackend.iter_processes(hub_dir) if str(hub_dir / "jupyterhub_config.py") in p.cmdline()]
    main.send_signal(signal.SIGKILL)
    killed = utcnow()
    wait_for(lambda: api_hub(client, headers, "north-b")["health"] == "down", 5, interval=0.1,
             what="the killed hub shown down while the worker is busy")
    assert client.get(f"/api/v1/operations/{slow}", headers=headers).get_json()["state"] == "running"

    assert wait_operation(client, headers, slow, timeout=60)["state"] == "succeeded"
    db.session.rollback()
    op = db.session.get(Operation, slow)
    assert op.finished_at - began >= timedelta(seconds=30)  # the worker really was held all along
    hub_a = db.session.execute(db.select(Hub.id).filter_by(slug="north-a")).scalar_one()
    moments = [began, *db.session.execute(db.select(HubSample.at).where(
        HubSample.hub_id == hub_a, HubSample.at > began, HubSample.at < op.finished_at).order_by(HubSample.at)
    ).scalars(), op.finished_at]
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(moments, moments[1:])]
    print(f"\n{len(moments) - 2} samples of a hub in {gaps and sum(gaps):.0f} s while the worker was held; "
          f"longest gap {max(gaps):.1f} s (probe interval {PROBE_SECONDS} s)")
    assert max(gaps) <= 2 * PROBE_SECONDS, gaps
    b_samples = db.session.execute(db.select(HubSample.up).join(Hub).where(
        Hub.slug == "north-b", HubSample.at >= killed, HubSample.at < op.finished_at)).scalars().all()
    assert b_samples and not any(b_samples)


def test_a_real_hubs_own_metrics_reach_the_console(client, local_fleet):
    headers = local_fleet
    assert create(client, headers, "north-lab")["state"] == "succeeded"

    def exposed():
        text = client.get("/metrics", headers=headers).get_data(as_text=True)
        found = {s.name: (s.labels["hub"], s.value) for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name.startswith("hubfleet_hub_")}
        return "hubfleet_hub_active_users" in found and found  # read from the hub's /hub/metrics by a probe

    found = wait_for(exposed, 15, what="a probe of the hub's /hub/metrics")
    assert found["hubfleet_hub_up"] == ("north-lab", 1.0)
    assert found["hubfleet_hub_active_users"] == found["hubfleet_hub_running_servers"] == ("north-lab", 0.0)
    assert api_hub(client, headers, "north-lab")["user_count"] == 1  # its first admin, the one user of a new hub


@ONE_DATABASE
def test_synthetic_check_times_a_real_spawn_and_reports_a_failing_spawner(app, client, local_fleet):
    headers = local_fleet
    create(client, headers, "north-lab")
    check = client.post("/api/v1/hubs/north-lab/check", headers=headers).get_json()["operation"]
    op = wait_operation(client, headers, check)
    assert op["state"] == "succeeded", "\n".join(op["log"])
    assert any(line.startswith("spawn: ") for line in op["log"]) and any("timings:" in l for l in op["log"])

    last = app.config["LOCAL_PORT_RANGE"][1]  # the end of the range: the local cluster takes ports from its start
    broken = Cluster(name="broken", backend="local", state="ready", settings={
        "root": str(Path(app.config["DATA_DIR"]) / "broken"), "port_range": [last - 99, last],
        "singleuser_cmd": ["/bin/false"]})
    db.session.add(broken)
    db.session.commit()
    create(client, headers, "broken-lab", cluster="broken")
    check = client.post("/api/v1/hubs/broken-lab/check", headers=headers).get_json()["operation"]
    op = wait_operation(client, headers, check)
    assert op["state"] == "failed"
    assert op["error"].startswith("synthetic check failed: the server did not start: "), op["error"]
    for slug in ("north-lab", "broken-lab"):
        wait_operation(client, headers,
                       client.delete(f"/api/v1/hubs/{slug}", headers=headers).get_json()["operation"])


def test_a_real_hubs_running_server_reaches_my_hubs(app, client, local_fleet, create_user, api_headers):
    """The sweep reads the real hub's /hub/api/users?state=active with the hub's read-only token (its scopes in
    the local hub's config): the first admin's running server shows in My hubs of the person of that username."""
    from console.models import ServerSnapshot
    from console.services import memberships
    from tests.e2e.helpers import login_and_start_server
    headers = local_fleet
    created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                          headers=headers)
    admin = created.get_json()["first_admin"]
    done = wait_operation(client, headers, created.get_json()["operation"])
    assert done["state"] == "succeeded", done
    person = create_user("member", email=f"{admin['username']}@north.example")
    assert person.username == admin["username"]
    hub = db.session.execute(db.select(Hub).filter_by(slug="north-lab")).unique().scalar_one()
    memberships.grant(person, hub=hub, source="operator")
    db.session.commit()
    lab = login_and_start_server(api_hub(client, headers, "north-lab")["url"], admin["username"], admin["password"])
    assert lab.status_code == 200

    def snapshot():
        db.session.rollback()
        return db.session.execute(db.select(ServerSnapshot).filter_by(hub_id=hub.id, username=person.username)
                                  ).scalar_one_or_none()

    seen = wait_for(lambda: (s := snapshot()) is not None and s.state == "running" and s, 15,
                    what="a sweep to see the running server")
    assert seen.started is not None and seen.last_activity is not None
    (row,) = client.get("/api/v1/me/hubs", headers=api_headers(person)).get_json()
    assert (row["hub"], row["server_state"]) == ("north-lab", "running")
    assert row["launch_url"] == api_hub(client, headers, "north-lab")["url"] + "hub/user-redirect/lab"
