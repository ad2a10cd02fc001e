"""One institution cannot crowd out the others: a bound on the restarts and checks it may queue, a worker that
serves the institution with the least in flight first, and approvals that do nothing when repeated."""
import threading

import pytest

from console.extensions import db
from console.models import AuditEvent, Cluster, Operation
from console.services import operations
from tests.conftest import csrf_from

LIMIT = 5


@pytest.fixture
def config(config):
    return {**config, "MAX_PENDING_OPERATIONS": LIMIT}


@pytest.fixture
def fleet(create_institution, create_cluster, create_user, api_headers, client, run_worker):
    """Institutions north (6 hubs) and south (1 hub), all running on the fake backend, and an admin of each."""
    north, south = create_institution("north"), create_institution("south")
    create_cluster("fast", backend="fake")
    operator = api_headers(create_user("operator"))
    for slug, institution in [(f"north-{i}", "north") for i in range(6)] + [("south-0", "south")]:
        assert client.post("/api/v1/hubs", json={"slug": slug, "institution": institution, "cluster": "fast"},
                           headers=operator).status_code == 202
    run_worker()
    north_admin, south_admin = create_user("institution_admin", institution=north), \
        create_user("institution_admin", institution=south)
    return {"north": api_headers(north_admin), "south": api_headers(south_admin), "north_admin": north_admin}


def test_an_institution_gets_429_beyond_its_share_and_the_others_do_not(client, fleet, login):
    north = fleet["north"]
    for i in range(LIMIT):
        path = f"/api/v1/hubs/north-{i}/restart" if i % 2 else f"/api/v1/hubs/north-{i}/check"
        assert client.post(path, headers=north).status_code == 202
    audits = db.session.query(AuditEvent).count()
    refused = client.post("/api/v1/hubs/north-5/restart", headers=north)
    assert refused.status_code == 429
    assert refused.get_json()["message"] == ("North has 5 restarts and checks waiting already, the most one "
                                             "institution may queue: try again when some have finished.")
    assert client.post("/api/v1/hubs/north-5/check", headers=north).status_code == 429
    assert db.session.query(AuditEvent).count() == audits  # nothing queued, nothing recorded
    assert db.session.query(Operation).filter(Operation.state == "queued").count() == LIMIT
    # Another institution is not affected.
    assert client.post("/api/v1/hubs/south-0/restart", headers=fleet["south"]).status_code == 202
    # The page says it beside the button, in a flash message.
    login(client, fleet["north_admin"])
    token = csrf_from(client.get("/hubs/north-5").get_data(as_text=True))
    page = client.post("/hubs/north-5/restart", data={"csrf_token": token}, follow_redirects=True)
    assert page.status_code == 200 and page.request.path == "/hubs/north-5"
    assert "North has 5 restarts and checks waiting already" in page.get_data(as_text=True)


def test_the_worker_serves_the_institution_with_less_in_flight_first(client, fleet, app):
    """North queues 5 restarts, then south one.  Restarts wait for the hub between steps (requeued), so north soon
    has work in flight; south's restart is claimed second, not sixth."""
    for i in range(LIMIT):
        assert client.post(f"/api/v1/hubs/north-{i}/restart", headers=fleet["north"]).status_code == 202
    south = client.post("/api/v1/hubs/south-0/restart", headers=fleet["south"]).get_json()["operation"]
    claimed = []
    for _ in range(LIMIT + 1):
        op = operations.claim_next("fair-test", 30)
        claimed.append(op.hub.slug)
        operations.requeue(op, 60, "waiting for the hub")  # in flight, as a restart waiting for its hub is
    assert claimed[:2] == ["north-0", "south-0"], claimed
    assert sorted(claimed) == sorted([f"north-{i}" for i in range(LIMIT)] + ["south-0"])
    assert db.session.get(Operation, south).state == "waiting"


def test_the_fair_order_holds_with_a_long_queue(app, fleet, client):
    """2,000 restarts of north's hubs queued before one of south's: south's is still claimed second, and each claim
    takes the oldest operation of a hub with nothing earlier pending.  (A claim's time with this queue:
    ``python -m tests.perf.bench_limits``.)"""
    hubs = {op.hub.slug: op.hub for op in db.session.query(Operation).all()}
    north = [hubs[f"north-{i}"] for i in range(6)]
    for n in range(2000):
        operations.enqueue(north[n % len(north)], "restart", "load-test")
    operations.enqueue(hubs["south-0"], "restart", "load-test")
    db.session.commit()
    claimed = []
    for _ in range(5):
        op = operations.claim_next("fair-test", 30)
        claimed.append((op.hub.slug, op.id))
        operations.requeue(op, 60)
    first = {slug: db.session.query(db.func.min(Operation.id)).filter_by(hub_id=hubs[slug].id, kind="restart").scalar()
             for slug in ("north-0", "north-1", "north-2", "north-3", "south-0")}
    assert claimed == [(slug, first[slug]) for slug in ("north-0", "south-0", "north-1", "north-2", "north-3")]


# -- approvals ----------------------------------------------------------------------------------------------------

@pytest.fixture
def planned(client, create_user, api_headers, tmp_path, run_worker):
    operator = api_headers(create_user("operator"))
    variables = {"name": "campus", "data_dir": str(tmp_path / "campus"), "port_first": 24100, "port_last": 24199}
    assert client.post("/api/v1/clusters", json={"provider": "local", "variables": variables},
                       headers=operator).status_code == 202
    run_worker()
    assert client.get("/api/v1/clusters/campus", headers=operator).get_json()["state"] == "planned"
    return operator


def test_approving_a_plan_twice_is_a_no_op(client, planned, run_worker):
    first = client.post("/api/v1/clusters/campus/apply", headers=planned)
    again = client.post("/api/v1/clusters/campus/apply", headers=planned)
    assert first.status_code == again.status_code == 202
    assert again.get_json()["operation"] == first.get_json()["operation"]
    assert db.session.query(Operation).filter_by(kind="cluster-apply").count() == 1
    assert db.session.query(AuditEvent).filter_by(action="cluster.approve").count() == 1
    run_worker()
    cluster = client.get("/api/v1/clusters/campus", headers=planned).get_json()
    assert cluster["state"] == "ready"
    # Once applied, the plan is used up: approving again is refused and leaves the cluster ready.
    late = client.post("/api/v1/clusters/campus/apply", headers=planned)
    assert late.status_code == 409
    run_worker()
    assert client.get("/api/v1/clusters/campus", headers=planned).get_json()["state"] == "ready"


def test_approvals_at_the_same_time_queue_one_apply(app, client, planned, run_worker):
    """Eight approvals at once (a double click, two tabs, a retrying client): one apply, and the cluster ends
    ready, not failed."""
    barrier = threading.Barrier(8)
    answers = []

    def approve():
        with app.test_client() as own:
            barrier.wait()
            answers.append(own.post("/api/v1/clusters/campus/apply", headers=planned))

    threads = [threading.Thread(target=approve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [a.status_code for a in answers] == [202] * 8
    assert len({a.get_json()["operation"] for a in answers}) == 1
    db.session.expire_all()
    assert db.session.query(Operation).filter_by(kind="cluster-apply").count() == 1
    run_worker()
    db.session.expire_all()
    assert db.session.execute(db.select(Cluster.state).filter_by(name="campus")).scalar_one() == "ready"
