"""An institution's config change over three real local hubs: refused usernames, then a change that passes every
check but makes JupyterHub fail to start on the first hub.

How the failure is forced (test-only): the canary hub runs a release whose JupyterHub layer replaces
``JupyterHub.services``.  That is harmless while idle culling is off; the change turns culling on, which adds the
culler's role, and JupyterHub refuses a role naming an undefined service only when it starts
(``init_role_assignment``), which the preflight does not reach.  So the change fails on the canary itself.
"""
import json
from pathlib import Path

import httpx
import psutil
import pytest

from clusters.environments import installed_jupyterhub
from clusters.local import LocalBackend
from console.extensions import db
from console.models import Hub, Institution, Operation, Release, Rollout
from console.services.institutions import ensure_local_cluster
from tests.conftest import csrf_from
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(300)
SLUGS = ("north-lab", "north-b", "north-c")
ENV = {"environment.image": "quay.io/jupyter/scipy-notebook:2025-01-06", "environment.cpu_limit": "2",
       "environment.mem_limit": "4G"}


def hub(slug):
    row = db.session.execute(db.select(Hub).filter_by(slug=slug)).unique().scalar_one()
    db.session.refresh(row)
    return row


def settings_of(slug):
    return json.loads((Path(hub(slug).backend_state["dir"]) / "settings.json").read_text())


def test_a_change_that_breaks_jupyterhub_stops_at_the_first_hub_and_puts_it_back(
        app, client, create_institution, create_user, api_headers, login):
    from console.worker import start_in_process

    app.config.update(PROBE_SECONDS=1, PROBE_TIMEOUT=1.5, ROLLOUT_STEP_SECONDS=0.5)
    institution = create_institution("north", "North College")
    institution.environment = {"cull_timeout": 0}  # the stored config: no idle culler
    institution.policy = {"open_login_allowed": True}  # the change brings the dummy login
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    operator = api_headers(create_user("operator"))
    admin = create_user("institution_admin", institution=institution)
    background, stop = start_in_process(app)
    try:
        ops = [client.post("/api/v1/hubs", json={"slug": s, "institution": "north", "cluster": "local"},
                           headers=operator).get_json()["operation"] for s in SLUGS]
        for op in ops:
            done = wait_for(lambda: (o := client.get(f"/api/v1/operations/{op}", headers=operator).get_json())[
                "state"] in ("succeeded", "failed") and o, 120, what=f"operation {op}")
            assert done["state"] == "succeeded", "\n".join(done["log"])
        canary = hub("north-lab")
        release = Release(name="no-services", jupyterhub_version=installed_jupyterhub(), channel="beta",
                          state="ready", config={"jupyterhub": {"JupyterHub": {"services": []}}})
        db.session.add(release)
        db.session.flush()
        canary.release_id, canary.canary = release.id, True
        db.session.commit()
        pids = {slug: hub(slug).backend_state["pid"] for slug in SLUGS}

        login(client, admin)
        token = csrf_from(client.get("/institutions/north/config").get_data(as_text=True))
        form = {"csrf_token": token, "action": "preview", "auth.authenticator_class": "dummy",
                "auth.allowed_users": "ada\nteam/ops", **ENV, "environment.cull_timeout": "600"}
        refused = client.post("/institutions/north/config", data=form)
        assert refused.status_code == 422
        assert "JupyterHub refuses the username &#39;team/ops&#39;: it contains &#39;/&#39;." in refused.get_data(
            as_text=True)

        form["auth.allowed_users"] = "ada\ngrace"
        assert client.post("/institutions/north/config", data=form).status_code == 200  # the preview
        applied = client.post("/institutions/north/config/apply", data={"csrf_token": token}, follow_redirects=True)
        assert "Applying hub by hub, north-lab first, then north-b, north-c." in applied.get_data(as_text=True)
        rollout = db.session.execute(db.select(Rollout).filter_by(kind="config")).unique().scalar_one()
        halted = wait_for(lambda: (db.session.refresh(rollout) or rollout.state) != "running", 150, interval=0.5,
                          what="the config rollout to stop")
        assert halted and rollout.state == "halted", rollout.reason

        [op] = db.session.execute(db.select(Operation).filter_by(kind="reconfigure")).unique().scalars().all()
        log = "\n".join(line.line for line in op.lines)
        assert op.hub.slug == "north-lab" and op.outcome == "rolled_back", log
        assert "preflight with JupyterHub" in log and "the new configuration loads" in log
        assert "Found undefined service idle-culler" in op.error  # JupyterHub's own reason, shown to the admin
        assert "rolled back to the institution's current configuration" in op.error
        wait_for(lambda: hub("north-lab").health == "healthy", 60, what="north-lab healthy again")
        assert "config_rollout" not in hub("north-lab").spec
        settings = settings_of("north-lab")  # its previous config: closed (only its first admin), no culler
        assert settings["FirstAdminAuthenticator"]["allowed_users"] == ["first-admin"]
        assert "idle-culler" not in [s["name"] for s in settings["JupyterHub"]["services"]]
        assert hub("north-lab").backend_state["pid"] != pids["north-lab"]
        assert "restored the hub's database" in log  # the users the failed start wrote are gone again
        state = hub("north-lab").backend_state
        users = httpx.get(f"{state['url']}hub/api/users", timeout=10, headers={
            "Authorization": f"token {LocalBackend(root='/').api_token(state, purpose='check')}"}).json()
        assert [user["name"] for user in users] == ["first-admin"]
        for slug in ("north-b", "north-c"):  # never touched
            assert hub(slug).backend_state["pid"] == pids[slug] and psutil.pid_exists(pids[slug])
            assert hub(slug).health == "healthy"
        institution = db.session.get(Institution, institution.id)
        db.session.refresh(institution)
        assert institution.environment == {"cull_timeout": 0} and not institution.auth  # still the old one

        page = client.get("/institutions/north").get_data(as_text=True)
        assert 'id="config-rollout-north-lab"' in page and ">Rolled back<" in page and page.count(">Not touched<") == 2
        form_page = client.get("/institutions/north/config").get_data(as_text=True)
        assert "not applied yet" in form_page and "ada\ngrace" in form_page  # the draft keeps what was typed
    finally:
        stop.set()
        background.join(60)
