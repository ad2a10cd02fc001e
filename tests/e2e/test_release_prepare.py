"""Preparing releases for a local cluster, with real JupyterHub processes: a smoke-test hub must answer /hub/health
before a release is used, a release that cannot start never becomes usable, a build that pip cannot do fails with a
short reason."""
import time
from pathlib import Path

import psutil
import pytest

from clusters.environments import installed_jupyterhub
from clusters.local import MARKER, LocalBackend
from console.extensions import db
from console.models import Cluster, Hub, Operation, Release
from console.services import operations
from console.services.institutions import ensure_local_cluster

pytestmark = pytest.mark.timeout(240)


def smoke_root(app):
    cluster = db.session.execute(db.select(Cluster).filter_by(name="local")).scalar_one()
    return Path(cluster.settings["root"]) / LocalBackend.NESTED


def smoke_processes(app):
    root = str(smoke_root(app))
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER, "").startswith(root):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def release(client, headers, name):
    return client.get(f"/api/v1/releases/{name}", headers=headers).get_json()


def test_a_release_of_the_installed_version_becomes_ready_through_a_smoke_test_hub(app, client, local_fleet,
                                                                                    run_worker):
    published = client.post("/api/v1/releases", json={"name": "good", "jupyterhub_version": installed_jupyterhub()},
                            headers=local_fleet)
    assert published.status_code == 201 and published.get_json()["state"] == "preparing"
    client.post("/api/v1/hubs", json={"slug": "early", "institution": "north", "cluster": "local"},
                headers=local_fleet)  # created while the release prepares: it is not given the release
    started = time.monotonic()
    run_worker(timeout=120)
    body = release(client, local_fleet, "good")
    assert (body["state"], body["error"]) == ("ready", ""), body
    log = client.get(f"/api/v1/operations/{body['operation']}", headers=local_fleet).get_json()["log"]
    assert any(line.startswith("smoke test passed: /hub/health answered (JupyterHub "
                               f"{installed_jupyterhub()})") for line in log), log
    print(f"\nsmoke test of JupyterHub {installed_jupyterhub()} (with a hub's start): "
          f"{time.monotonic() - started:.1f}s")
    assert not smoke_processes(app) and not any(smoke_root(app).iterdir())
    assert db.session.execute(db.select(Hub).filter_by(slug="early")).unique().scalar_one().release is None
    client.post("/api/v1/hubs", json={"slug": "late", "institution": "north", "cluster": "local"},
                headers=local_fleet)
    assert db.session.execute(db.select(Hub).filter_by(slug="late")).unique().scalar_one().release.name == "good"
    for slug in ("early", "late"):
        client.delete(f"/api/v1/hubs/{slug}", headers=local_fleet)
    run_worker(timeout=60)


def test_a_release_whose_smoke_test_fails_never_becomes_usable(app, client, local_fleet, run_worker, create_user,
                                                               login):
    crash = {"jupyterhub": {"JupyterHub": {"authenticator_class": "no-such-authenticator"}}}
    client.post("/api/v1/releases", json={"name": "crash", "jupyterhub_version": installed_jupyterhub(),
                                          "config": crash}, headers=local_fleet)
    run_worker(timeout=120)
    body = release(client, local_fleet, "crash")
    assert body["state"] == "failed"
    assert body["error"].startswith("the smoke-test hub stopped while starting: JupyterHub is not running")
    assert "no-such-authenticator" in body["error"] and len(body["error"]) < 1000
    op = client.get(f"/api/v1/operations/{body['operation']}", headers=local_fleet).get_json()
    assert op["state"] == "failed" and op["error"] == body["error"]
    assert not smoke_processes(app)
    client.post("/api/v1/hubs", json={"slug": "late", "institution": "north", "cluster": "local"},
                headers=local_fleet)
    assert db.session.execute(db.select(Hub).filter_by(slug="late")).unique().scalar_one().release is None
    refused = client.post("/api/v1/rollouts", json={"release": "crash", "target": {"hubs": ["late"]}},
                          headers=local_fleet)
    assert refused.status_code == 422 and "release" in refused.get_json()["errors"]["json"]
    client.delete("/api/v1/hubs/late", headers=local_fleet)
    run_worker(timeout=60)
    login(client, create_user("operator"))
    page = client.get("/releases/crash").get_data(as_text=True)
    assert 'data-status="failed"' in page and "Preparing failed: the smoke-test hub stopped while starting" in page
    assert "smoke test: starting a throw-away hub" in page and "Retry preparing" in page  # its operation's log
    assert client.delete("/api/v1/releases/crash", headers=local_fleet).status_code == 204
    assert db.session.query(Operation).filter(Operation.release_id.is_not(None)).count() == 0


def test_a_build_pip_cannot_do_fails_the_release_with_pip_s_last_words(app, client, local_fleet, run_worker,
                                                                       tmp_path):
    # A version the index does not have, slipped past publishing (the index changed, say): the detached build fails.
    local = db.session.execute(db.select(Release.id)).first()
    assert local is None
    cluster = ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    cluster.settings = {**cluster.settings, "environments": str(tmp_path / "environments")}
    ghost = Release(name="ghost", jupyterhub_version="9.9.9", state="preparing")
    db.session.add(ghost)
    operations.enqueue(None, "release-prepare", "test", release=ghost)
    db.session.commit()
    run_worker(timeout=180)
    body = release(client, local_fleet, "ghost")
    assert body["state"] == "failed", body
    assert body["error"].startswith("could not install JupyterHub 9.9.9: ERROR: ")
    assert "No matching distribution found for jupyterhub==9.9.9" in body["error"]
    assert "from versions:" not in body["error"] and len(body["error"]) < 1000
    log = client.get(f"/api/v1/operations/{body['operation']}", headers=local_fleet).get_json()["log"]
    assert "building the JupyterHub 9.9.9 environment" in log
