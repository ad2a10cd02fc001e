"""End to end with real JupyterHub processes (and their configurable-http-proxy) on this machine."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from clusters.local import LocalBackend
from console.extensions import db
from console.models import Hub, Operation
from tests.e2e.helpers import login_and_start_server
from tests.helpers import port_open, wait_for

pytestmark = pytest.mark.timeout(240)


def operation_state(client, headers, op_id):
    return client.get(f"/api/v1/operations/{op_id}", headers=headers).get_json()


def wait_operation(client, headers, op_id, timeout=120):
    op = wait_for(lambda: (o := operation_state(client, headers, op_id))["state"] in ("succeeded", "failed") and o,
                  timeout, what=f"operation {op_id}")
    assert op["state"] == "succeeded", "\n".join(op["log"])
    return op


def main_processes(hub_dir):
    config = str(hub_dir / "jupyterhub_config.py")
    return [p for p in LocalBackend.iter_processes(hub_dir) if config in p.cmdline()]


def test_create_through_api_serves_health_then_delete_leaves_nothing(client, local_fleet, worker_thread):
    headers = local_fleet
    created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                          headers=headers)
    assert created.status_code == 202
    wait_operation(client, headers, created.get_json()["operation"])

    hub = client.get("/api/v1/hubs/north-lab", headers=headers).get_json()
    assert hub["state"] == "running" and hub["health"] == "healthy"
    assert httpx.get(hub["url"] + "hub/health", timeout=5).status_code == 200
    assert hub["jupyterhub_version"] == httpx.get(hub["url"] + "hub/api/", timeout=5).json()["version"]

    state = db.session.execute(db.select(Hub.backend_state).filter_by(slug="north-lab")).scalar_one()
    hub_dir = Path(state["dir"])
    processes = list(LocalBackend.iter_processes(hub_dir))
    assert {p.name() for p in processes} >= {"node"} and len(main_processes(hub_dir)) == 1
    # the idle culler of the release defaults runs as a managed service, marked as one of the hub's processes
    assert any("jupyterhub_idle_culler" in " ".join(p.cmdline()) for p in processes)
    ports = list(state["ports"].values())
    assert any(port_open(p) for p in ports)

    deleted = client.delete("/api/v1/hubs/north-lab", headers=headers)
    assert deleted.status_code == 202
    wait_operation(client, headers, deleted.get_json()["operation"])
    for proc in processes:
        assert not proc.is_running() or proc.status() == "zombie", f"{proc.pid} still running"
    assert not [p for p in ports if port_open(p)]
    assert not hub_dir.exists()
    assert client.get("/api/v1/hubs/north-lab", headers=headers).status_code == 404


def test_the_first_admin_logs_in_and_starts_a_notebook_server(client, local_fleet, worker_thread):
    headers = local_fleet
    created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                          headers=headers)
    # the institution has configured no login: the hub's first admin is the only way in, shown only here
    admin = created.get_json()["first_admin"]
    assert admin["username"] == "first-admin" and len(admin["password"]) >= 20
    wait_operation(client, headers, created.get_json()["operation"])
    hub = client.get("/api/v1/hubs/north-lab", headers=headers)
    assert admin["password"] not in hub.get_data(as_text=True)
    lab = login_and_start_server(hub.get_json()["url"], admin["username"], admin["password"])
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    wait_operation(client, headers, client.delete("/api/v1/hubs/north-lab", headers=headers).get_json()["operation"])


def _worker_process(app, tmp_path, name):
    env = {**os.environ, "HUBFLEET_DATABASE_URL": app.config["DATABASE_URL"],
           "HUBFLEET_DATA_DIR": app.config["DATA_DIR"], "HUBFLEET_SECRET_KEY": "test-secret",
           "HUBFLEET_LEASE_SECONDS": "3", "HUBFLEET_WORKER_POLL_SECONDS": "0.1",
           "HUBFLEET_RELEASE_ENVIRONMENTS": app.config["RELEASE_ENVIRONMENTS"]}
    with open(tmp_path / f"{name}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "console.cli", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def test_sigkill_of_the_worker_mid_creation_ends_with_one_healthy_hub(app, client, local_fleet, tmp_path):
    headers = local_fleet
    op_id = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                        headers=headers).get_json()["operation"]
    first = _worker_process(app, tmp_path, "worker-1")
    try:
        wait_for(lambda: any("started JupyterHub" in line
                             for line in operation_state(client, headers, op_id)["log"]), 60,
                 what="the worker to start JupyterHub")
        # Killed either mid-step (running: its lease must expire) or while the operation waits for the hub.
        killed_in = operation_state(client, headers, op_id)["state"]
        assert killed_in in ("running", "waiting")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    second = _worker_process(app, tmp_path, "worker-2")
    try:
        op = wait_operation(client, headers, op_id)
    finally:
        second.terminate()
        second.wait(30)
    # Whether the second worker re-did the deploy step (adopting the hub the first one started) or the first had
    # recorded it and the second only waited: JupyterHub was started once.
    assert sum(line.startswith("started JupyterHub") for line in op["log"]) == 1, "\n".join(op["log"])
    if any("adopting it" in line for line in op["log"]):
        assert op["attempts"] == 2
    hub_dir = tmp_path / "data" / "clusters" / "local" / "hubs" / "north-lab"
    [main] = main_processes(hub_dir)
    # The worker's settings (its database URL, secret key) did not leak into the hub's environment.
    assert [k for k in main.environ() if k.startswith("HUBFLEET_")] == ["HUBFLEET_HUB_DIR"]
    hub = client.get("/api/v1/hubs/north-lab", headers=headers).get_json()
    assert hub["health"] == "healthy" and httpx.get(hub["url"] + "hub/health", timeout=5).status_code == 200
    assert db.session.query(Hub).count() == 1
    assert db.session.query(Operation).filter(Operation.state != "succeeded").count() == 0


def _drain(app, worker, timeout=60):
    """Work on operations in this thread until none is queued or waiting."""
    with app.app_context():
        wait_for(lambda: (worker.run_once() or True) and not db.session.query(Operation).filter(
            Operation.state.in_(("queued", "waiting", "running"))).count(), timeout, interval=0.1,
            what="the operations to finish")
        db.session.remove()
    db.session.expire_all()


def test_hubs_survive_a_console_restart(app, client, local_fleet):
    from console.worker import Worker

    headers = local_fleet
    op_id = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                        headers=headers).get_json()["operation"]
    _drain(app, Worker(app))
    wait_operation(client, headers, op_id, timeout=5)
    state = db.session.execute(db.select(Hub.backend_state).filter_by(slug="north-lab")).scalar_one()
    hub_dir = Path(state["dir"])
    [original] = main_processes(hub_dir)

    # A new console finds the hub still running: it adopts it and queues nothing.
    with app.app_context():
        Worker(app).resync()
    assert db.session.query(Operation).filter_by(state="queued").count() == 0
    assert [p.pid for p in main_processes(hub_dir)] == [original.pid]

    # A hub that died while the console was down is restarted cleanly, once.
    original.kill()
    original.wait(10)
    with app.app_context():
        worker = Worker(app)
        worker.resync()
    _drain(app, worker)
    ops = [(o.kind, o.state, [l.line for l in o.lines]) for o in db.session.query(Operation)]
    assert db.session.query(Operation).filter_by(kind="reconcile", state="succeeded").count() == 1, ops
    [restarted] = main_processes(hub_dir)
    assert restarted.pid != original.pid
    assert httpx.get(state["url"] + "hub/health", timeout=5).status_code == 200
    with app.app_context():
        LocalBackend(root=str(hub_dir.parent)).remove(state, lambda line: None)
