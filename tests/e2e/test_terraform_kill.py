"""SIGKILL of the worker in the middle of a Terraform apply, then a restart.

The apply is made slow by a `terraform` wrapper on PATH that waits before running the real CLI, so the kill lands
while Terraform runs.  The operation must end (failed, with the reason) rather than stay 'running', the workspace
must be unlocked, and a fresh plan and apply must then work.
"""
import os
import shutil
import signal
import stat
import subprocess
import sys

import pytest

from console.extensions import db
from console.models import Cluster, User
from console.services import clusters as cluster_service
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def slow_terraform(tmp_path):
    wrapper = tmp_path / "bin" / "terraform"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = apply ]; then sleep 4; fi\nexec {shutil.which("terraform")} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper)


def start_worker(app, tmp_path, name, terraform_bin):
    env = {**os.environ, "HUBFLEET_DATABASE_URL": app.config["DATABASE_URL"],
           "HUBFLEET_DATA_DIR": app.config["DATA_DIR"], "HUBFLEET_SECRET_KEY": "test-secret",
           "HUBFLEET_LEASE_SECONDS": "3", "HUBFLEET_WORKER_POLL_SECONDS": "0.1",
           "HUBFLEET_TERRAFORM_BIN": terraform_bin}
    with open(tmp_path / f"{name}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "console.cli", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def test_worker_killed_during_apply(app, ctx, client, tmp_path, create_user, api_headers, run_worker,
                                    slow_terraform):
    app.config["TERRAFORM_BIN"] = slow_terraform
    headers = api_headers(create_user("operator"))
    variables = {"name": "campus", "data_dir": str(tmp_path / "campus"), "port_first": 24100, "port_last": 24199}
    client.post("/api/v1/clusters", json={"provider": "local", "variables": variables}, headers=headers)
    run_worker()
    op_id = client.post("/api/v1/clusters/campus/apply", headers=headers).get_json()["operation"]

    def op():
        return client.get(f"/api/v1/operations/{op_id}", headers=headers).get_json()

    first = start_worker(app, tmp_path, "worker-1", slow_terraform)
    try:
        wait_for(lambda: any(line.startswith("$ apply") for line in op()["log"]), 60, what="the apply to start")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert op()["state"] == "running"

    second = start_worker(app, tmp_path, "worker-2", slow_terraform)
    try:
        ended = wait_for(lambda: (o := op())["state"] in ("succeeded", "failed") and o, 60,
                         what="the operation to end")
    finally:
        second.terminate()
        second.wait(30)
    log = "\n".join(ended["log"])
    assert ended["state"] == "failed" and "worker stopped during apply" in ended["error"]
    assert "found a run that did not finish (apply" in log
    assert client.get("/api/v1/clusters/campus", headers=headers).get_json()["state"] == "failed"

    # The workspace is usable again: plan, approve, apply.
    operator = db.session.execute(db.select(User).filter_by(role="operator")).unique().scalar_one()
    cluster = db.session.execute(db.select(Cluster).filter_by(name="campus")).scalar_one()
    cluster_service.replan(operator, cluster, variables)
    app.config["TERRAFORM_BIN"] = shutil.which("terraform")
    run_worker()
    assert client.post("/api/v1/clusters/campus/apply", headers=headers).status_code == 202
    run_worker()
    assert client.get("/api/v1/clusters/campus", headers=headers).get_json()["state"] == "ready"
    assert (tmp_path / "campus" / "hubs").is_dir()
