"""Rollouts across real local hubs and two JupyterHub versions that run here.

The old release runs JupyterHub 5.4.6 in an environment the console creates (once, cached across test runs); the
new one runs the JupyterHub this project installs.  Users created before an upgrade must still be there after it.
"""
import httpx
import pytest

from clusters.environments import installed_jupyterhub
from clusters.local import LocalBackend
from console.extensions import db
from console.models import Hub, Operation, Release
from console.services.institutions import ensure_local_cluster
from tests.e2e.helpers import publish_ready
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(600)
OLD = "5.4.6"


@pytest.fixture
def old_fleet(app, ctx, client, create_institution, create_user, api_headers):
    """``old_fleet(n)``: n healthy hubs on release old; yields (operator headers, hub slugs)."""
    from console.worker import start_in_process

    app.config.update(PROBE_SECONDS=1, PROBE_TIMEOUT=1.5)
    create_institution("north")
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    headers = api_headers(create_user("operator"))
    thread, stop = start_in_process(app)
    publish_ready(client, headers, name="old", jupyterhub_version=OLD)  # built once, smoke-tested

    def make(count):
        slugs = [f"hub-{i}" for i in range(count)]
        ops = [client.post("/api/v1/hubs", json={"slug": s, "institution": "north", "cluster": "local"},
                           headers=headers).get_json()["operation"] for s in slugs]
        for op in ops:
            done = wait_for(lambda: (o := client.get(f"/api/v1/operations/{op}", headers=headers).get_json())[
                "state"] in ("succeeded", "failed") and o, 300, what=f"operation {op}")
            assert done["state"] == "succeeded", "\n".join(done["log"])
        return headers, slugs

    yield make
    stop.set()
    thread.join(60)


def hub_api(slug):
    hub = db.session.execute(db.select(Hub).filter_by(slug=slug)).unique().scalar_one()
    db.session.refresh(hub)
    token = LocalBackend(root="/").api_token(hub.backend_state, purpose="check")
    return httpx.Client(base_url=hub.url + "hub/api/", headers={"Authorization": f"token {token}"}, timeout=10)


def wait_rollout(client, headers, rollout_id, states=("done", "halted", "aborted")):
    return wait_for(lambda: (r := client.get(f"/api/v1/rollouts/{rollout_id}", headers=headers).get_json())[
        "state"] in states and r, 400, interval=1, what=f"rollout {rollout_id}")


def test_rollout_upgrades_every_hub_and_keeps_users(client, old_fleet):
    headers, slugs = old_fleet(4)
    for slug in slugs:
        with hub_api(slug) as api:
            assert api.get("").json()["version"] == OLD
            assert api.post("users/ada").status_code == 201  # a user from before the upgrade
    publish_ready(client, headers, name="new", jupyterhub_version=installed_jupyterhub())
    rollout = client.post("/api/v1/rollouts", json={"release": "new", "target": {"channel": "stable"}, "waves": 2,
                                                    "max_unavailable": 2, "gate_seconds": 2, "start": True},
                          headers=headers).get_json()
    assert len({h["wave"] for h in rollout["hubs"]}) == 2
    done = wait_rollout(client, headers, rollout["id"])
    assert done["state"] == "done", done["reason"]
    for slug in slugs:
        with hub_api(slug) as api:
            assert api.get("").json()["version"] == installed_jupyterhub()
            assert api.get("users/ada").status_code == 200  # still there, in the migrated database
        assert client.get(f"/api/v1/hubs/{slug}", headers=headers).get_json()["health"] == "healthy"


def test_a_release_that_crashes_the_canary_is_rolled_back_and_halts(client, old_fleet):
    headers, slugs = old_fleet(2)
    with hub_api("hub-0") as api:
        api.post("users/ada")
    crash = {"jupyterhub": {"JupyterHub": {"authenticator_class": "no-such-authenticator"}}}
    client.post("/api/v1/releases", json={"name": "crash", "jupyterhub_version": installed_jupyterhub(),
                                          "config": crash}, headers=headers)
    # Its smoke test fails it; stand in for a release that passed its smoke test yet crashes real hubs.
    wait_for(lambda: client.get("/api/v1/releases/crash", headers=headers).get_json()["state"] == "failed", 120,
             what="the crash release's smoke test")
    db.session.execute(db.update(Release).where(Release.name == "crash").values(state="ready", error=""))
    db.session.commit()
    rollout = client.post("/api/v1/rollouts", json={"release": "crash", "target": {"channel": "stable"},
                                                    "waves": 2, "gate_seconds": 1, "start": True},
                          headers=headers).get_json()
    halted = wait_rollout(client, headers, rollout["id"])
    assert halted["state"] == "halted" and halted["reason"].startswith("hub-0: upgrade to crash failed")
    states = {h["hub"]: (h["state"], h["release"]) for h in halted["hubs"]}
    assert states == {"hub-0": ("rolled_back", "old"), "hub-1": ("pending", "old")}
    with hub_api("hub-0") as api:
        assert api.get("").json()["version"] == OLD
        assert api.get("users/ada").status_code == 200  # its database restored from the backup
    wait_for(lambda: client.get("/api/v1/hubs/hub-0", headers=headers).get_json()["health"] == "healthy", 30,
             what="the rolled-back canary healthy")
    assert db.session.query(Operation).filter(Operation.kind == "upgrade",
                                              Operation.hub.has(Hub.slug == "hub-1")).count() == 0
