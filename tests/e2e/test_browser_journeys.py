"""The console as operators and institution admins use it, in Debian's Chromium (Playwright), headless.

Each journey drives a real console server with its worker and monitor.  Every page a journey reaches is scanned
with axe-core (npm, injected by the test): no critical or serious violation.  Screenshots of each step are saved to
``HUBFLEET_SCREENSHOTS`` (default: the test's temporary directory), which docs/ uses.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from clusters.environments import installed_jupyterhub
from console.extensions import db
from console.models import Hub
from console.services.institutions import ensure_local_cluster
from tests.conftest import PASSWORD
from tests.fakehubs import FakeHubs
from tests.helpers import wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
AXE = Path(os.environ.get("HUBFLEET_AXE") or Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js")
SERIOUS = ("critical", "serious")


class Journey:
    """A Chromium page that checks every console page it lands on and keeps numbered screenshots."""

    def __init__(self, browser_, console: str, shots: Path, name: str):
        # axe-core is injected as a script the console's policy would refuse (tests/console/test_headers.py checks
        # the pages under the policy)
        self.page = browser_.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900}).new_page()
        self.console, self.shots, self.name, self.step = console, shots, name, 0
        self.problems: list[str] = []
        self.page.on("pageerror", lambda error: self.problems.append(f"{self.page.url}: {error}"))
        # a form answered with its field errors is a 422 by design; any other error the browser reports is a problem
        self.page.on("console", lambda message: self.problems.append(f"{self.page.url}: {message.text}")
                     if message.type == "error" and self.page.url.startswith(console)
                     and "status of 422" not in message.text else None)

    def goto(self, path: str) -> None:
        self.page.goto(self.console + path)
        self.check()

    def check(self, label: str | None = None) -> None:
        """Scan the console page on screen with axe-core and save a screenshot of it."""
        self.page.wait_for_load_state()
        if self.page.url.startswith(self.console):
            self.page.add_script_tag(path=str(AXE))
            found = self.page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']}))"
                                       ".violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length,"
                                       " target: v.nodes[0].target}))")
            bad = [v for v in found if v["impact"] in SERIOUS]
            assert not bad, f"{self.page.url}: {json.dumps(bad)}"
        self.shot(label)

    def shot(self, label: str | None = None) -> None:
        self.step += 1
        slug = re.sub(r"[^a-z0-9]+", "-", (label or self.page.url.split("//", 1)[-1].split("/", 1)[-1] or "home")
                      .lower()).strip("-")
        self.page.screenshot(path=str(self.shots / f"{self.name}-{self.step:02d}-{slug[:40]}.png"), full_page=True)

    def log_in(self, email: str) -> None:
        self.goto("/login")
        self.page.fill("input[name=email]", email)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.click("button[type=submit]")
        self.check()

    def done(self) -> None:
        assert not self.problems, self.problems


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("HUBFLEET_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def console(app, ctx, live_server, create_institution, create_user):
    """A console server with its worker and monitor, an institution, an operator and the institution's admin."""
    from console.worker import start_in_process

    # a sweep a second, "down" as soon as a hub failed three probes in a row
    app.config.update(PROBE_SECONDS=1, RECHECK_SECONDS=0.5, PROBE_TIMEOUT=0.5, ALERT_DOWN_SECONDS=0)
    institution = create_institution("north", "North College")
    people = {"operator": create_user("operator", email="ops@example.org"),
              "admin": create_user("institution_admin", institution=institution, email="admin@north.example")}
    thread, stop = start_in_process(app)
    yield {"url": live_server, **people}
    stop.set()
    thread.join(30)


