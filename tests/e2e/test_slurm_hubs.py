"""A slurm hub end to end, with the session's real Slurm cluster (tests/slurm.py) and a real JupyterHub: registered
and onboarded through the API, a user's server started as a job with the chosen profile's options, reached through
the hub's proxy, surviving a console restart, a hub restart and a slurmctld outage, stopped, and the hub deleted with nothing left."""
from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

import httpx
import psutil
import pytest

from clusters import slurm
from clusters.local import LocalBackend, hub_accounts
from console import create_app
from console.extensions import db
from console.models import Hub
from console.worker import start_in_process
from tests.helpers import wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

USER = "ada"
PASSWORD = "a shared password for the test"
PROFILES = [{"display_name": "Short", "default": True, "slurm": {"partition": "debug"}},
            {"display_name": "Long", "slurm": {"partition": "long", "time_minutes": 90, "cpus": 2, "memory_gb": 1}},
            # more memory than the node has, which the cluster's policy allows by mistake: the job can never start
            {"display_name": "Huge", "slurm": {"partition": "long", "memory_gb": 4000}}]


def wait_operation(client, headers, op_id, timeout=120):
    op = wait_for(lambda: (o := client.get(f"/api/v1/operations/{op_id}", headers=headers).get_json())["state"]
                  in ("succeeded", "failed") and o, timeout, what=f"operation {op_id}")
    assert op["state"] == "succeeded", "\n".join(op["log"])
    return op


def hub_token(url: str, username: str, password: str) -> str:
    """Log into the hub and make an API token of the user's."""
    with httpx.Client(base_url=url, timeout=10) as browser:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', browser.get("hub/login").text).group(1)
        assert browser.post("hub/login", data={"username": username, "password": password,
                                               "_xsrf": xsrf}).status_code == 302
        made = browser.post(f"hub/api/users/{username}/tokens", json={"note": "test", "scopes": ["inherit"]},
                            headers={"X-XSRFToken": browser.cookies.get("_xsrf", path="/hub/")})
    assert made.status_code == 201, made.text
    return made.json()["token"]


def spawn_failure(user_api: httpx.Client) -> str | None:
    """The message of the user's failed spawn, as the hub's spawn page shows it (its progress stream), or None
    while the spawn goes on."""
    with user_api.stream("GET", f"{USER}/server/progress") as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("failed"):
                    return event["message"]
                if event.get("ready"):
                    raise AssertionError("the server started")
    return None


def hub_jobs(env, slug):
    return [job for job in slurm.jobs(env) if job.name.startswith(f"hubfleet-{slug}-")]


