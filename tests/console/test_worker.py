"""The reconciler with the test-double backends: failures, timeouts, leases, ordering, re-adoption."""
import threading
import time
from datetime import timedelta

import pytest

from console.extensions import db
from console.models import Hub, Operation, utcnow
from console.services import hubs as hub_service
from console.services import operations
from console.worker import Worker
from tests.helpers import wait_for


@pytest.fixture
def make_hub(create_institution, create_user):
    create_institution("north")
    operator = create_user("operator")

    def make(cluster, slug="north-lab"):
        op = hub_service.create_hub(operator, slug, "north", cluster.name)
        return op.hub, op, operator

    return make


def reload(row):
    db.session.expire_all()
    return db.session.get(type(row), row.id)


def test_failing_backend_fails_the_operation_and_the_hub(create_cluster, make_hub, run_worker):
    hub, op, _ = make_hub(create_cluster(backend="fake-failing"))
    run_worker()
    op, hub = reload(op), reload(hub)
    assert op.state == "failed" and "fails every deploy" in op.error
    assert hub.state == "failed"
    assert any("fails every deploy" in line.line for line in op.lines)


def test_hub_that_never_answers_times_out(app, create_cluster, make_hub, run_worker):
    app.config["HUB_START_TIMEOUT"] = 1
    hub, op, _ = make_hub(create_cluster(backend="fake-never-ready"))
    run_worker()
    op, hub = reload(op), reload(hub)
    assert op.state == "failed" and "did not become healthy within 1s" in op.error
    assert hub.state == "failed"


def test_expired_lease_is_reclaimed_and_finished(app, create_cluster, make_hub, run_worker):
    hub, op, _ = make_hub(create_cluster(backend="fake"))
    claimed = operations.claim_next("worker-that-dies", lease_seconds=30)
    assert claimed.id == op.id
    # A live lease blocks everyone else...
    assert run_worker() == 0
    # ...until it expires.
    claimed.lease_expires = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert run_worker() == 1
    op = reload(op)
    assert op.state == "succeeded" and op.attempts == 2 and reload(hub).state == "running"


def test_gives_up_after_max_attempts(app, create_cluster, make_hub, run_worker):
    _, op, _ = make_hub(create_cluster(backend="fake"))
    op.state, op.attempts, op.lease_expires = "running", app.config["MAX_ATTEMPTS"], utcnow() - timedelta(seconds=1)
    db.session.commit()
    run_worker()
    op = reload(op)
    assert op.state == "failed" and op.error == "too many attempts"


def test_operations_of_one_hub_run_in_order(create_cluster, make_hub, run_worker):
    hub, create_op, operator = make_hub(create_cluster(backend="fake"))
    delete_op = hub_service.delete_hub(operator, hub)
    first = operations.claim_next("w1", 30)
    assert first.id == create_op.id
    assert operations.claim_next("w2", 30) is None  # the delete waits for the create
    operations.finish(first)
    assert operations.claim_next("w2", 30).id == delete_op.id


def test_delete_requested_during_create_wins(create_cluster, make_hub, run_worker):
    hub, create_op, operator = make_hub(create_cluster(backend="fake"))
    hub_service.delete_hub(operator, hub)
    assert hub_service.delete_hub(operator, hub).kind == "delete"  # twice -> still one deletion
    assert db.session.query(Operation).filter_by(kind="delete").count() == 1
    run_worker()
    assert reload(hub).state == "deleted"
    assert "nothing to start" in " ".join(line.line for line in reload(create_op).lines)


def test_resync_requeues_hubs_whose_process_is_gone(app, create_cluster, make_hub, run_worker):
    hub, _, _ = make_hub(create_cluster(backend="fake"))
    run_worker()
    hub = reload(hub)
    hub.backend_state = {}  # what the fake backend reports when its hub is gone
    db.session.commit()
    with app.app_context():
        Worker(app).resync()
    assert [op.kind for op in db.session.query(Operation).filter_by(state="queued")] == ["reconcile"]
    run_worker()
    assert reload(hub).state == "running"


