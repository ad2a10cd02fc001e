"""Usage showback: sessions from what the hubs report (overlaps, month ends, restarts, servers seen twice, skipped
sweeps, gaps), prices and cost, and who may see which usage (the page, its CSV and JSON, the API).

The sweeps here feed ``record_sessions`` the results a probe returns (clusters/probe.py's own types, as a hub
answered); tests/e2e/test_usage_local.py takes the same path with a real hub and real servers.
"""
import csv
import io
from datetime import datetime, timedelta

import pytest

from clusters import lifecycle
from clusters.probe import ProbeResult, ServerSeen, ServerStop, parse_stop
from console.extensions import db
from console.models import AuditEvent, Cluster, Hub, ServerSession, UsageGap
from console.services import FieldErrors, usage
from tests.conftest import csrf_from

T0 = datetime(2026, 11, 10, 9, 0)
HOUR = timedelta(hours=1)


@pytest.fixture
def place(app, ctx, create_institution, create_cluster):
    """Institutions north (hubs north-a, north-b on cluster "east") and south (south-a on "west", a Kubernetes
    cluster: its hubs' servers request CPU and memory)."""
    app.config["PROBE_SECONDS"] = 60  # gaps: servers unlisted for over 3 minutes
    north, south = create_institution("north"), create_institution("south")
    east = create_cluster("east")
    west = Cluster(name="west", backend="kubernetes", state="ready", settings={})
    db.session.add(west)
    db.session.flush()
    hubs = {}
    for slug, institution, cluster in (("north-a", north, east), ("north-b", north, east), ("south-a", south, west)):
        hubs[slug] = Hub(slug=slug, institution_id=institution.id, cluster_id=cluster.id, spec={}, backend_state={},
                         state=lifecycle.RUNNING, created_at=datetime(2026, 10, 1))
        db.session.add(hubs[slug])
    db.session.commit()
    return {"north": north, "south": south, "east": east, "west": west, **hubs}


def sweep(hubs, at, listed, stops=None, complete=True):
    """One sweep at ``at``: {hub: [(username, started)]} listed as running; ``stops`` {hub: [ServerStop]}."""
    results = {}
    for hub in hubs:
        if hub.slug not in listed:
            results[hub.id] = ProbeResult(key=hub.id, up=False, duration=0.0)  # not answering: nothing listed
            continue
        results[hub.id] = ProbeResult(key=hub.id, up=True, duration=0.1, servers_complete=complete, servers=[
            ServerSeen(name, "running", started, at) for name, started in listed[hub.slug]],
            stops=(stops or {}).get(hub.slug, []))
    usage.record_sessions(hubs, results, at)
    db.session.commit()


def sessions(hub):
    return db.session.execute(db.select(ServerSession).filter_by(hub_id=hub.id).order_by(ServerSession.started,
                                                                                         ServerSession.username)
                              ).scalars().all()


def month(operator, key="2026-11", now=T0 + 24 * 30 * HOUR, **scope):
    start, end = usage.parse_month(key)
    return usage.report(operator, start, end, now=now, **scope)


def hub_row(found, slug):
    return next(h for inst in found["institutions"] for h in inst["hubs"] if h["slug"] == slug)


