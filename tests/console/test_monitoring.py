"""Fleet monitoring in the console: sweeps into samples and health, alerts to webhooks, /metrics, retention.

The hubs here are loopback servers answering like JupyterHub (tests/fakehubs.py); tests/e2e covers real hubs.
"""
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from console.extensions import db
from console.models import Alert, Hub, HubSample, WebhookTarget, utcnow
from console.services import monitoring
from console.monitor import Monitor
from tests.fakehubs import FakeHubs
from tests.helpers import WebhookReceiver


@pytest.fixture
def fleet(app, create_institution, create_cluster, create_user, client, api_headers, run_worker):
    """Three running hubs whose URLs point at fake JupyterHubs; yields (hubs server, operator headers)."""
    app.config.update(PROBE_TIMEOUT=0.5, ALERT_DOWN_SECONDS=0, ALERT_DEGRADED_SECONDS=3600)
    create_institution("north")
    create_cluster("fast", backend="fake", reachable=True)
    operator = api_headers(create_user("operator"))
    with FakeHubs(3) as hubs:
        for i in range(3):
            client.post("/api/v1/hubs", json={"slug": f"hub-{i}", "institution": "north", "cluster": "fast"},
                        headers=operator)
        run_worker()
        for i, url in enumerate(hubs.urls):
            db.session.execute(db.update(Hub).where(Hub.slug == f"hub-{i}").values(url=url))
        db.session.commit()
        yield hubs, operator


def observe(app, times=1):
    with app.app_context():
        for _ in range(times):
            Monitor(app).tick()
        db.session.remove()
    db.session.expire_all()


def hub(slug):
    return db.session.execute(db.select(Hub).filter_by(slug=slug)).unique().scalar_one()


def test_a_sweep_records_samples_and_usage(app, fleet):
    before = db.session.query(HubSample).count()  # one each from the worker, when the hub first answered
    observe(app)
    assert db.session.query(HubSample).count() == before + 3
    first = hub("hub-1")
    assert (first.health, first.running_servers, first.active_users, first.user_count) == ("healthy", 1, 1, 21)
    assert first.jupyterhub_version == "5.3.0" and first.probe_seconds is not None


def test_down_hub_alerts_once_then_recovers_once(app, fleet):
    hubs, _ = fleet
    with WebhookReceiver() as receiver:
        app.config["OUTBOUND_ALLOW"] = [receiver.address]
        db.session.add(WebhookTarget(url=receiver.url, created_by="test"))
        db.session.commit()
        observe(app)
        hubs.set_mode(hubs.ports[0], "refused")
        observe(app, 2)
        assert hub("hub-0").health == "degraded" and receiver.received == []
        observe(app, 3)  # down after three failures; stays down: still one alert
        down = hub("hub-0")
        assert (down.health, down.state) == ("down", "degraded")
        assert [e["alert"]["hub"] for e in receiver.events("alert")] == ["hub-0"]
        alert = receiver.events("alert")[0]["alert"]
        assert alert["kind"] == "down" and alert["institution"] == "north" and alert["resolved_at"] is None
        assert hub("hub-1").health == "healthy"
        hubs.set_mode(hubs.ports[0], "ok")
        observe(app, 2)
        assert hub("hub-0").health == "healthy" and hub("hub-0").state == "running"
        assert len(receiver.events("alert")) == 1 and len(receiver.events("recovery")) == 1
        assert receiver.events("recovery")[0]["alert"]["resolved_at"] is not None
    [stored] = db.session.execute(db.select(Alert)).unique().scalars().all()
    assert stored.notified_at and stored.recovery_notified_at


def test_an_undeliverable_alert_is_retried(app, fleet):
    hubs, _ = fleet
    app.config["OUTBOUND_ALLOW"] = ["127.0.0.1:9"]
    db.session.add(WebhookTarget(url="http://127.0.0.1:9/nothing-listens", created_by="test"))
    db.session.commit()
    hubs.set_mode(hubs.ports[0], "refused")
    observe(app, 3)
    [alert] = db.session.execute(db.select(Alert)).unique().scalars().all()
    assert alert.notified_at is None and alert.last_error == monitoring.NOT_DELIVERED  # naming no webhook


def test_metrics_exposition(client, fleet, app):
    observe(app)
    response = client.get("/metrics", headers=fleet[1])
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    up = [s for s in families["hubfleet_hub_up"].samples]
    assert sorted(s.labels["hub"] for s in up) == ["hub-0", "hub-1", "hub-2"] and {s.value for s in up} == {1.0}
    assert "process_resident_memory_bytes" in {s.name for f in families.values() for s in f.samples}
    assert {s.labels["hub"]: s.value for s in families["hubfleet_hub_running_servers"].samples}["hub-2"] == 2
    assert client.get("/metrics").status_code == 401