def test_concurrent_claims_never_share_an_operation(app, config, create_cluster, make_hub):
    if not config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("several workers run only on PostgreSQL (SKIP LOCKED); SQLite runs one worker")
    cluster = create_cluster(backend="fake")
    for i in range(20):
        make_hub(cluster, slug=f"hub-{i:02d}")
    claimed, barrier = [], threading.Barrier(4)

    def claim(name):
        with app.app_context():
            barrier.wait()
            while (op := operations.claim_next(name, 30)) is not None:
                claimed.append(op.id)
            db.session.remove()

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 20
    assert db.session.query(Hub).count() == 20


def test_a_failed_deletion_can_be_retried(create_cluster, make_hub, run_worker):
    cluster = create_cluster(backend="fake")
    hub, _, operator = make_hub(cluster)
    run_worker()
    first = hub_service.delete_hub(operator, hub)
    operations.fail(operations.claim_next("w", 30), "the cloud said no")
    second = hub_service.delete_hub(operator, reload(hub))
    assert second.id != first.id and second.state == "queued"
    run_worker()
    assert reload(hub).state == "deleted"


def test_heartbeat_keeps_a_slow_operation_leased(app, create_cluster, make_hub):
    """A deploy that outlasts the lease keeps it: the heartbeat renews it, so no other worker steals the work."""
    app.config["LEASE_SECONDS"] = 0.6
    hub, op, _ = make_hub(create_cluster(backend="fake-slow", delay=2))

    def work():
        with app.app_context():
            Worker(app, owner="slow").run_once()
            db.session.remove()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        wait_for(lambda: reload(op).state == "running", 5, what="the slow worker to claim the operation")
        time.sleep(1.5)  # well past the 0.6 s lease
        db.session.rollback()
        assert operations.claim_next("thief", 30) is None
    finally:
        worker.join(10)
    op = reload(op)
    assert op.state == "succeeded" and op.attempts == 1 and op.lease_owner is None


def test_one_worker_drives_200_slow_hubs_at_once(app, config, create_cluster, make_hub):
    """Each hub answers 5 s after its deploy; one worker that waited by sleeping would need 200 x 5 s.

    Requeueing frees the worker while a hub starts, so all 200 come up together: in seconds (about 10 here), and
    the bound below, a minute, is still a sixteenth of one by one.
    """
    if not config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("the single-worker case is SQLite's; PostgreSQL runs several workers (tests/perf/bench_rollout.py)")
    cluster = create_cluster(backend="fake-delayed", delay=5)
    for i in range(200):
        make_hub(cluster, slug=f"hub-{i:03d}")
    stop = threading.Event()
    worker = threading.Thread(target=Worker(app, owner="only").run, args=(stop,))
    started = time.monotonic()
    worker.start()
    try:
        wait_for(lambda: db.session.query(Hub).filter_by(state="running").count() == 200 or db.session.rollback(),
                 90, interval=0.2, what="200 hubs running")
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        worker.join(10)
    assert elapsed < 60, f"200 hubs took {elapsed:.1f}s"
    ops = db.session.query(Operation).all()
    assert {(op.state, op.outcome, op.attempts) for op in ops} == {("succeeded", "succeeded", 1)}
    # Each hub was asked at most a few times: the backend's hint said when it would be ready.
    assert max(len(op.lines) for op in ops) <= 6


def test_cluster_operations_have_their_own_lane(create_cluster, make_hub, create_user):
    """A Terraform run holds its worker for minutes: hub operations are claimed by another lane meanwhile."""
    from console.models import Cluster

    cluster = create_cluster(backend="fake")
    provisioned = Cluster(name="campus", backend="local", provider="local", state="planning", variables={})
    db.session.add(provisioned)
    plan = operations.enqueue(None, "cluster-plan", "ops@example.org", cluster=provisioned)
    db.session.commit()
    _, create, _ = make_hub(cluster)  # queued after the plan
    assert operations.claim_next("hub-lane", 30, lane="hubs").id == create.id
    assert operations.claim_next("hub-lane", 30, lane="hubs") is None
    assert operations.claim_next("cluster-lane", 30, lane="clusters").id == plan.id
    assert operations.claim_next("cluster-lane", 30, lane="clusters") is None
