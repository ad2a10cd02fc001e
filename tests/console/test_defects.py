"""The form and page defects of issue 13, one test each: every one failed before its fix."""
import html
import re

import pytest

from console.extensions import db
from console.models import Cluster, Institution
from tests.conftest import PASSWORD, csrf_from

ENV = {"image": "quay.io/jupyter/scipy-notebook:2025-01-06", "cpu_limit": 2, "mem_limit": "4G"}
TIMESTAMP = re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2})?(?![\d:])(?! UTC)")


@pytest.fixture
def north(create_institution, create_cluster, create_user, api_headers, client, run_worker):
    """North (demo login allowed) with two running hubs on a local-target fake cluster; returns
    (admin user, operator user, operator headers)."""
    institution = create_institution("north", "North College")
    institution.policy = {"open_login_allowed": True}
    db.session.commit()
    create_cluster("fast", backend="fake")
    operator = create_user("operator")
    headers = api_headers(operator)
    for slug in ("north-a", "north-b"):
        client.post("/api/v1/hubs", json={"slug": slug, "institution": "north", "cluster": "fast"}, headers=headers)
    run_worker()
    return create_user("institution_admin", institution=institution), operator, headers


def form_post(client, path, data, page=None):
    token = csrf_from(client.get(page or path).get_data(as_text=True))
    return client.post(path, data={**data, "csrf_token": token})


def checked(text: str, name: str) -> bool:
    tag = re.search(rf'<input id="{re.escape(name)}"[^>]*>', text).group(0)
    return " checked" in tag


# 1 ----------------------------------------------------------------------------------------------------------------

def test_switching_the_login_starts_the_new_kind_from_its_defaults(client, north, login):
    admin, _, _ = north
    login(client, admin)
    switched = form_post(client, "/institutions/north/config", {
        "action": "switch", "auth.authenticator_class": "github", "auth.allow_all": "on",
        "auth.allowed_users": "ann\nbob", "auth.admin_users": "ann"})
    text = switched.get_data(as_text=True)
    assert switched.status_code == 200 and 'name="auth.client_id"' in text
    assert not checked(text, "auth.allow_all")  # "allow everyone" is never carried to another login
    assert ">ann\nbob</textarea>" in text and ">ann</textarea>" in text  # who may log in is kept
    assert 'name="auth.scope">read:org</textarea>' in text  # GitHub's own default


# 2 ----------------------------------------------------------------------------------------------------------------

def preview_of(client, auth, environment=ENV):
    form = {"action": "preview", **{f"auth.{k}": v for k, v in auth.items()},
            **{f"environment.{k}": v for k, v in environment.items()}}
    return form_post(client, "/institutions/north/config", form)


def test_the_preview_diff_is_single_spaced_and_shows_names_as_typed(client, north, login):
    admin, _, _ = north
    login(client, admin)
    response = preview_of(client, {"authenticator_class": "dummy", "allowed_users": "josé\nzoë",
                                   "admin_users": "josé"})
    text = response.get_data(as_text=True)
    assert response.status_code == 200, text
    [pre] = re.findall(r'<pre class="diff"[^>]*>(.*?)</pre>', text, re.S)[:1]
    assert "+  - josé" in html.unescape(pre) and "\\xE9" not in pre and "\\xe9" not in pre
    # every line sits in its own span with its own line break: nothing between them adds a second one
    assert re.sub(r"<span[^>]*>[^<]*</span>", "", pre) == ""
    assert all(span.endswith("\n") for span in re.findall(r"<span[^>]*>([^<]*)</span>", pre))


# 3 ----------------------------------------------------------------------------------------------------------------

def test_the_preview_names_the_settings_a_local_hub_does_not_apply(client, north, login):
    admin, _, _ = north
    login(client, admin)
    environment = {**ENV, "cpu_guarantee": "1", "profiles.0.display_name": "Big",
                   "profiles.0.mem_limit": "8G"}
    text = preview_of(client, {"authenticator_class": "dummy", "allowed_users": "ann"}, environment
                      ).get_data(as_text=True)
    for slug in ("north-a", "north-b"):
        section = text.split(f"<h2>{slug}</h2>")[1].split("<h2>")[0]
        notice = re.search(r'<p class="hint" data-unapplied>(.*?)</p>', section, re.S).group(1)
        for setting in ("default image", "CPU guarantee", "memory guarantee", "home storage", "profiles"):
            assert setting in notice, (slug, notice)
        assert "CPU limit" not in notice  # a local hub does apply its limits


# 4 ----------------------------------------------------------------------------------------------------------------

