"""Releases and rollouts over the fake backend: waves, gates, halt and rollback, blackouts, controls; a fleet as it
is (failed hubs, hubs being deleted), resume, retry and skip; bad input; one bad rollout among good ones."""
import logging
import threading
from datetime import timedelta

import pytest

from console.extensions import db
from console.models import AuditEvent, Cluster, Hub, Operation, Release, Rollout, RolloutHub, utcnow
from console.services import releases
from console.worker import Worker
from tests.conftest import csrf_from
from tests.helpers import wait_for


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


def test_pinned_hubs_do_not_follow_their_channel(app, client, fleet, run_worker):
    client.patch("/api/v1/hubs/hub-0", json={"pinned": True}, headers=fleet)
    client.patch("/api/v1/hubs/hub-1", json={"channel": "beta"}, headers=fleet)
    client.post("/api/v1/releases", json={"name": "new-2", "jupyterhub_version": "6.1.1"}, headers=fleet)
    body = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"channel": "stable"},
                                                 "gate_seconds": 0, "start": True}, headers=fleet).get_json()
    assert sorted(h["hub"] for h in body["hubs"]) == ["hub-2", "hub-3", "hub-4", "hub-5"]
    assert drive(app, run_worker, body["id"]).state == "done"
    assert release_of("hub-0") == release_of("hub-1") == "old-1"


# -- the fleet as it is -------------------------------------------------------------------------------------------

def items_of(client, headers, rollout_id):
    body = client.get(f"/api/v1/rollouts/{rollout_id}", headers=headers).get_json()
    return {h["hub"]: h for h in body["hubs"]}


def audited(action):
    return [e for e in db.session.execute(db.select(AuditEvent).filter_by(action=action)).scalars()]


def add_flaky_hub(client, headers, run_worker, create_cluster, slug="flaky-0"):
    """A hub of north on a cluster of its own, which a test can break (every deploy fails) and repair."""
    cluster = create_cluster("flaky", backend="fake")
    assert client.post("/api/v1/hubs", json={"slug": slug, "institution": "north", "cluster": "flaky"},
                       headers=headers).status_code == 202
    run_worker()
    return cluster


def set_backend(name, backend):
    cluster = db.session.execute(db.select(Cluster).filter_by(name=name)).scalar_one()
    cluster.backend = backend
    db.session.commit()


def test_failed_and_deleting_hubs_are_skipped_with_the_reason_and_the_rest_upgrade(
        app, client, fleet, run_worker, create_cluster):
    create_cluster("broken", backend="fake-failing")
    client.post("/api/v1/hubs", json={"slug": "broken-0", "institution": "north", "cluster": "broken"},
                headers=fleet)
    run_worker()
    assert db.session.execute(db.select(Hub.state).filter_by(slug="broken-0")).scalar() == "failed"
    assert client.delete("/api/v1/hubs/hub-5", headers=fleet).status_code == 202  # not removed yet
    client.post("/api/v1/releases", json={"name": "new-2", "jupyterhub_version": "6.1.1"}, headers=fleet)
    body = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"channel": "stable"},
                                                 "gate_seconds": 0, "max_unavailable": 2}, headers=fleet)
    assert body.status_code == 201
    planned = {h["hub"]: h for h in body.get_json()["hubs"]}
    assert planned["broken-0"]["state"] == "skipped"
    assert planned["broken-0"]["note"] == "The hub has failed: restart it, then retry it."
    assert (planned["hub-5"]["state"], planned["hub-5"]["note"]) == ("skipped", "The hub is being deleted.")
    assert [h for h, item in planned.items() if item["wave"] == 0] == ["hub-3"]  # the canary is a hub that can
    rollout_id = body.get_json()["id"]
    client.post(f"/api/v1/rollouts/{rollout_id}/start", headers=fleet)
    assert drive(app, run_worker, rollout_id).state == "done"
    assert {release_of(f"hub-{i}") for i in range(5)} == {"new-2"}
    assert release_of("broken-0") == "old-1"
    assert db.session.query(Operation).filter(Operation.kind == "upgrade",
                                              Operation.hub.has(Hub.slug.in_(["broken-0", "hub-5"]))).count() == 0
    assert audited("rollout.plan")[-1].detail["skipped"]["broken-0"].startswith("The hub has failed")