def test_sessions_follow_the_hubs_times_whatever_the_sweeps_miss(place, create_user):
    """Started and stopped where the hub says; a session seen by many sweeps counts once; a sweep skipped (or one
    that could not list) changes nothing; a user the hub no longer knows ends when last seen, inexact."""
    a = place["north-a"]
    hubs = [a]
    sweep(hubs, T0, {"north-a": [("ada", T0 - 10 * 60 * timedelta(seconds=1))]})
    sweep(hubs, T0 + timedelta(minutes=1), {"north-a": [("ada", T0 - timedelta(minutes=10)),
                                                        ("bob", T0 + timedelta(seconds=30))]})
    sweep(hubs, T0 + timedelta(minutes=2), {})  # the hub did not answer: nothing listed, nothing ends
    assert [s.ended for s in sessions(a)] == [None, None]
    # sweeps skipped for two hours; meanwhile ada's server stopped at 10:00 by the hub's clock, bob's user was deleted
    later = T0 + 2 * HOUR
    sweep(hubs, later, {"north-a": []}, stops={"north-a": [ServerStop("ada", stopped=T0 + HOUR), ServerStop("bob")]})
    ada, bob = sessions(a)
    assert (ada.started, ada.ended, ada.end_exact) == (T0 - timedelta(minutes=10), T0 + HOUR, True)
    assert (bob.ended, bob.end_exact) == (T0 + timedelta(minutes=1), False)  # last seen running
    operator = create_user("operator")
    found = hub_row(month(operator, now=later), "north-a")
    assert found["server_hours"] == round((70 * 60 + 30) / 3600, 4)
    assert (found["active_users"], found["peak_servers"], found["inexact_sessions"]) == (2, 2, 1)
    assert found["gaps"] and found["gaps"][0]["from"] == (T0 + timedelta(minutes=1)).isoformat()
    assert found["gap_minutes"] == 119.0

    # The same sweep again, and a sweep that lists the same server again: still one session each, same totals.
    sweep(hubs, later + timedelta(minutes=1), {"north-a": [("cy", later)]})
    sweep(hubs, later + timedelta(minutes=2), {"north-a": [("cy", later)]})
    assert len(sessions(a)) == 3
    assert db.session.query(ServerSession).filter_by(username="cy").one().last_seen == later + timedelta(minutes=2)


def test_a_server_restarted_between_sweeps_ends_no_later_than_the_new_start(place):
    a = place["north-a"]
    sweep([a], T0, {"north-a": [("ada", T0)]})
    sweep([a], T0 + HOUR, {"north-a": [("ada", T0 + 50 * timedelta(minutes=1))]})  # stopped and started again
    old, new = sessions(a)
    assert (old.ended, old.end_exact, new.ended) == (T0, False, None)  # when last seen running, not later
    # The hub saying, when asked, that the server runs again since a newer start closes the held one as well.
    sweep([a], T0 + 2 * HOUR, {"north-a": []}, stops={"north-a": [ServerStop("ada", restarted=T0 + 110 * timedelta(
        minutes=1))]})
    assert sessions(a)[1].ended == T0 + HOUR
    # An incomplete list (too many pages) ends nobody; a stop time before the session began is not believed.
    sweep([a], T0 + 3 * HOUR, {"north-a": [("eve", T0 + 3 * HOUR)]})
    sweep([a], T0 + 4 * HOUR, {"north-a": []}, complete=False)
    assert sessions(a)[-1].ended is None
    sweep([a], T0 + 5 * HOUR, {"north-a": []}, stops={"north-a": [ServerStop("eve", stopped=T0)]})
    eve = sessions(a)[-1]
    assert (eve.ended, eve.end_exact) == (T0 + 3 * HOUR, False)  # last seen running


def test_sessions_clip_at_month_ends_and_running_ones_count_to_now(place, create_user):
    a, b = place["north-a"], place["north-b"]
    end_of_october = datetime(2026, 10, 31, 23, 0)
    db.session.add_all([
        ServerSession(hub_id=a.id, username="ada", started=end_of_october, ended=end_of_october + 3 * HOUR,
                      end_exact=True, last_seen=end_of_october),
        ServerSession(hub_id=b.id, username="ada", started=datetime(2026, 11, 30, 22, 0), ended=None,
                      last_seen=datetime(2026, 11, 30, 22, 0)),
        ServerSession(hub_id=b.id, username="bob", started=datetime(2026, 11, 1, 1, 0),
                      ended=datetime(2026, 11, 1, 3, 0), end_exact=True, last_seen=datetime(2026, 11, 1, 1, 0))])
    now = datetime(2026, 12, 1, 0, 30)
    b.servers_listed_at = now - timedelta(minutes=1)  # its servers are listed: ada's counts up to now
    db.session.commit()
    operator = create_user("operator")
    november = month(operator, now=now)
    assert hub_row(november, "north-a")["server_hours"] == 2.0  # 00:00-02:00 of the 1st; the October hour is not here
    assert hub_row(november, "north-b")["server_hours"] == 4.0  # bob's 2 h and ada's last 2 h of the month
    assert month(operator, "2026-10", now=now)["totals"]["server_hours"] == 1.0
    assert month(operator, "2026-12", now=now)["totals"]["server_hours"] == 0.5  # running: until now
    north = november["institutions"][0]
    assert (north["active_users"], north["peak_servers"]) == (2, 2)  # ada (on two hubs) and bob; 01:00-02:00 both
    first = north["days"][0]
    assert (first["day"], first["server_hours"], first["peak_servers"]) == ("2026-11-01", 4.0, 2)
    assert [d["server_hours"] for d in north["days"][1:29]] == [0.0] * 28
    assert north["days"][29]["server_hours"] == 2.0
    # While the hub's servers go unlisted, a running server counts only until a sweep last saw it, inexact.
    b.servers_listed_at = datetime(2026, 11, 30, 23, 0)
    db.session.commit()
    stale = hub_row(month(operator, now=now), "north-b")
    assert (stale["server_hours"], stale["inexact_sessions"]) == (2.0, 1)  # bob's 2 h; ada's seen at 22:00 only
    assert stale["gaps"] == [{"from": "2026-11-30T23:00:00", "until": now.isoformat(), "open": True}]


