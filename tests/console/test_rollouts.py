"""Releases and rollouts over the fake backend: waves, gates, halt and rollback, blackouts, controls."""
from datetime import timedelta

import pytest

from console.extensions import db
from console.models import AuditEvent, Hub, Operation, Rollout, utcnow
from console.services import releases


@pytest.fixture
def fleet(create_institution, create_cluster, create_user, api_headers, client, run_worker):
    """Six running hubs of two institutions on release old-1; returns operator headers."""
    create_institution("north")
    create_institution("south")
    create_cluster("fast", backend="fake")
    operator = api_headers(create_user("operator"))
    assert client.post("/api/v1/releases", json={"name": "old-1", "jupyterhub_version": "5.4.6"},
                       headers=operator).status_code == 201
    for i in range(6):
        client.post("/api/v1/hubs", json={"slug": f"hub-{i}", "institution": "north" if i < 4 else "south",
                                          "cluster": "fast"}, headers=operator)
    run_worker()
    marked = client.patch("/api/v1/hubs/hub-3", json={"canary": True}, headers=operator)
    assert marked.status_code == 200 and marked.get_json()["canary"] is True
    return operator


def drive(app, run_worker, rollout_id, passes=40):
    for _ in range(passes):
        with app.app_context():
            releases.advance()
            db.session.remove()
        run_worker()
        rollout = db.session.get(Rollout, rollout_id)
        db.session.refresh(rollout)
        if rollout.state not in ("running",):
            return rollout
    return rollout


def release_of(slug):
    hub = db.session.execute(db.select(Hub).filter_by(slug=slug)).unique().scalar_one()
    db.session.refresh(hub)
    return hub.release.name if hub.release else None


def test_plan_is_shown_then_waves_upgrade_everything(app, client, fleet, run_worker):
    client.post("/api/v1/releases", json={"name": "new-2", "jupyterhub_version": "6.1.1"}, headers=fleet)
    planned = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"channel": "stable"},
                                                    "waves": 3, "max_unavailable": 2, "gate_seconds": 0},
                          headers=fleet)
    assert planned.status_code == 201
    body = planned.get_json()
    assert body["state"] == "planned"
    waves = {}
    for item in body["hubs"]:
        waves.setdefault(item["wave"], []).append(item["hub"])
    assert waves[0] == ["hub-3"] and sorted(len(w) for w in waves.values()) == [1, 2, 3]  # canary first
    assert db.session.query(Operation).filter_by(kind="upgrade").count() == 0  # nothing before start
    assert client.post(f"/api/v1/rollouts/{body['id']}/start", headers=fleet).get_json()["state"] == "running"
    rollout = drive(app, run_worker, body["id"])
    assert rollout.state == "done"
    assert {release_of(f"hub-{i}") for i in range(6)} == {"new-2"}
    decisions = [e.action for e in db.session.execute(db.select(AuditEvent)).scalars()]
    assert decisions.count("rollout.upgrade") == 6 and decisions.count("rollout.wave") == 2
    assert "rollout.done" in decisions
    page = client.get(f"/api/v1/rollouts/{body['id']}", headers=fleet).get_json()
    assert {h["state"] for h in page["hubs"]} == {"upgraded"}


def test_failed_canary_halts_and_rolls_back_and_nothing_else_is_touched(app, client, fleet, run_worker):
    client.post("/api/v1/releases", json={"name": "broken-3", "jupyterhub_version": "6.1.1",
                                          "config": {"jupyterhub": {"FakeBackend": {"fail_deploy": True}}}},
                headers=fleet)
    body = client.post("/api/v1/rollouts", json={"release": "broken-3", "target": {"channel": "stable"},
                                                 "gate_seconds": 0, "start": True}, headers=fleet).get_json()
    rollout = drive(app, run_worker, body["id"])
    assert rollout.state == "halted" and rollout.reason.startswith("hub-3: upgrade to broken-3 failed")
    assert release_of("hub-3") == "old-1"
    canary = db.session.execute(db.select(Hub).filter_by(slug="hub-3")).unique().scalar_one()
    assert (canary.state, canary.health) == ("running", "healthy")
    upgrades = db.session.execute(db.select(Operation).filter_by(kind="upgrade")).unique().scalars().all()
    assert [op.hub.slug for op in upgrades] == ["hub-3"]  # the second wave was never touched
    log = " ".join(line.line for line in upgrades[0].lines)
    assert "backed up as before-broken-3" in log and "restored before-broken-3" in log
    assert "rollout.halt" in [e.action for e in db.session.execute(db.select(AuditEvent)).scalars()]


