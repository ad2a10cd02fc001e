"""The hub page's charts: a first sample drawn as a visible point with its exact value, time ranges, active users
counted from what the sweeps see, and the charts drawn by uPlot under the Content-Security-Policy in Chromium.

The hubs are loopback servers answering like JupyterHub (tests/fakehubs.py): the one chart's hub answers its
metrics with one running server and one active user; tests/e2e/test_charts_local.py does the same with a real hub.
"""
import json
import re
from datetime import timedelta
from html import unescape

import pytest

from console.extensions import db
from console.models import Hub, HubSample, ServerSnapshot, utcnow
from console.monitor import Monitor
from console.services import monitoring
from tests.browser import log_in, watched
from tests.fakehubs import FakeHubs

ACCENT = (36, 87, 197)  # the charts' line and point colour, base.html's --accent


@pytest.fixture
def one_hub(app, create_institution, create_cluster, create_user, client, api_headers, run_worker):
    """Hub "north-lab" after one sweep of a hub with one running server (so one sample with a value: the worker's
    own sample, taken when the hub first answered, has none); yields (fake hubs, its port)."""
    app.config.update(PROBE_TIMEOUT=5.0)
    create_institution("north")
    create_cluster("fast", backend="fake", reachable=True, probe_token="read-only")
    client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "fast"},
                headers=api_headers(create_user("operator")))
    run_worker()
    with FakeHubs(2) as hubs:
        port = hubs.ports[1]  # its /hub/metrics: 1 running server, 1 active user
        db.session.execute(db.update(Hub).where(Hub.slug == "north-lab").values(url=hubs.urls[1]))
        db.session.commit()
        hubs.users[port] = [_active("ada", utcnow())]
        sweep(app)
        yield hubs, port


def sweep(app):
    with app.app_context():
        Monitor(app).tick()
        db.session.remove()
    db.session.expire_all()


def _active(name, last_activity):
    when = last_activity.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"name": name, "servers": {"": {"ready": True, "pending": None, "started": when, "last_activity": when}}}


def figure(page: str, key: str) -> str:
    return re.search(rf'<figure class="card" id="chart-{key}".*?</figure>', page, re.S).group(0)


def chart_data(page: str, key: str) -> dict:
    return json.loads(unescape(re.search(r"data-chart='([^']*)'", figure(page, key)).group(1)))


def test_one_sample_and_one_running_server_show_a_point_and_the_exact_value(client, login, create_user, one_hub):
    login(client, create_user("operator"))
    page = client.get("/hubs/north-lab").get_data(as_text=True)
    running = figure(page, "running")
    assert "<figcaption" in running and "Running servers" in running
    assert 'now: <strong class="chart-latest">1 running server</strong>' in running  # exact, not "0.1" or "1.0"
    data = chart_data(page, "running")
    assert data["y"] == [1] and len(data["x"]) == 1  # the one point, drawn and marked by charts.js
    assert data["since"] < data["x"][0] <= data["until"] and data["unit"] == "servers" and data["integer"]
    assert 'now: <strong class="chart-latest">1 active user</strong>' in figure(page, "active")
    assert "lowest 1 running server, highest 1 running server" in running  # readable without a pointer
    response = chart_data(page, "response")
    assert len(response["y"]) == 1 and response["y"][0] > 0 and response["unit"] == "ms"
    # The fleet list's sparkline: one value is a dot, and its title gives the value as measured.
    fleet = client.get("/").get_data(as_text=True)
    assert fleet.count('<circle class="point"') == 2 and "running servers: now 1, peak 1" in fleet