def test_a_hub_that_fails_before_its_turn_is_skipped_when_its_turn_comes(
        app, client, fleet, run_worker, create_cluster):
    add_flaky_hub(client, fleet, run_worker, create_cluster)
    client.post("/api/v1/releases", json={"name": "new-2", "jupyterhub_version": "6.1.1"}, headers=fleet)
    body = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"institution": "north"},
                                                 "gate_seconds": 0, "waves": 2, "max_unavailable": 5},
                       headers=fleet).get_json()
    assert items_of(client, fleet, body["id"])["flaky-0"] == {**items_of(client, fleet, body["id"])["flaky-0"],
                                                               "state": "pending", "wave": 1}
    set_backend("flaky", "fake-failing")  # its cluster breaks, and a restart fails it
    client.post("/api/v1/hubs/flaky-0/restart", headers=fleet)
    run_worker()
    client.post(f"/api/v1/rollouts/{body['id']}/start", headers=fleet)
    assert drive(app, run_worker, body["id"]).state == "done"
    items = items_of(client, fleet, body["id"])
    assert (items["flaky-0"]["state"], items["flaky-0"]["note"]) == (
        "skipped", "The hub has failed: restart it, then retry it.")
    assert {items[f"hub-{i}"]["state"] for i in range(4)} == {"upgraded"}
    assert [e.target for e in audited("rollout.skip")] == ["flaky-0"]


def halted_by_flaky_canary(app, client, headers, run_worker, create_cluster):
    """A rollout of new-2 over north whose canary's cluster broke: the canary failed and the rollout halted."""
    add_flaky_hub(client, headers, run_worker, create_cluster)
    client.patch("/api/v1/hubs/hub-3", json={"canary": False}, headers=headers)
    client.patch("/api/v1/hubs/flaky-0", json={"canary": True}, headers=headers)
    set_backend("flaky", "fake-failing")
    client.post("/api/v1/releases", json={"name": "new-2", "jupyterhub_version": "6.1.1"}, headers=headers)
    body = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"institution": "north"},
                                                 "gate_seconds": 0, "waves": 2, "max_unavailable": 2,
                                                 "start": True}, headers=headers).get_json()
    rollout = drive(app, run_worker, body["id"])
    assert rollout.state == "halted" and rollout.reason.startswith("flaky-0: upgrade to new-2 failed")
    assert items_of(client, headers, body["id"])["flaky-0"]["state"] == "failed"
    assert {release_of(f"hub-{i}") for i in range(4)} == {"old-1"}  # nothing after the canary was touched
    return body["id"]


def test_a_halted_rollout_resumed_after_the_fix_finishes(app, client, fleet, run_worker, create_cluster,
                                                         create_user, login):
    rollout_id = halted_by_flaky_canary(app, client, fleet, run_worker, create_cluster)
    login(client, create_user("operator"))
    page = client.get(f"/rollouts/{rollout_id}").get_data(as_text=True)
    assert "flaky-0: upgrade to new-2 failed" in page
    assert f'action="/rollouts/{rollout_id}/resume"' in page and f'action="/rollouts/{rollout_id}/start"' not in page
    assert f'action="/rollouts/{rollout_id}/hubs/flaky-0/retry"' in page
    assert f'action="/rollouts/{rollout_id}/hubs/hub-0/retry"' not in page  # a pending hub offers nothing
    # the fix: the cluster is repaired and the hub restarted
    set_backend("flaky", "fake")
    client.post("/api/v1/hubs/flaky-0/restart", headers=fleet)
    run_worker()
    resumed = client.post(f"/rollouts/{rollout_id}/resume", data={"csrf_token": csrf_from(page)})
    assert resumed.status_code == 302
    assert drive(app, run_worker, rollout_id).state == "done"
    assert {release_of(s) for s in ("flaky-0", "hub-0", "hub-1", "hub-2", "hub-3")} == {"new-2"}
    assert audited("rollout.resume")[0].detail["retried"] == ["flaky-0"]
    done = client.get(f"/rollouts/{rollout_id}").get_data(as_text=True)
    assert "/resume" not in done and "/retry" not in done and "/skip" not in done