def test_a_policy_below_the_running_config_warns_and_the_next_change_must_fit(client, north, login, api_headers):
    admin, operator, _ = north
    admin_headers = api_headers(admin)
    applied = client.put("/api/v1/institutions/north/config", headers=admin_headers, json={
        "auth": {"authenticator_class": "dummy", "allowed_users": ["ann"]}, "environment": ENV})
    assert applied.status_code == 200, applied.get_json()
    institution = db.session.execute(db.select(Institution).filter_by(slug="north")).scalar_one()
    institution.environment = {**ENV, "cpu_limit": 2}  # as if every hub had taken it
    db.session.commit()
    login(client, operator)
    saved = form_post(client, "/institutions/north/policy", {
        "max_cpu": "1", "max_memory": "16G", "allowed_registries": "quay.io/jupyter", "max_storage": "50Gi",
        "max_users": "1000", "open_login_allowed": "on"}, page="/institutions/north/policy")
    assert saved.status_code == 302
    page = client.get(saved.headers["Location"]).get_data(as_text=True)
    assert "Policy saved" in page and "now exceeds it" in page and "CPU limit: At most 1 CPU" in page
    assert 'id="policy-exceeded"' in page  # the policy page keeps saying so until the config fits
    db.session.refresh(institution)
    assert institution.policy["max_cpu"] == 1  # saved all the same: the operator decides
    refused = client.put("/api/v1/institutions/north/config", headers=admin_headers, json={
        "auth": {"authenticator_class": "dummy", "allowed_users": ["ann"]}, "environment": ENV})
    assert refused.status_code == 422  # the institution's next change must fit


# 5 ----------------------------------------------------------------------------------------------------------------

def test_the_cluster_wizard_checks_everything_at_once_in_the_configured_range(app, client, create_user, login,
                                                                            create_cluster, api_headers,
                                                                            run_worker, tmp_path):
    first, last = app.config["LOCAL_PORT_RANGE"]
    create_cluster("campus", backend="local", port_range=[first, first + 49], root=str(tmp_path / "campus"))
    operator = create_user("operator")
    login(client, operator)
    wizard = client.get("/clusters/new").get_data(as_text=True)
    assert f'id="port_first" name="port_first" type="text" value="{first}"' in wizard  # the configured range
    assert f'id="port_last" name="port_last" type="text" value="{last}"' in wizard
    # every error in one answer: a taken name, a bad directory and a range too short (a cross-field rule)
    refused = form_post(client, "/clusters/new", {"provider": "local", "name": "campus", "data_dir": "relative",
                                                  "port_first": str(last - 1), "port_last": str(last)})
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422
    for field in ("name", "data_dir", "port_last"):
        assert f'id="{field}-error"' in text, field
    overlapping = form_post(client, "/clusters/new", {"provider": "local", "name": "annex",
                                                      "data_dir": str(tmp_path / "annex"),
                                                      "port_first": str(first + 40), "port_last": str(last)})
    assert overlapping.status_code == 422
    assert re.search(r'id="port_first-error">[^<]*overlap[^<]*campus', overlapping.get_data(as_text=True))
    # a cluster whose first plan failed can be removed
    app.config["TERRAFORM_BIN"] = str(tmp_path / "no-terraform")
    headers = api_headers(operator)
    created = client.post("/api/v1/clusters", headers=headers, json={"provider": "local", "variables": {
        "name": "broken", "data_dir": str(tmp_path / "broken"), "port_first": last - 10, "port_last": last}})
    assert created.status_code == 202, created.get_json()
    run_worker()
    assert db.session.execute(db.select(Cluster.state).filter_by(name="broken")).scalar_one() == "failed"
    removed = client.delete("/api/v1/clusters/broken?confirm=broken", headers=headers)
    assert removed.status_code == 202, removed.get_json()
    run_worker()
    assert client.get("/api/v1/clusters/broken", headers=headers).status_code == 404


# 6 ----------------------------------------------------------------------------------------------------------------

def test_the_blackout_form_keeps_what_was_typed_and_counts_lines_from_one(client, north, login):
    _, operator, _ = north
    login(client, operator)
    typed = "2026-12-14T00:00 | 2026-12-20T23:59 | final exams\nnext week | soon | moving"
    response = form_post(client, "/institutions/north/blackouts", {"blackouts": typed}, page="/institutions/north")
    text = response.get_data(as_text=True)
    assert response.status_code == 422
    assert f">{html.escape(typed)}</textarea>" in text or f">{typed}</textarea>" in text
    assert "Line 2: " in text and "Line 1:" not in text
    assert db.session.execute(db.select(Institution.blackouts).filter_by(slug="north")).scalar_one() in (None, [])


# 7 ----------------------------------------------------------------------------------------------------------------