def test_peak_and_measures_are_pure_interval_arithmetic():
    def span(user, start, end, cpu=None, memory=None):
        return usage.Span((1, user), 1, T0 + start * HOUR, T0 + end * HOUR, True, cpu, memory)

    spans = [span("a", 0, 2), span("b", 2, 3), span("c", 0.5, 1.5), span("hubfleet-check", 0, 1)]
    assert usage.peak(spans, T0, T0 + 5 * HOUR) == 3  # a, c and the check from 0:30; b starts as a ends
    assert usage.peak(spans, T0 + HOUR, T0 + 5 * HOUR) == 2  # the check ends at 1:00 itself
    found = usage.measure(spans, T0, T0 + 5 * HOUR, {1: {"currency": "EUR", "server_hour": "0.5"}})
    assert (found["active_users"], found["server_hours"], found["estimated_cost"]) == (3, 5.0, {"EUR": 2.5})
    k8s = usage.measure([span("a", 0, 2, cpu=0.5, memory=2.0)], T0, T0 + HOUR,
                        {1: {"currency": "USD", "server_hour": "0", "cpu_hour": "0.04", "gb_hour": "0.01"}})
    assert (k8s["server_hours"], k8s["cpu_hours"], k8s["gb_hours"], k8s["estimated_cost"]) == \
        (1.0, 0.5, 2.0, {"USD": 0.04})
    assert usage.measure([], T0, T0 + HOUR)["peak_servers"] == 0


def test_kubernetes_sessions_carry_what_their_servers_request_and_cost_by_cluster(place, create_user):
    south = place["south-a"]
    south.institution.environment = {"cpu_guarantee": 1, "mem_guarantee": "2G"}
    db.session.commit()
    sweep([south, place["north-a"]], T0, {"south-a": [("zoe", T0)], "north-a": [("ada", T0)]})
    sweep([south, place["north-a"]], T0 + 2 * HOUR, {"south-a": [], "north-a": []},
          stops={"south-a": [ServerStop("zoe", stopped=T0 + 2 * HOUR)],
                 "north-a": [ServerStop("ada", stopped=T0 + HOUR)]})
    (zoe,), (ada,) = sessions(south), sessions(place["north-a"])
    assert (zoe.cpu, zoe.memory, ada.cpu, ada.memory) == (1.0, 2.0, None, None)
    operator = create_user("operator")
    usage.set_prices(operator, place["west"], {"currency": "eur", "server_hour": "0.10", "cpu_hour": 0.05,
                                               "gb_hour": "0.01"})
    usage.set_prices(operator, place["east"], {"currency": "USD", "server_hour": "1"})
    assert place["west"].prices == {"currency": "EUR", "server_hour": "0.1", "cpu_hour": "0.05", "gb_hour": "0.01"}
    found = month(operator)
    south_row = hub_row(found, "south-a")
    assert (south_row["cpu_hours"], south_row["gb_hours"], south_row["estimated_cost"]) == (2.0, 4.0, {"EUR": 0.34})
    assert found["totals"]["estimated_cost"] == {"EUR": 0.34, "USD": 1.0}  # never added across currencies
    audit = db.session.query(AuditEvent).filter_by(action="usage.price", target="west").one()
    assert audit.detail["after"]["cpu_hour"] == "0.05"