def test_retry_and_skip_of_a_hub(app, client, fleet, run_worker, create_cluster, create_user, login):
    rollout_id = halted_by_flaky_canary(app, client, fleet, run_worker, create_cluster)
    base = f"/api/v1/rollouts/{rollout_id}/hubs"
    refused = client.post(f"{base}/hub-0/retry", headers=fleet)
    assert refused.status_code == 409 and "hub-0: A pending hub of a rollout cannot be retried" in         refused.get_json()["message"]
    assert client.post(f"{base}/nowhere/skip", headers=fleet).status_code == 404
    assert client.post(f"{base}/hub-4/skip", headers=fleet).status_code == 404  # south: not in this rollout
    skipped = client.post(f"{base}/flaky-0/skip", headers=fleet)
    assert skipped.status_code == 200 and skipped.get_json()["state"] == "skipped"
    operator = create_user("operator")
    login(client, operator)
    token = csrf_from(client.get(f"/rollouts/{rollout_id}").get_data(as_text=True))
    assert client.post(f"/rollouts/{rollout_id}/hubs/flaky-0/retry", data={"csrf_token": token}).status_code == 302
    assert items_of(client, fleet, rollout_id)["flaky-0"]["state"] == "pending"
    assert client.post(f"/rollouts/{rollout_id}/hubs/flaky-0/skip", data={}).status_code == 400  # no CSRF token
    assert client.post(f"/rollouts/{rollout_id}/hubs/flaky-0/skip", data={"csrf_token": token}).status_code == 302
    assert items_of(client, fleet, rollout_id)["flaky-0"]["note"].startswith(f"Skipped by {operator.email}")
    assert client.post(f"/api/v1/rollouts/{rollout_id}/resume", headers=fleet).get_json()["state"] == "running"
    assert drive(app, run_worker, rollout_id).state == "done"
    assert release_of("flaky-0") == "old-1" and {release_of(f"hub-{i}") for i in range(4)} == {"new-2"}
    over = client.post(f"{base}/flaky-0/retry", headers=fleet)
    assert over.status_code == 409 and "plan a new rollout" in over.get_json()["message"]
    assert [(e.target, e.actor) for e in audited("rollout.retry")] == [("flaky-0", operator.email)]
    assert [e.target for e in audited("rollout.skip")] == ["flaky-0", "flaky-0"]


BAD = [
    ({"target": "stable"}, "target"),
    ({"target": {"hubs": "hub-0"}}, "target"),
    ({"target": {"hubs": []}}, "target"),
    ({"target": {"hubs": [2 ** 70]}}, "target"),
    ({"target": {"hubs": ["hub-0", "nowhere"]}}, "target"),
    ({"target": {"channel": "gold"}}, "target"),
    ({"target": {"channel": 10 ** 400}}, "target"),
    ({"target": {"institution": "atlantis"}}, "target"),
    ({"target": {"institution": ["north"]}}, "target"),
    ({"target": {"channel": "stable", "institution": "north"}}, "target"),
    ({"target": {}}, "target"),
    ({"target": None}, "target"),
    ({"waves": 0}, "waves"), ({"waves": 21}, "waves"), ({"waves": 10 ** 400}, "waves"), ({"waves": 2.5}, "waves"),
    ({"waves": "4"}, "waves"), ({"waves": True}, "waves"),
    ({"max_unavailable": 0}, "max_unavailable"), ({"max_unavailable": 1001}, "max_unavailable"),
    ({"gate_seconds": -1}, "gate_seconds"), ({"gate_seconds": 86401}, "gate_seconds"),
    ({"gate_seconds": 10 ** 400}, "gate_seconds"),
    ({"release": "nope"}, "release"),
]