def test_a_slurm_hub_runs_servers_as_jobs_and_survives_restarts_and_outages(
        app, ctx, client, create_institution, create_user, api_headers, public_tmp, slurm_site):
    create_institution("north")
    operator = api_headers(create_user("operator"))
    first, last = app.config["LOCAL_PORT_RANGE"]
    background, stop = start_in_process(app)
    clients = contextlib.ExitStack()
    try:
        registered = client.post("/api/v1/clusters/register/slurm", headers=operator, json={
            "name": "hpc", "slurm_conf": str(slurm_site.conf), "qos": [],
            "partitions": [{"name": "debug", "max_time_minutes": 60, "max_cpus": 2, "max_memory_gb": 4},
                           {"name": "long", "max_time_minutes": 240, "max_cpus": 2, "max_memory_gb": 4096}],
            "root": str(public_tmp / "hubs"), "homes": str(public_tmp / "homes"),
            "port_first": first, "port_last": last})
        assert registered.status_code == 201, registered.get_json()
        (public_tmp / "homes").mkdir(mode=0o755)
        cluster = wait_for(lambda: (c := client.get("/api/v1/clusters/hpc", headers=operator).get_json())["state"]
                           in ("ready", "needs-setup") and c, 60, what="the onboarding check")
        assert [(c["name"], c["ok"]) for c in cluster["checks"]] == [
            ("slurmctld answers", True), ("partitions offered", True), ("nodes available", True),
            ("a test job runs", True)], cluster["checks"]

        config = client.get("/api/v1/institutions/north/config", headers=operator).get_json()
        saved = client.put("/api/v1/institutions/north/config", headers=operator, json={
            "auth": {"authenticator_class": "shared-password", "user_password": PASSWORD, "allowed_users": [USER]},
            "environment": {**config["environment"], "profiles": PROFILES}})
        assert saved.status_code == 200, saved.get_json()

        created = client.post("/api/v1/hubs", json={"slug": "north-hpc", "institution": "north",
                                                    "cluster": "hpc"}, headers=operator)
        assert created.status_code == 202, created.get_json()
        wait_operation(client, operator, created.get_json()["operation"])
        url = client.get("/api/v1/hubs/north-hpc", headers=operator).get_json()["url"]
        state = db.session.execute(db.select(Hub.backend_state).filter_by(slug="north-hpc")).scalar_one()
        hub_dir = Path(state["dir"])

        token = hub_token(url, USER, PASSWORD)
        auth = {"Authorization": f"token {token}"}
        user_api = clients.enter_context(httpx.Client(base_url=f"{url}hub/api/users/", timeout=30, headers=auth))
        server = clients.enter_context(httpx.Client(base_url=f"{url}user/{USER}/", timeout=10, headers=auth))
        began = time.monotonic()
        assert user_api.post(f"{USER}/server", json={"profile": "Long"}).status_code in (201, 202)
        wait_for(lambda: (user_api.get(USER).json()["servers"].get("") or {}).get("ready"), 60, interval=0.3,
                 what="the server ready")
        started_in = time.monotonic() - began

        [job] = hub_jobs(slurm_site.env, "north-hpc")
        assert (job.name, job.state, job.partition, job.time_limit, job.cpus, job.memory_mb) == \
            (f"hubfleet-north-hpc-{USER}", "RUNNING", "long", 90, 2, 1024)
        [account] = hub_accounts(hub_dir)
        assert job.user == account.pw_name  # submitted as the user's own system account, not root
        assert server.get("api/status").status_code == 200, started_in  # through the hub's proxy

        # A console restart: its worker and app go, a new one comes; the hub and the job never notice.
        stop.set()
        background.join(30)
        restarted = create_app(app.config)
        background, stop = start_in_process(restarted)
        client = restarted.test_client()  # the rest of the test talks to the new console
        again = client.get("/api/v1/hubs/north-hpc", headers=operator).get_json()
        assert again["state"] == "running" and again["url"] == url
        assert [j.id for j in hub_jobs(slurm_site.env, "north-hpc")] == [job.id]
        assert server.get("api/status").status_code == 200

        # A hub restart (JupyterHub and its proxy replaced): the job runs on and the new JupyterHub re-attaches to it.
        old_pid = db.session.execute(db.select(Hub.backend_state).filter_by(slug="north-hpc")) \
            .scalar_one()["pid"]
        wait_operation(client, operator, client.post("/api/v1/hubs/north-hpc/restart", headers=operator)
                       .get_json()["operation"])
        db.session.expire_all()
        again_pid = db.session.execute(db.select(Hub.backend_state).filter_by(slug="north-hpc")).scalar_one()["pid"]
        assert again_pid != old_pid
        assert [j.id for j in hub_jobs(slurm_site.env, "north-hpc")] == [job.id]
        wait_for(lambda: server.get("api/status").status_code == 200, 20, interval=0.3,
                 what="the server reached through the new proxy")

        # slurmctld down and up again: the job runs on, the server answers throughout, Slurm knows the job again.
        slurm_site.stop_controller()
        try:
            with pytest.raises(slurm.SlurmError):
                slurm.jobs(slurm_site.env)
            assert server.get("api/status").status_code == 200
        finally:
            slurm_site.start_controller()
        [after] = hub_jobs(slurm_site.env, "north-hpc")
        assert (after.id, after.state) == (job.id, "RUNNING")
        assert server.get("api/status").status_code == 200
        assert user_api.get(USER).json()["servers"][""]["ready"]

        # Stopping the server cancels its job.
        assert user_api.delete(f"{USER}/server").status_code in (202, 204)
        wait_for(lambda: not hub_jobs(slurm_site.env, "north-hpc"), 30, what="the job cancelled")

        # A job that cannot start: the person is told why, in words, with Slurm's reason; not a timeout.
        asked = user_api.post(f"{USER}/server", json={"profile": "Huge"})
        # failing within JupyterHub's slow_spawn_timeout, the start request answers the failure itself
        failed = asked.json()["message"] if asked.status_code == 500 else \
            wait_for(lambda: spawn_failure(user_api), 60, what="the spawn to fail")
        assert "could not start" in failed and "not available" in failed, failed
        assert not hub_jobs(slurm_site.env, "north-hpc")

        # A second server, left running: deleting the hub cancels it and leaves no process.
        assert user_api.post(f"{USER}/server", json={"profile": "Short"}).status_code in (201, 202)
        wait_for(lambda: (user_api.get(USER).json()["servers"].get("") or {}).get("ready"), 60, interval=0.3,
                 what="the second server ready")
        [second] = hub_jobs(slurm_site.env, "north-hpc")
        assert (second.partition, second.time_limit, second.cpus) == ("debug", 60, 1)  # slurm_jobs' defaults
        clients.close()
        wait_operation(client, operator, client.delete("/api/v1/hubs/north-hpc", headers=operator)
                       .get_json()["operation"])
        assert not hub_jobs(slurm_site.env, "north-hpc")
        assert not list(LocalBackend.iter_processes(hub_dir)) and not hub_dir.exists()
        assert not hub_accounts(hub_dir)
        # nothing runs as the account (an ended job process may wait a moment for init to reap it: not running)
        uid = account.pw_uid
        assert not [p for p in psutil.process_iter(["uids", "status"]) if p.info["uids"]
                    and p.info["uids"].real == uid and p.info["status"] != psutil.STATUS_ZOMBIE]
    finally:
        clients.close()
        stop.set()
        background.join(30)