def test_ranges(client, login, create_user, one_hub):
    login(client, create_user("operator"))
    hub_id = db.session.execute(db.select(Hub.id).filter_by(slug="north-lab")).scalar_one()
    db.session.add(HubSample(hub_id=hub_id, at=utcnow() - timedelta(days=3), resolution="hour", up=1.0,
                             duration=0.05, running_servers=2.5, active_users=3.0))
    db.session.commit()
    day = client.get("/hubs/north-lab").get_data(as_text=True)
    assert "Usage, last 24 hours" in day and chart_data(day, "running")["y"] == [1]
    week = client.get("/hubs/north-lab?range=7d").get_data(as_text=True)
    assert "Usage, last 7 days" in week and re.search(r'aria-current="page"[^>]*>7 days</a>', week)
    assert chart_data(week, "running")["y"] == [2.5, None, 1]  # an hourly average, a gap, the latest sample
    assert "now: <strong class=\"chart-latest\">1 running server</strong>" in week
    assert "highest 2.5 running servers" in week
    assert 'hx-get="/hubs/north-lab?range=7d"' in week  # the page's own refresh keeps the range
    fragment = client.get("/hubs/north-lab?range=30d", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Usage, last 30 days" in fragment
    for bad in ("1y", "", "24h'><script>", "%00"):
        answer = client.get("/hubs/north-lab", query_string={"range": bad})
        assert answer.status_code == 200 and "Usage, last 24 hours" in answer.get_data(as_text=True), bad
    assert monitoring.chart_range("7d") == "7d" and monitoring.chart_range(None) == "24h"


def test_active_users_are_counted_from_each_sweep(app, one_hub):
    """JupyterHub counts active users hourly; the console counts the users whose last activity the sweeps saw in
    the last 24 hours, at every sweep, and keeps JupyterHub's count when that is higher."""
    hubs, port = one_hub
    db.session.execute(db.update(Hub).where(Hub.slug == "north-lab").values(url=hubs.urls[0]))  # metrics: 0 active
    db.session.commit()
    hubs.users[hubs.ports[0]] = [_active("ada", utcnow() - timedelta(minutes=1)),
                                 _active("bob", utcnow() - timedelta(hours=2)),
                                 _active("cy", utcnow() - timedelta(days=2))]  # running, idle for two days
    sweep(app)
    hub = db.session.execute(db.select(Hub).filter_by(slug="north-lab")).unique().scalar_one()
    latest = db.session.execute(db.select(HubSample.active_users).where(HubSample.hub_id == hub.id)
                                .order_by(HubSample.id.desc()).limit(1)).scalar_one()
    assert hub.active_users == latest == 2
    hubs.users[hubs.ports[0]] = []  # all three servers stopped: who was active today still was
    sweep(app)
    assert db.session.get(Hub, hub.id).active_users == 2
    # A hub whose servers the console never saw: JupyterHub's count (1, from its metrics) stands.
    db.session.execute(db.delete(ServerSnapshot).where(ServerSnapshot.hub_id == hub.id))
    db.session.execute(db.update(Hub).where(Hub.id == hub.id).values(url=hubs.urls[1]))
    db.session.commit()
    hubs.users[port] = []
    sweep(app)
    assert db.session.get(Hub, hub.id).active_users == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_charts_draw_in_chromium_under_the_policy(one_hub, live_server, create_user, tmp_path):
    """uPlot draws each chart with its axes, the one sample as a visible point, after htmx's refresh too; no
    policy violation, no error.  The screenshot is left in the test's temporary directory."""
    from playwright.sync_api import sync_playwright

    operator = create_user("operator")
    hub_id = db.session.execute(db.select(Hub.id).filter_by(slug="north-lab")).scalar_one()
    start = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(days=7)
    db.session.add_all(HubSample(  # a week of hourly history before today, with a stop of half a day in it
        hub_id=hub_id, at=start + timedelta(hours=h), resolution="hour", up=1.0, duration=0.02 + (h % 5) / 100,
        running_servers=float((h // 3) % 6), active_users=float(4 + (h // 24)))
        for h in range(6 * 24) if not 70 < h < 82)
    db.session.commit()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            problems = watched(page)
            log_in(page, live_server, operator.email)
            page.goto(f"{live_server}/hubs/north-lab")
            page.wait_for_selector("#chart-running .uplot canvas")
            assert page.locator(".chart-plot .uplot").count() == 3
            assert _accent_pixels(page, "running") > 0  # the lone point is drawn: there is no line to draw
            assert page.locator("#chart-running .u-axis").count() == 2  # time, and servers (drawn on the canvas)
            with page.expect_response(lambda r: r.url.endswith("/hubs/north-lab") and
                                      r.request.headers.get("hx-request") == "true", timeout=12000):
                pass  # htmx replaces the page's detail every 5 s: the new copy is drawn as well
            page.wait_for_timeout(300)
            assert page.locator(".chart-plot .uplot").count() == 3 and _accent_pixels(page, "running") > 0
            page.locator("#hub-charts").screenshot(path=str(tmp_path / "hub-charts.png"))
            page.click("text=7 days")
            page.wait_for_selector("text=Usage, last 7 days")
            page.wait_for_selector("#chart-running .uplot canvas")
            assert _accent_pixels(page, "running") > 500  # a week's line
            page.locator("#hub-charts").screenshot(path=str(tmp_path / "hub-charts-7d.png"))
            assert problems == [], problems
        finally:
            browser.close()


def _accent_pixels(page, key: str) -> int:
    """How many pixels of chart ``key``'s canvas are the series colour (axes and grid are grey)."""
    return page.evaluate("""([key, [r, g, b]]) => {
        const canvas = document.querySelector(`#chart-${key} .uplot canvas`);
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let found = 0;
        for (let i = 0; i < pixels.length; i += 4) {
            if (Math.abs(pixels[i] - r) < 12 && Math.abs(pixels[i + 1] - g) < 12 && Math.abs(pixels[i + 2] - b) < 12
                && pixels[i + 3] > 200) found++;
        }
        return found;
    }""", [key, list(ACCENT)])