def test_charts_and_retention(app, fleet, client, login, create_user):
    observe(app, 2)
    series = monitoring.series([hub("hub-2").id])
    [(_, chart)] = series.items()
    assert chart["running"][-1] == 2 and len(chart["active"]) == 24
    login(client, create_user("operator"))
    page = client.get("/").get_data(as_text=True)
    assert page.count('<svg class="spark"') == 6  # two charts per hub
    # two days later: raw samples are folded into hourly ones, and a month later they are gone
    old = utcnow() - timedelta(days=2)
    db.session.execute(db.update(HubSample).values(at=old))
    db.session.commit()
    monitoring.compact()
    assert {r for (r,) in db.session.execute(db.select(HubSample.resolution))} == {"hour"}
    assert db.session.query(HubSample).count() == 3
    monitoring.compact(now=utcnow() + timedelta(days=40))
    assert db.session.query(HubSample).count() == 0


def test_sparklines_read_each_buckets_newest_value_from_a_day_of_samples(app, create_institution, create_cluster):
    """series() reads only the newest sample with a value of each hub, hour and measure; what it gives must be what
    every sample of the day gives: a day at the sweep's 15 s for one hub, gaps, values missing from the newest
    sample of an hour (an older one of that hour then counts), samples before the day and after "now"."""
    import random

    north, fast = create_institution("north"), create_cluster("fast", backend="fake", reachable=True)
    busy, quiet, empty = (Hub(slug=slug, institution_id=north.id, cluster_id=fast.id, state="running", spec={},
                              backend_state={}) for slug in ("busy", "quiet", "empty"))
    db.session.add_all([busy, quiet, empty])
    db.session.commit()
    now = utcnow()
    rows, rng = [], random.Random(7)
    for i in range(1, 5760, 3):  # every 45 s over a day, and beyond its start
        at = now - timedelta(seconds=15 * i)
        if 7 * 3600 < 15 * i < 9 * 3600:
            continue  # two hours without a sample
        rows.append(dict(hub_id=busy.id, at=at, resolution="raw", up=1.0, duration=0.01,
                         active_users=None if rng.random() < 0.3 else rng.randint(0, 40),
                         running_servers=None if rng.random() < 0.3 else rng.randint(0, 9)))
    rows += [dict(hub_id=busy.id, at=now - timedelta(hours=25), active_users=99, running_servers=99),
             dict(hub_id=busy.id, at=now + timedelta(seconds=5), active_users=3, running_servers=None),
             dict(hub_id=quiet.id, at=now - timedelta(minutes=90), active_users=1, running_servers=0)]
    for row in rows[-3:]:
        row.update(resolution="raw", up=1.0, duration=0.01)
    db.session.execute(db.insert(HubSample), rows)
    db.session.commit()

    got = monitoring.series([busy.id, quiet.id, empty.id])
    since = now - timedelta(hours=24)  # series() takes its own "now" a moment later: no sample falls in between
    expected = {}
    for row in sorted(rows, key=lambda r: r["at"]):  # every sample, oldest first, the way series() once read them
        if row["at"] < since:
            continue
        index = min(23, int((row["at"] - since) // timedelta(hours=1)))
        per = expected.setdefault(row["hub_id"], {"active": [None] * 24, "running": [None] * 24})
        for key, column in (("active", "active_users"), ("running", "running_servers")):
            if row[column] is not None:
                per[key][index] = row[column]
    assert got == expected
    assert set(got) == {busy.id, quiet.id}  # a hub without samples has no sparkline
    assert got[busy.id]["active"][-1] == 3  # the sample stamped after "now" is the last hour's newest
    assert got[busy.id]["active"][15] is None and got[busy.id]["running"][16] is None  # the two empty hours
    assert got[quiet.id]["running"][22] == 0  # a measured zero is a value, not a gap


def test_hub_charts_draw_each_buckets_newest_sample_of_a_day(app, create_institution, create_cluster):
    """hub_charts() reads one sample per 5-minute bucket and chart; its points must be those every sample of the day
    gives: each bucket's newest sample with a value (response times only of probes that answered)."""
    import random

    north, fast = create_institution("north"), create_cluster("fast", backend="fake", reachable=True)
    hub = Hub(slug="busy", institution_id=north.id, cluster_id=fast.id, state="running", spec={}, backend_state={})
    db.session.add(hub)
    db.session.commit()
    now, rng = utcnow().replace(microsecond=0), random.Random(11)
    rows = []
    for i in range(1, 2900):  # every 30 s over a day, some at a bucket's very first second
        up = rng.random() > 0.1
        rows.append(dict(hub_id=hub.id, at=now - timedelta(seconds=30 * i), resolution="raw", up=1.0 if up else 0.0,
                         duration=rng.choice([0.0, 0.02, 0.05]) if up else 0.5,
                         running_servers=None if rng.random() < 0.2 else rng.randint(0, 9),
                         active_users=None if rng.random() < 0.2 else rng.randint(0, 40)))
    db.session.execute(db.insert(HubSample), rows)
    db.session.commit()

    charts = {chart.key: chart for chart in monitoring.hub_charts(hub, now=now)["charts"]}
    since, width = now - timedelta(days=1), timedelta(minutes=5)
    for key, column, scale in (("running", "running_servers", 1), ("active", "active_users", 1),
                               ("response", "duration", 1000)):
        newest = {}
        for row in sorted(rows, key=lambda r: r["at"]):
            if row["at"] >= since and row[column] is not None and (key != "response" or (row["up"] and row[column])):
                newest[(row["at"] - since) // width] = (row["at"], row[column] * scale)
        drawn = [(at, value) for at, value in charts[key].points if value is not None]
        assert drawn == [newest[bucket] for bucket in sorted(newest)], key
        assert len(drawn) > 250


def test_webhooks_page(client, fleet, create_user, login, create_institution):
    login(client, create_user("operator"))
    from tests.conftest import csrf_from

    token = csrf_from(client.get("/alerts").get_data(as_text=True))
    bad = client.post("/alerts/webhooks", data={"csrf_token": token, "url": "ftp://x"})
    assert bad.status_code == 422 and 'id="url-error"' in bad.get_data(as_text=True)
    assert client.post("/alerts/webhooks", data={"csrf_token": token, "url": "https://hooks.example.edu/x",
                                                 "institution": "north"}).status_code == 201
    page = client.get("/alerts").get_data(as_text=True)
    assert "https://hooks.example.edu/…" in page and "hooks.example.edu/x" not in page  # the path may be a token


def _active(name: str, ready: bool = True, last_activity: str = "2026-11-29T11:30:00Z") -> dict:
    return {"name": name, "servers": {"": {"ready": ready, "pending": None if ready else "spawn",
                                           "started": "2026-11-29T10:00:00Z", "last_activity": last_activity}}}


def test_the_sweep_keeps_a_snapshot_of_each_users_server(app, create_institution, create_cluster, create_user, client,
                                                         api_headers, run_worker):
    """Snapshots follow what the hubs' user lists say: new servers appear, a user no longer listed is stopped with
    their last activity kept, and a hub whose list cannot be read keeps its rows as they were."""
    from datetime import datetime
    from console.models import ServerSnapshot
    app.config.update(PROBE_TIMEOUT=5.0)  # generous: a loaded machine must not turn this into a test of timeouts
    create_institution("north")
    create_cluster("fast", backend="fake", reachable=True, probe_token="read-only")
    operator = api_headers(create_user("operator"))
    with FakeHubs(2) as hubs:
        for i in range(2):
            client.post("/api/v1/hubs", json={"slug": f"hub-{i}", "institution": "north", "cluster": "fast"},
                        headers=operator)
        run_worker()
        for i, url in enumerate(hubs.urls):
            db.session.execute(db.update(Hub).where(Hub.slug == f"hub-{i}").values(url=url))
        db.session.commit()
        hubs.page_limit = 1
        hubs.users[hubs.ports[0]] = [_active("ada"), _active("bob", ready=False)]
        hubs.users[hubs.ports[1]] = [_active("ada", last_activity="2026-11-29T08:00:00Z")]
        observe(app)

        def rows():
            return {(r.hub_id, r.username): (r.state, r.last_activity) for r in
                    db.session.execute(db.select(ServerSnapshot)).scalars()}

        first, second = hub("hub-0").id, hub("hub-1").id
        assert rows() == {(first, "ada"): ("running", datetime(2026, 11, 29, 11, 30)),
                          (first, "bob"): ("pending", datetime(2026, 11, 29, 11, 30)),
                          (second, "ada"): ("running", datetime(2026, 11, 29, 8))}
        assert all(h["authorization"] == "token read-only" for _, _, h in hubs.user_requests)
        hubs.users[hubs.ports[0]] = [_active("bob")]  # ada stopped her server
        hubs.set_mode(hubs.ports[1], "error")  # the second hub cannot be read: nothing is known of it
        observe(app)
        assert rows() == {(first, "ada"): ("stopped", datetime(2026, 11, 29, 11, 30)),
                          (first, "bob"): ("running", datetime(2026, 11, 29, 11, 30)),
                          (second, "ada"): ("running", datetime(2026, 11, 29, 8))}
        seen_at = db.session.execute(db.select(ServerSnapshot.seen_at).filter_by(hub_id=first, username="ada")
                                     ).scalar_one()
        assert seen_at > db.session.execute(db.select(ServerSnapshot.seen_at).filter_by(
            hub_id=second, username="ada")).scalar_one()