@pytest.mark.parametrize("prices, errors", [
    ({"currency": "EUR", "server_hour": "-1"}, {"server_hour": "Give a price of 0 or more."}),
    ({"currency": "EUR", "cpu_hour": "lots"}, {"cpu_hour": "Give a number, such as 0.25."}),
    ({"currency": "EUR", "gb_hour": "NaN"}, {"gb_hour": "Give a price of 0 or more."}),
    ({"currency": "EUR", "gb_hour": True}, {"gb_hour": "Give a number, such as 0.25."}),
    ({"currency": "EUR", "server_hour": "0.0000001"}, {"server_hour": "Give at most six decimal places."}),
    ({"currency": "EUR", "server_hour": "2000000"}, {"server_hour": "Give a price of at most 1000000."}),
    ({"server_hour": "1"}, {"currency": "Name the currency these prices are in."}),
    ({"currency": "euro", "server_hour": "1"}, {"currency": "Give a three-letter currency code, such as EUR."}),
    ([], {"prices": "Send the prices as an object."}),
])
def test_prices_are_checked_field_by_field(prices, errors):
    with pytest.raises(FieldErrors) as caught:
        usage.validate_prices(prices)
    assert caught.value.errors == errors


def test_parse_month_and_stop_answers():
    assert usage.parse_month("2026-12") == (datetime(2026, 12, 1), datetime(2027, 1, 1))
    for bad in ("2026-13", "26-11", "2026-1", "1999-01", "2026-11-01", "x"):
        with pytest.raises(FieldErrors):
            usage.parse_month(bad)
    stopped = b'{"name": "ada", "last_activity": "2026-11-10T10:00:00Z", "servers": {"": {"started": null, ' \
              b'"stopped": true, "last_activity": "2026-11-10T09:59:58.5Z"}}}'
    assert parse_stop("ada", 200, stopped) == ServerStop("ada", stopped=datetime(2026, 11, 10, 9, 59, 58, 500000))
    again = b'{"name": "ada", "servers": {"": {"started": "2026-11-10T11:00:00Z", "stopped": false}}}'
    assert parse_stop("ada", 200, again) == ServerStop("ada", restarted=datetime(2026, 11, 10, 11, 0))
    assert parse_stop("ada", 404, b'{"status": 404}') == ServerStop("ada")
    assert parse_stop("ada", 200, b'{"name": "ada", "servers": {}}') == ServerStop("ada")


# -- pages and API ----------------------------------------------------------------------------------------------------

@pytest.fixture
def recorded(place):
    """A session on each hub this month, and one gap on north-b."""
    now = datetime.now().replace(microsecond=0)  # the page reports the current month
    started = now.replace(day=1, hour=0, minute=0, second=0)
    for slug, user in (("north-a", "ada"), ("north-b", "bob"), ("south-a", "zoe")):
        db.session.add(ServerSession(hub_id=place[slug].id, username=user, started=started,
                                     ended=started + HOUR, end_exact=True, last_seen=started))
        place[slug].servers_listed_at = now
    db.session.add(UsageGap(hub_id=place["north-b"].id, start=started + HOUR, end=started + 2 * HOUR))
    db.session.commit()
    return place


def test_operators_see_the_fleet_and_admins_only_their_institution(app, client, login, recorded, create_user,
                                                                   api_headers, own_g_per_request):
    operator = create_user("operator")
    admin = create_user("institution_admin", institution=recorded["north"])
    login(client, operator)
    page = client.get("/usage")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert all(slug in text for slug in ("north-a", "north-b", "south-a")) and "60 min gap" in text
    assert 'href="/usage"' in text  # the nav links it

    client = login(app.test_client(), admin)
    text = client.get("/usage").get_data(as_text=True)
    assert "north-a" in text and "south-a" not in text and "South" not in text
    assert client.get("/usage?institution=south").status_code == 404
    assert client.get("/usage?hub=south-a").status_code == 404
    assert client.get("/usage?hub=north-b").status_code == 200

    headers = api_headers(admin)
    found = client.get("/api/v1/usage", headers=headers).get_json()
    assert [i["slug"] for i in found["institutions"]] == ["north"]
    assert found["totals"]["server_hours"] == 2.0 and found["totals"]["active_users"] == 2
    assert client.get("/api/v1/usage?institution=south", headers=headers).status_code == 404
    assert client.get("/api/v1/clusters/east/prices", headers=headers).status_code == 404
    assert client.put("/api/v1/clusters/east/prices", json={"currency": "EUR"}, headers=headers).status_code == 404
    member = create_user("member")
    assert client.get("/api/v1/usage", headers=api_headers(member)).status_code == 403

    everything = client.get("/api/v1/usage", headers=api_headers(operator)).get_json()
    assert [i["slug"] for i in everything["institutions"]] == ["north", "south"]
    assert everything["totals"]["server_hours"] == 3.0