def test_hubs_in_a_blackout_are_deferred_until_it_ends(app, client, fleet, run_worker):
    now = utcnow()
    window = [{"start": (now - timedelta(hours=1)).isoformat(), "end": (now + timedelta(days=1)).isoformat(),
               "reason": "exams"}]
    assert client.put("/api/v1/institutions/south/blackouts", json=window, headers=fleet).status_code == 200
    client.post("/api/v1/releases", json={"name": "new-2", "jupyterhub_version": "6.1.1"}, headers=fleet)
    body = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"channel": "stable"},
                                                 "gate_seconds": 0, "max_unavailable": 3, "start": True},
                       headers=fleet).get_json()
    rollout = drive(app, run_worker, body["id"], passes=15)
    states = {h["hub"]: h["state"] for h in client.get(f"/api/v1/rollouts/{body['id']}",
                                                       headers=fleet).get_json()["hubs"]}
    assert rollout.state == "running"
    assert states["hub-4"] == states["hub-5"] == "deferred"
    assert release_of("hub-4") == "old-1" and release_of("hub-0") == "new-2"
    assert db.session.query(Operation).filter(Operation.kind == "upgrade",
                                              Operation.hub.has(Hub.slug.in_(["hub-4", "hub-5"]))).count() == 0
    client.put("/api/v1/institutions/south/blackouts", json=[], headers=fleet)  # the exams are over
    assert drive(app, run_worker, body["id"]).state == "done"
    assert release_of("hub-5") == "new-2"


def test_bad_rollouts_and_controls(client, fleet):
    client.post("/api/v1/releases", json={"name": "new-2", "jupyterhub_version": "6.1.1"}, headers=fleet)
    bad = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"planet": "mars"}, "waves": 0},
                      headers=fleet)
    assert bad.status_code == 422 and set(bad.get_json()["errors"]["json"]) == {"target", "waves"}
    assert client.post("/api/v1/releases", json={"name": "Bad Name", "jupyterhub_version": "six"},
                       headers=fleet).status_code == 422
    body = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"hubs": ["hub-0", "hub-1"]}},
                       headers=fleet).get_json()
    assert client.post(f"/api/v1/rollouts/{body['id']}/pause", headers=fleet).status_code == 409
    assert client.post(f"/api/v1/rollouts/{body['id']}/start", headers=fleet).get_json()["state"] == "running"
    assert client.post(f"/api/v1/rollouts/{body['id']}/pause", headers=fleet).get_json()["state"] == "paused"
    assert client.post(f"/api/v1/rollouts/{body['id']}/abort", headers=fleet).get_json()["state"] == "aborted"


def test_rollout_pages(client, fleet, create_user, login, app, run_worker):
    login(client, create_user("operator"))
    from tests.conftest import csrf_from

    token = csrf_from(client.get("/releases").get_data(as_text=True))
    assert client.post("/releases", data={"csrf_token": token, "name": "new-2", "jupyterhub_version": "6.1.1",
                                          "channel": "stable"}).status_code == 302
    planned = client.post("/rollouts", data={"csrf_token": token, "release": "new-2", "target_kind": "institution",
                                             "target_value": "north", "waves": "2", "gate_seconds": "0",
                                             "max_unavailable": "1"})
    assert planned.status_code == 302
    page = client.get(planned.headers["Location"]).get_data(as_text=True)
    assert "Wave 1 (canary)" in page and "Wave 2" in page and 'id="rollout-hub-hub-0"' in page
    assert "hub-4" not in page  # south is not targeted


def test_pinned_hubs_do_not_follow_their_channel(app, client, fleet, run_worker, create_user, api_headers):
    client.patch("/api/v1/hubs/hub-0", json={"pinned": True}, headers=fleet)
    client.patch("/api/v1/hubs/hub-1", json={"channel": "beta"}, headers=fleet)
    admin = api_headers(create_user("institution_admin", institution=db.session.execute(
        db.select(Hub).filter_by(slug="hub-2")).unique().scalar_one().institution))
    assert client.patch("/api/v1/hubs/hub-2", json={"canary": True}, headers=admin).status_code == 403
    client.post("/api/v1/releases", json={"name": "new-2", "jupyterhub_version": "6.1.1"}, headers=fleet)
    body = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"channel": "stable"},
                                                 "gate_seconds": 0, "start": True}, headers=fleet).get_json()
    assert sorted(h["hub"] for h in body["hubs"]) == ["hub-2", "hub-3", "hub-4", "hub-5"]
    assert drive(app, run_worker, body["id"]).state == "done"
    assert release_of("hub-0") == release_of("hub-1") == "old-1"