def test_a_rollout_target_reads_as_words(client, north, login):
    _, operator, headers = north
    assert client.post("/api/v1/releases", json={"name": "r1", "jupyterhub_version": "5.4.6"},
                       headers=headers).status_code == 201
    login(client, operator)
    planned = form_post(client, "/rollouts", {"release": "r1", "target_kind": "hubs", "target_value": "north-a north-b",
                                              "max_unavailable": "1", "gate_seconds": "0", "waves": "2"},
                        page="/releases")
    assert planned.status_code == 302, planned.get_data(as_text=True)
    for path in (planned.headers["Location"], "/releases"):
        text = client.get(path).get_data(as_text=True)
        assert "{&#39;" not in text and "{'" not in text, path
        assert "hubs north-a, north-b" in text, path


# 8 ----------------------------------------------------------------------------------------------------------------

def test_publishing_adding_and_saving_say_so(client, north, login):
    _, operator, _ = north
    login(client, operator)
    published = form_post(client, "/releases", {"name": "today", "jupyterhub_version": "5.4.6",
                                                "channel": "stable"})
    assert published.status_code == 302
    assert "Release today published" in client.get(published.headers["Location"]).get_data(as_text=True)
    added = form_post(client, "/institutions", {"slug": "south", "name": "South College"})
    assert "South College added" in client.get(added.headers["Location"]).get_data(as_text=True)
    saved = form_post(client, "/institutions/north/blackouts",
                      {"blackouts": "2026-12-14T00:00 | 2026-12-20T23:59 | final exams"}, page="/institutions/north")
    assert saved.status_code == 302
    assert "Blackout windows saved" in client.get(saved.headers["Location"]).get_data(as_text=True)


# 9 ----------------------------------------------------------------------------------------------------------------

def test_timestamps_read_one_way_everywhere(client, north, login, create_cluster):
    _, operator, headers = north
    client.post("/api/v1/releases", json={"name": "r1", "jupyterhub_version": "5.4.6"}, headers=headers)
    create_cluster("campus", backend="fake")
    login(client, operator)
    for path in ("/institutions/north", "/releases", "/releases/r1", "/clusters", "/clusters/campus",
                 "/account/sessions", "/account/tokens", "/people"):
        response = client.get(path)
        assert response.status_code == 200, path
        text = response.get_data(as_text=True)
        assert not TIMESTAMP.findall(text), (path, TIMESTAMP.findall(text))
    app_text = client.get("/institutions/north").get_data(as_text=True)
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", app_text)  # operations keep their seconds


# 10 ---------------------------------------------------------------------------------------------------------------

def test_counts_agree_with_their_nouns(client, north, login, api_headers):
    admin, operator, _ = north
    client.put("/api/v1/institutions/north/config", headers=api_headers(admin), json={
        "auth": {"authenticator_class": "dummy", "allowed_users": ["ann"]}, "environment": ENV})
    institution = db.session.execute(db.select(Institution).filter_by(slug="north")).scalar_one()
    institution.auth = {"authenticator_class": "dummy", "allowed_users": ["ann"], "admin_users": [],
                        "allow_all": False}
    institution.environment = {**ENV, "profiles": [{"display_name": "Small"}]}
    db.session.commit()
    login(client, operator)
    text = client.get("/institutions/north").get_data(as_text=True)
    assert "1 allowed user<" in text or "1 allowed user " in text or "1 allowed user\n" in text
    assert "1 profile" in text and "(s)" not in text
    destroy = client.get("/clusters/fast/destroy").get_data(as_text=True)
    assert "2 hubs still run here" in destroy and "(s)" not in destroy


# 11 ---------------------------------------------------------------------------------------------------------------

def test_the_favicon_is_ours_and_served(client, north, login):
    response = client.get("/favicon.svg")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert b"<svg" in response.data
    assert client.get("/favicon.ico").status_code == 200  # asked for by browsers on their own
    login(client, north[1])
    page = client.get("/institutions").get_data(as_text=True)
    assert '<link rel="icon" href="/favicon.svg" type="image/svg+xml">' in page


# 12 ---------------------------------------------------------------------------------------------------------------

def test_the_navigation_wraps_at_420_px_and_keeps_log_out(north, live_server, tmp_path):
    from playwright.sync_api import sync_playwright

    _, operator, _ = north
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 420, "height": 800})
            page.goto(f"{live_server}/login")
            page.fill("input[name=email]", operator.email)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{live_server}/")
            page.goto(f"{live_server}/institutions")
            page.screenshot(path=str(tmp_path / "nav-420.png"))
            box = page.get_by_role("button", name="Log out").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 420, box
            assert page.evaluate("document.documentElement.scrollWidth") <= 420
            for link in ("Fleet", "Institutions", "Clusters", "Releases", "Alerts", "People", "Account"):
                found = page.get_by_role("link", name=link, exact=True).bounding_box()
                assert found is not None and found["x"] + found["width"] <= 420, link
        finally:
            browser.close()
