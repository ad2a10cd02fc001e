"""SIGKILL of the worker in the middle of a rollout, then a restart: the rollout carries on to the end, and no hub
is left half-upgraded without an operation saying so.  Hubs are the slow test double (2 s per deploy)."""
import os
import signal
import subprocess
import sys

import pytest

from console.extensions import db
from console.models import Hub, Operation, Release
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(300)


def start_worker(app, tmp_path, name):
    env = {**os.environ, "HUBFLEET_DATABASE_URL": app.config["DATABASE_URL"],
           "HUBFLEET_DATA_DIR": app.config["DATA_DIR"], "HUBFLEET_SECRET_KEY": "test-secret",
           "HUBFLEET_LEASE_SECONDS": "3", "HUBFLEET_WORKER_POLL_SECONDS": "0.1",
           "HUBFLEET_RELEASE_ENVIRONMENTS": app.config["RELEASE_ENVIRONMENTS"]}
    with open(tmp_path / f"{name}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "console.cli", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def test_worker_killed_mid_rollout(app, ctx, client, tmp_path, create_institution, create_cluster, create_user,
                                   api_headers, run_worker):
    create_institution("north")
    create_cluster("slow", backend="fake-slow", delay=2)
    headers = api_headers(create_user("operator"))
    client.post("/api/v1/releases", json={"name": "old", "jupyterhub_version": "5.4.6"}, headers=headers)
    for i in range(4):
        client.post("/api/v1/hubs", json={"slug": f"hub-{i}", "institution": "north", "cluster": "slow"},
                    headers=headers)
    run_worker()
    client.post("/api/v1/releases", json={"name": "new", "jupyterhub_version": "6.1.1"}, headers=headers)
    rollout = client.post("/api/v1/rollouts", json={"release": "new", "target": {"channel": "stable"}, "waves": 2,
                                                    "gate_seconds": 0, "start": True}, headers=headers).get_json()

    def running_upgrades():
        db.session.expire_all()
        return db.session.query(Operation).filter_by(kind="upgrade", state="running").count()

    first = start_worker(app, tmp_path, "worker-1")
    try:
        wait_for(lambda: db.session.query(Operation).filter_by(kind="upgrade", state="succeeded").count() >= 1
                 and running_upgrades(), 60, interval=0.1, what="an upgrade in flight after the first one")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    second = start_worker(app, tmp_path, "worker-2")
    try:
        done = wait_for(lambda: (r := client.get(f"/api/v1/rollouts/{rollout['id']}", headers=headers).get_json())[
            "state"] in ("done", "halted") and r, 120, interval=0.5, what="the rollout to end")
    finally:
        second.terminate()
        second.wait(30)
    assert done["state"] == "done", done["reason"]
    db.session.expire_all()
    new = db.session.execute(db.select(Release).filter_by(name="new")).scalar_one()
    for hub in db.session.execute(db.select(Hub)).unique().scalars():
        ops = db.session.execute(db.select(Operation).where(Operation.hub_id == hub.id,
                                                            Operation.kind == "upgrade")).unique().scalars().all()
        assert hub.release_id == new.id and hub.state == "running"
        assert [op.state for op in ops] == ["succeeded"]
    reclaimed = [op for op in db.session.execute(db.select(Operation).filter_by(kind="upgrade")).unique().scalars()
                 if op.attempts == 2]
    assert reclaimed, "the killed worker's upgrade was taken over"