def test_downloads_and_bad_input(client, login, recorded, create_user, api_headers):
    operator = create_user("operator")
    login(client, operator)
    month_key = datetime.now().strftime("%Y-%m")
    download = client.get(f"/usage?format=csv&month={month_key}&institution=north")
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert download.headers["Content-Disposition"] == f'attachment; filename="usage-{month_key}-north.csv"'
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    months = [r for r in rows if r["period"] == month_key]
    assert [(r["institution"], r["hub"], r["server_hours"]) for r in months] == [
        ("north", "", "2.0"), ("north", "north-a", "1.0"), ("north", "north-b", "1.0")]
    assert next(r for r in months if r["hub"] == "north-b")["gap_minutes"] == "60.0"
    day_one = next(r for r in rows if r["hub"] == "north-a" and r["period"].endswith("-01"))
    assert day_one["server_hours"] == "1.0" and day_one["active_users"] == "1"

    found = client.get("/usage?format=json")
    assert found.headers["Content-Disposition"].startswith("attachment; filename=\"usage-")
    assert found.get_json()["totals"]["server_hours"] == 3.0

    assert client.get("/usage?month=2026-13").status_code == 422
    assert 'aria-invalid="true"' in client.get("/usage?month=soon").get_data(as_text=True)
    assert client.get("/usage?format=xml").status_code == 422
    headers = api_headers(operator)
    bad = client.get("/api/v1/usage?month=13-2026", headers=headers)
    assert bad.status_code == 422 and "month" in bad.get_json()["errors"]["json"]


def test_prices_by_form_and_api(client, login, place, create_user, api_headers):
    operator = create_user("operator")
    login(client, operator)
    page = client.get("/clusters/east").get_data(as_text=True)
    assert "No prices" in page and 'action="/clusters/east/prices"' in page
    token = csrf_from(page)
    refused = client.post("/clusters/east/prices", data={"csrf_token": token, "currency": "EUR",
                                                         "server_hour": "-2", "cpu_hour": "x"})
    assert refused.status_code == 422
    text = refused.get_data(as_text=True)
    assert "Give a price of 0 or more." in text and "Give a number, such as 0.25." in text and 'value="-2"' in text
    db.session.expire_all()
    assert place["east"].prices == {}
    saved = client.post("/clusters/east/prices", data={"csrf_token": token, "currency": "EUR",
                                                       "server_hour": "0.25", "cpu_hour": "", "gb_hour": ""})
    assert saved.status_code == 302
    db.session.expire_all()
    assert place["east"].prices == {"currency": "EUR", "server_hour": "0.25"}
    assert "0.25 EUR per server-hour" in client.get("/clusters/east").get_data(as_text=True)

    headers = api_headers(operator)
    put = client.put("/api/v1/clusters/west/prices", json={"currency": "USD", "gb_hour": 0.002}, headers=headers)
    assert put.status_code == 200 and put.get_json() == {"currency": "USD", "gb_hour": "0.002"}
    bad = client.put("/api/v1/clusters/west/prices", json={"currency": "USD", "gb_hour": -1}, headers=headers)
    assert bad.status_code == 422 and bad.get_json()["errors"]["json"] == {"gb_hour": ["Give a price of 0 or more."]}
    assert client.get("/api/v1/clusters/west/prices", headers=headers).get_json() == {"currency": "USD",
                                                                                     "gb_hour": "0.002"}
    cleared = client.put("/api/v1/clusters/west/prices", json={"currency": "", "gb_hour": None}, headers=headers)
    assert cleared.get_json() == {}