def test_operator_creates_a_hub_opens_it_in_jupyterlab_and_deletes_it(app, console, browser, shots):
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    journey = Journey(browser, console["url"], shots, "operator-hub")
    page = journey.page
    journey.log_in(console["operator"].email)
    page.click("text=New hub")
    journey.check()
    page.fill("#slug", "north-lab")
    page.select_option("#institution", "north")
    page.click("button:has-text('Create hub')")
    journey.check("hub created")
    username = page.locator("dt:has-text('Username') + dd code").inner_text()
    password = page.locator("dt:has-text('Password') + dd code").inner_text()

    journey.goto("/hubs/north-lab")
    page.wait_for_selector("#hub-detail h1 .badge:has-text('healthy'), #hub-detail h1 :text('running')",
                           timeout=120000)
    journey.check("hub healthy")
    hub_url = page.locator("dt:has-text('URL') + dd a").inner_text()
    page.goto(hub_url + "hub/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_selector("#jp-main-dock-panel", timeout=120000)
    journey.shot("jupyterlab")

    journey.goto("/hubs/north-lab")
    page.click("text=Delete…")
    journey.check()
    page.click("button:has-text('Delete hub')")  # without typing the slug: a field error
    journey.check("delete refused")
    assert page.locator(".field-error").count() == 1
    page.fill("#confirm", "north-lab")
    page.click("button:has-text('Delete hub')")
    journey.check("deleting")
    wait_for(lambda: db.session.expire_all() or db.session.execute(
        db.select(Hub.state).where(Hub.slug == "north-lab")).scalar_one() == "deleted", 90, what="the hub to go")
    journey.done()


def test_institution_admin_edits_login_and_environment_previews_and_applies(app, console, browser, shots,
                                                                            create_cluster, client, api_headers):
    fake_hubs(console, create_cluster, client, api_headers, "north-fast")
    journey = Journey(browser, console["url"], shots, "admin-config")
    page = journey.page
    journey.log_in(console["admin"].email)
    journey.goto("/institutions/north/config")
    page.select_option("#auth\\.authenticator_class", "shared-password")
    page.click("button[value=switch]")
    journey.check("shared password chosen")
    page.fill("#auth\\.user_password", "a-long-shared-password")
    page.fill("#auth\\.allowed_users", "ada\ngrace")
    page.fill("#environment\\.cpu_limit", "64")  # above the operator's policy
    page.click("button[value=preview]")
    journey.check("field error")
    assert "environment.cpu_limit" in page.locator("[aria-invalid=true]").first.get_attribute("name")
    page.fill("#environment\\.cpu_limit", "2")
    page.fill("#auth\\.user_password", "a-long-shared-password")  # secrets are never sent back to the form
    page.click("button[value=preview]")
    journey.check("preview")
    assert "shared-password" in page.locator("pre").first.inner_text()
    page.click("button:has-text('Apply')")
    journey.check("applying")
    page.wait_for_selector("text=Every hub took the change", timeout=60000)
    journey.check("applied")
    journey.done()


def reloaded(page) -> bool:
    page.reload()
    return True


def fake_hubs(console, create_cluster, client, api_headers, *slugs: str) -> None:
    """Running hubs of North on a fake cluster (the journeys about the console's pages need no real hub)."""
    create_cluster("fast", backend="fake")
    for slug in slugs:
        created = client.post("/api/v1/hubs", json={"slug": slug, "institution": "north", "cluster": "fast"},
                              headers=api_headers(console["operator"]))
        assert created.status_code == 202, created.get_json()
    wait_for(lambda: db.session.expire_all() or set(db.session.execute(
        db.select(Hub.state).where(Hub.slug.in_(slugs))).scalars()) == {"running"}, 30, what="the hubs")


def test_operator_publishes_a_release_and_watches_its_rollout_live(app, console, browser, shots, create_cluster,
                                                                   client, api_headers):
    fake_hubs(console, create_cluster, client, api_headers, "north-a", "north-b", "north-c")
    journey = Journey(browser, console["url"], shots, "release-rollout")
    page = journey.page
    journey.log_in(console["operator"].email)
    journey.goto("/releases")
    page.fill("#name", "2026.12")
    page.fill("#jupyterhub_version", "0.0")  # not a version: a field error, what was typed kept
    page.click("button:has-text('Publish')")
    journey.check("release refused")
    assert page.locator("#name").input_value() == "2026.12"
    page.fill("#jupyterhub_version", installed_jupyterhub())
    page.click("button:has-text('Publish')")
    journey.check("release published")
    page.goto(console["url"] + "/releases")
    wait_for(lambda: reloaded(page) and "Ready" in page.locator("#release-2026\\.12").inner_text(), 60,
             what="the release to be ready")
    journey.goto("/releases")
    page.select_option("#release", "2026.12")
    page.fill("#waves", "2")
    page.fill("#gate_seconds", "1")
    page.click("button:has-text('Plan')")
    journey.check("rollout planned")
    page.click("button:has-text('Start')")
    journey.check("rollout running")
    # The page follows the rollout by itself (htmx) until every wave is done.
    page.wait_for_selector("h1 :text('Done')", timeout=90000)
    journey.check("rollout done")
    assert set(db.session.execute(db.select(Hub.release_id).where(Hub.slug.like("north-%"))).scalars()) != {None}
    journey.done()


def test_operator_sees_an_alert_and_its_recovery(app, console, browser, shots, create_cluster, client, api_headers):
    """The hub answers like JupyterHub from a stand-in server on loopback (tests/fakehubs.py), which stops answering
    and comes back."""
    create_cluster("probed", backend="fake", reachable=True)
    with FakeHubs(1) as stand_in:
        created = client.post("/api/v1/hubs", json={"slug": "north-probed", "institution": "north",
                                                    "cluster": "probed"}, headers=api_headers(console["operator"]))
        assert created.status_code == 202
        wait_for(lambda: db.session.expire_all() or db.session.execute(
            db.select(Hub.state).where(Hub.slug == "north-probed")).scalar_one() == "running", 30, what="the hub")
        db.session.execute(db.update(Hub).where(Hub.slug == "north-probed").values(url=stand_in.urls[0]))
        db.session.commit()
        journey = Journey(browser, console["url"], shots, "alert")
        page = journey.page
        journey.log_in(console["operator"].email)
        journey.goto("/alerts")
        assert page.locator("#alerts-list tbody tr").first.inner_text().startswith("No alerts")
        stand_in.set_mode(stand_in.ports[0], "refused")
        page.wait_for_selector("#alerts-list tr:has-text('north-probed') :text('open')", timeout=60000)
        journey.check("alert open")
        journey.goto("/")
        journey.check("fleet with a hub down")
        journey.goto("/alerts")
        stand_in.set_mode(stand_in.ports[0], "ok")
        page.wait_for_selector("#alerts-list tr:has-text('north-probed') :text('recovery')", timeout=60000)
        journey.check("alert resolved")
        journey.done()


def test_operator_provisions_a_local_cluster_from_plan_to_apply(app, console, browser, shots, tmp_path):
    """The wizard runs the real Terraform CLI on the local-cluster module."""
    journey = Journey(browser, console["url"], shots, "cluster-wizard")
    page = journey.page
    journey.log_in(console["operator"].email)
    journey.goto("/clusters/new")
    page.fill("#name", "Not A Name!")
    page.fill("#data_dir", "relative/path")  # two wrong fields: both errors in one answer
    page.click("button[value=plan]")
    journey.check("wizard errors")
    assert page.locator("[aria-invalid=true]").count() >= 2
    page.fill("#name", "campus")
    page.fill("#data_dir", str(tmp_path / "campus"))
    page.click("button[value=plan]")
    journey.check("planning")
    page.wait_for_selector("button:has-text('Approve and apply')", timeout=120000)
    journey.check("plan to review")
    page.click("button:has-text('Approve and apply')")
    journey.check("applying")
    page.goto(console["url"] + "/clusters/campus")
    wait_for(lambda: reloaded(page) and "Ready" in page.locator("h1").inner_text(), 120, what="the cluster to be ready")
    journey.check("cluster ready")
    journey.done()
