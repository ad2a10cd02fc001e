"""Monitoring real local hubs: a killed JupyterHub is seen down within a minute and alerted once; started again,
it is healthy and one recovery notice goes out.  Synthetic checks spawn a real server, or report the hub's error."""
import signal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clusters.local import LocalBackend
from console.extensions import db
from console.models import Cluster, Hub, WebhookTarget
from console.services.institutions import ensure_local_cluster
from tests.helpers import WebhookReceiver, wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def local_fleet(app, ctx, client, create_institution, create_user, api_headers):
    from console.worker import start_in_process

    app.config.update(PROBE_SECONDS=2, PROBE_TIMEOUT=1.5, ALERT_DOWN_SECONDS=2)
    create_institution("north")
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    headers = api_headers(create_user("operator"))
    thread, stop = start_in_process(app)
    yield headers
    stop.set()
    thread.join(60)


def create(client, headers, slug, cluster="local"):
    op = client.post("/api/v1/hubs", json={"slug": slug, "institution": "north", "cluster": cluster},
                     headers=headers).get_json()["operation"]
    return wait_operation(client, headers, op)


def wait_operation(client, headers, op_id, timeout=120):
    return wait_for(lambda: (o := client.get(f"/api/v1/operations/{op_id}", headers=headers).get_json())["state"]
                    in ("succeeded", "failed") and o, timeout, what=f"operation {op_id}")


def api_hub(client, headers, slug):
    return client.get(f"/api/v1/hubs/{slug}", headers=headers).get_json()


def test_killed_hub_is_down_alerted_once_and_recovers(client, local_fleet):
    headers = local_fleet
    with WebhookReceiver() as receiver:
        db.session.add(WebhookTarget(url=receiver.url, created_by="test"))
        db.session.commit()
        assert create(client, headers, "north-lab")["state"] == "succeeded"
        wait_for(lambda: api_hub(client, headers, "north-lab")["health"] == "healthy", 30, what="healthy")
        # the real hub's own metrics reach the console
        metrics = client.get("/metrics", headers=headers).get_data(as_text=True)
        up = [s for f in text_string_to_metric_families(metrics) for s in f.samples if s.name == "hubfleet_hub_up"]
        assert [(s.labels["hub"], s.value) for s in up] == [("north-lab", 1.0)]
        assert api_hub(client, headers, "north-lab")["user_count"] == 0

        state = db.session.execute(db.select(Hub.backend_state).filter_by(slug="north-lab")).scalar_one()
        hub_dir = Path(state["dir"])
        [main] = [p for p in LocalBackend.iter_processes(hub_dir)
                  if str(hub_dir / "jupyterhub_config.py") in p.cmdline()]
        main.send_signal(signal.SIGKILL)
        wait_for(lambda: api_hub(client, headers, "north-lab")["health"] == "down", 60, what="the hub seen down")
        wait_for(lambda: receiver.events("alert"), 20, what="the alert webhook")
        assert [e["alert"]["hub"] for e in receiver.events("alert")] == ["north-lab"]

        restart = client.post("/api/v1/hubs/north-lab/restart", headers=headers).get_json()["operation"]
        assert wait_operation(client, headers, restart)["state"] == "succeeded"
        wait_for(lambda: receiver.events("recovery"), 30, what="the recovery notice")
        assert api_hub(client, headers, "north-lab")["health"] == "healthy"
        assert len(receiver.events("alert")) == 1 and len(receiver.events("recovery")) == 1


def test_synthetic_check_times_a_real_spawn_and_reports_a_failing_spawner(app, client, local_fleet):
    headers = local_fleet
    create(client, headers, "north-lab")
    check = client.post("/api/v1/hubs/north-lab/check", headers=headers).get_json()["operation"]
    op = wait_operation(client, headers, check)
    assert op["state"] == "succeeded", "\n".join(op["log"])
    assert any(line.startswith("spawn: ") for line in op["log"]) and any("timings:" in l for l in op["log"])

    broken = Cluster(name="broken", backend="local", state="ready", settings={
        "root": str(Path(app.config["DATA_DIR"]) / "broken"), "port_range": [21500, 21599],
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