def test_every_bad_target_or_number_is_a_field_error_and_changes_nothing(client, fleet, create_user, login):
    client.post("/api/v1/releases", json={"name": "new-2", "jupyterhub_version": "6.1.1"}, headers=fleet)
    for change, field in BAD:
        payload = {"release": "new-2", "target": {"channel": "stable"}, **change}
        answer = client.post("/api/v1/rollouts", json=payload, headers=fleet)
        assert answer.status_code == 422, (change, answer.get_data(as_text=True))
        named = set(answer.get_json()["errors"]["json"])  # the field, or the part of it that is wrong
        assert len(named) == 1 and (named == {field} or next(iter(named)).startswith(field + ".")), (change, named)
    # the bad value is named, cut short
    answer = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"hubs": ["hub-0", "nowhere"]}},
                         headers=fleet)
    assert answer.get_json()["errors"]["json"]["target"] == ["There is no hub named 'nowhere'."]
    answer = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"channel": 10 ** 400}},
                         headers=fleet)
    assert answer.get_json()["errors"]["json"]["target.channel"] == ["Use a number that fits in 64 bits."]
    assert db.session.query(Rollout).count() == 0 and db.session.query(RolloutHub).count() == 0
    assert client.get(f"/api/v1/rollouts/{2 ** 70}", headers=fleet).status_code == 404
    assert client.post(f"/api/v1/rollouts/{2 ** 70}/start", headers=fleet).status_code == 404
    login(client, create_user("operator"))
    token = csrf_from(client.get("/releases").get_data(as_text=True))
    form = {"csrf_token": token, "release": "new-2", "target_kind": "hubs", "target_value": "hub-0 ghost",
            "waves": "9" * 500, "gate_seconds": "-5", "max_unavailable": "x"}
    page = client.post("/rollouts", data=form)
    assert page.status_code == 422
    text = page.get_data(as_text=True)
    for field in ("target", "waves", "gate_seconds", "max_unavailable"):
        assert f'id="{field}-error"' in text
    assert "There is no hub named &#39;ghost&#39;." in text
    assert client.get(f"/rollouts/{2 ** 70}").status_code == 404
    assert db.session.query(Rollout).count() == 0


def test_a_rollout_that_breaks_halts_alone_and_the_worker_serves_the_others(app, client, fleet, caplog):
    client.post("/api/v1/releases", json={"name": "new-2", "jupyterhub_version": "6.1.1"}, headers=fleet)
    good = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"hubs": ["hub-1", "hub-2"]},
                                                 "gate_seconds": 0, "start": True}, headers=fleet).get_json()["id"]
    slow = client.post("/api/v1/rollouts", json={"release": "new-2", "target": {"hubs": ["hub-4"]},
                                                 "gate_seconds": 0, "start": True}, headers=fleet).get_json()["id"]
    # Rows no form could make: a kind this driver does not know, and a gate longer than any clock can add up
    # (rows written before the bounds were checked).
    bad = Rollout(kind="bogus", release=db.session.execute(db.select(Release).filter_by(name="new-2")).scalar_one(),
                  target={"hubs": ["hub-0"]}, state="running", created_by="someone", gate_seconds=0)
    releases.plan(bad, [db.session.execute(db.select(Hub).filter_by(slug="hub-0")).unique().scalar_one()])
    db.session.add(bad)
    huge = 2 ** 62 if db.engine.dialect.name == "sqlite" else 2 ** 31 - 1
    db.session.get(Rollout, slow).gate_seconds = huge
    db.session.commit()
    stop = threading.Event()
    worker = threading.Thread(target=Worker(app, owner="isolation").run, args=(stop,), daemon=True)
    caplog.set_level(logging.ERROR, logger="console.services.releases")
    worker.start()
    try:
        def state(rollout_id):
            db.session.expire_all()
            return db.session.get(Rollout, rollout_id).state

        wait_for(lambda: state(good) == "done", timeout=20, what="the good rollout to finish")
        wait_for(lambda: items_of(client, fleet, slow)["hub-4"]["state"] == "upgraded", timeout=10,
                 what="the long-gated hub to upgrade")
        assert worker.is_alive()
        assert state(bad.id) == "halted"
        assert db.session.get(Rollout, bad.id).reason.startswith("Halted after an internal error (KeyError)")
        assert state(slow) == "running"  # waiting in its gate, not broken
        assert any(f"rollout {bad.id}: step failed" in r.getMessage() for r in caplog.records)
        assert release_of("hub-1") == release_of("hub-2") == release_of("hub-4") == "new-2"
        assert release_of("hub-0") == "old-1"
    finally:
        stop.set()
        worker.join(10)
