"""Supervision on the test doubles: a hub whose processes died is down at once, restarted with backoff, and failed
with the reason when it keeps crashing.  tests/e2e/test_supervision_local.py does the same to real JupyterHubs."""
from datetime import timedelta

import pytest

from clusters.testing import FakeBackend
from console.extensions import db
from console.models import AuditEvent, Hub, HubSample, Operation, utcnow
from console.monitor import Monitor
from console.services import hubs as hub_service
from console.services import monitoring
from console.status import hub_status
from console.worker import Worker


@pytest.fixture
def hub(app, create_institution, create_cluster, create_user, run_worker):
    """A running, healthy hub on the ``fake-delayed`` double (ready half a second after each deploy)."""
    app.config.update(MAX_RESTARTS=2)
    create_institution("north")
    create_cluster("local-ish", backend="fake-delayed", delay=0.5)
    hub_service.create_hub(create_user("operator"), "north-lab", "north", "local-ish")
    db.session.commit()
    run_worker()
    row = reload()
    assert (row.state, row.health) == ("running", "healthy")
    return row


def reload() -> Hub:
    db.session.expire_all()
    return db.session.execute(db.select(Hub).filter_by(slug="north-lab")).unique().scalar_one()


def tick(app) -> Hub:
    with app.app_context():
        Monitor(app).tick()
        db.session.remove()
    return reload()


def restarts() -> list[Operation]:
    return list(db.session.execute(db.select(Operation).where(Operation.actor == monitoring.SUPERVISOR)
                                   .order_by(Operation.id)).unique().scalars())


def backoff_elapsed(hub: Hub) -> None:
    """Move the hub's last restart back past its backoff, instead of waiting for it."""
    db.session.execute(db.update(Hub).where(Hub.id == hub.id).values(
        restarted_at=utcnow() - timedelta(seconds=monitoring.restart_delay(hub.restart_count) + 1)))
    db.session.commit()


def test_restart_delays_back_off_and_are_capped():
    assert [monitoring.restart_delay(n) for n in range(8)] == [0, 5, 10, 20, 40, 80, 160, 300]
    assert monitoring.restart_delay(30) == 300


def test_a_hub_whose_processes_died_is_down_at_once_and_restarted(app, hub, run_worker):
    FakeBackend.kill("north-lab")
    row = tick(app)
    assert row.health == "down" and row.status_message == "its processes are not running"
    sample = db.session.execute(db.select(HubSample).where(HubSample.hub_id == row.id)
                                .order_by(HubSample.id.desc()).limit(1)).scalar_one()
    assert (sample.up, sample.alive) == (0.0, False)  # seen gone without a request, not as a failed probe
    [restart] = restarts()
    assert (restart.kind, restart.state, row.restart_count) == ("reconcile", "queued", 1)
    status = hub_status(row, restart, max_restarts=2)
    assert status.label == "Queued: reconcile" and "its processes are not running" in status.reason

    tick(app)  # the restart is queued: nothing more is queued meanwhile
    assert len(restarts()) == 1
    run_worker()
    row = tick(app)
    assert (row.state, row.health, row.restart_count) == ("running", "healthy", 1)

    FakeBackend.kill("north-lab")
    row = tick(app)
    assert len(restarts()) == 1 and row.health == "down"  # the second restart waits for its backoff (5 s)
    assert "restarted 1 of 2 time(s) so far" in hub_status(row, restarts()[-1], max_restarts=2).reason
    backoff_elapsed(row)
    assert tick(app).restart_count == 2 and len(restarts()) == 2


def test_a_hub_up_long_enough_after_a_restart_starts_its_backoff_afresh(app, hub, run_worker):
    FakeBackend.kill("north-lab")
    tick(app)
    run_worker()
    row = tick(app)
    assert row.restart_count == 1
    db.session.execute(db.update(Hub).where(Hub.id == row.id).values(
        restarted_at=utcnow() - monitoring.STABLE_AFTER_RESTART - timedelta(seconds=1)))
    db.session.commit()
    assert tick(app).restart_count == 0


def crash_once(app, worker: Worker, before_ready: bool) -> Hub:
    """Kill the hub, let the supervisor restart it, and kill it again right after that restart's deploy (before it
    answers) or once it answers."""
    FakeBackend.kill("north-lab")
    row = tick(app)
    if not restarts() or restarts()[-1].state not in ("queued", "running", "waiting"):
        backoff_elapsed(row)
        row = tick(app)
    with app.app_context():
        op = worker.run_once()  # the deploy; the double answers half a second later
        assert op is not None and op.state == "waiting"
        db.session.remove()
    if before_ready:
        FakeBackend.kill("north-lab")
    with app.app_context():
        while (op := db.session.get(Operation, op.id)).state not in ("succeeded", "failed"):
            db.session.remove()
            worker.run_once()
        db.session.remove()
    return reload()


@pytest.mark.parametrize("before_ready", [False, True], ids=["after-answering", "while-starting"])
def test_a_hub_that_keeps_crashing_is_failed_with_its_log_and_no_more_restarts(app, hub, before_ready):
    worker = Worker(app, owner="test-worker")
    for _ in range(2):  # MAX_RESTARTS
        row = crash_once(app, worker, before_ready)
        assert row.state == ("failed" if before_ready else "running")
    if not before_ready:
        FakeBackend.kill("north-lab")
    backoff_elapsed(row)
    row = tick(app)
    assert row.state == "failed" and row.restart_count == 2
    assert row.status_message.startswith("keeps crashing: restarted 2 times, down again; ")
    assert row.status_message.endswith("not deployed")  # what the backend says of it (a local hub: its log's end)
    status = hub_status(row, restarts()[-1], max_restarts=2)
    assert (status.label, status.reason) == ("Failed", row.status_message)

    queued = len(restarts())
    for _ in range(3):
        backoff_elapsed(row)
        row = tick(app)
    assert len(restarts()) == queued == 2 and row.state == "failed"
    assert db.session.execute(db.select(db.func.count()).where(AuditEvent.action == "hub.crashloop")).scalar() == 1
