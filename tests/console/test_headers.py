"""Security headers on every response, and pages that work under their Content-Security-Policy in a real browser."""
import base64
import hashlib
import re

import pytest

from console import ROOT
from tests.browser import log_in, watched

EXPECTED = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def policy(response) -> dict[str, str]:
    csp = response.headers["Content-Security-Policy"]
    return {part.split()[0]: " ".join(part.split()[1:]) for part in csp.split("; ")}


@pytest.fixture
def fleet(create_institution, create_cluster, create_user, api_headers, client, run_worker):
    north = create_institution("north")
    create_cluster("fast", backend="fake")
    operator = create_user("operator")
    client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "fast"},
                headers=api_headers(operator))
    run_worker()
    return {"operator": operator, "admin": create_user("institution_admin", institution=north),
            "headers": api_headers(operator)}


def test_every_kind_of_response_carries_the_headers(client, fleet, login):
    responses = {
        "login page": client.get("/login"),
        "healthz": client.get("/healthz"),
        "api": client.get("/api/v1/hubs", headers=fleet["headers"]),
        "api 401": client.get("/api/v1/hubs"),
        "api 404": client.get("/api/v1/hubs/nope", headers=fleet["headers"]),
        "api 422": client.post("/api/v1/hubs", json={}, headers=fleet["headers"]),
        "api 413": client.post("/api/v1/hubs", data="x" * (2 * 1024 * 1024), headers=fleet["headers"],
                               content_type="application/json"),
        "redirect to login": client.get("/"),
        "static": client.get("/static/htmx.min.js"),
    }
    login(client, fleet["operator"])
    responses["page"] = client.get("/")
    responses["page 404"] = client.get("/hubs/nope")
    responses["htmx fragment"] = client.get("/hubs/north-lab", headers={"HX-Request": "true"})
    for name, response in responses.items():
        for header, value in EXPECTED.items():
            assert response.headers.get(header) == value, (name, header)
        directives = policy(response)
        assert directives["frame-ancestors"] == "'none'", name
        assert directives["script-src"] == "'self'", name  # no inline script, no eval
        assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'", name
        assert "unsafe-inline" not in directives["style-src"] and "unsafe-eval" not in str(directives), name


def test_the_inline_stylesheet_is_allowed_by_its_hash_and_nothing_else_inline_is(client, fleet, login):
    login(client, fleet["operator"])
    response = client.get("/")
    css = re.search(r"<style>(.*?)</style>", response.get_data(as_text=True), re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert policy(response)["style-src"] == f"'self' 'sha256-{digest}'"
    assert "style-src" in policy(client.get("/api/v1/hubs", headers=fleet["headers"]))  # JSON: no inline style
    assert policy(client.get("/api/v1/hubs", headers=fleet["headers"]))["style-src"] == "'self'"


def test_templates_have_no_inline_script_or_event_handler():
    """What the policy would block: a new template with one fails here rather than silently in a browser."""
    for path in (ROOT / "templates").rglob("*.html"):
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag, f"{path}: inline <script>"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{path}: inline event handler"
        assert "javascript:" not in text and "hx-on" not in text, path
        assert "<style" not in text, f"{path}: a <style> element (use the inline_style filter)"


def test_pages_work_under_the_policy_in_chromium(fleet, live_server, browser):
    """Log in, let htmx poll the fleet and a hub, switch the login form with htmx: no policy violation, no error."""
    page = browser.new_page()
    problems = watched(page)
    log_in(page, live_server, fleet["admin"].email)
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"  # styled
    with page.expect_request(lambda r: r.url == f"{live_server}/" and r.headers.get("hx-request") == "true",
                             timeout=12000):
        pass  # the fleet table polls every 5 s
    page.goto(f"{live_server}/hubs/north-lab")
    with page.expect_request(lambda r: r.url.endswith("/hubs/north-lab") and r.headers.get("hx-request") == "true",
                             timeout=12000):
        pass
    page.goto(f"{live_server}/institutions/north/config")
    with page.expect_response(lambda r: r.url.endswith("/institutions/north/config") and r.request.method == "POST"):
        page.select_option("select[name='auth.authenticator_class']", "github")
    page.wait_for_selector("input[name='auth.client_id']")  # the form was swapped in for GitHub's fields
    page.goto(f"{live_server}/alerts")
    page.wait_for_timeout(500)
    assert problems == [], problems
    # And the policy does its job: a script injected into the page does not run.
    assert page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1'; "
                         "document.body.append(s); return window.ran === 1 }") is False
    page.wait_for_timeout(200)
    assert any("CSP violation: script-src-elem" in problem for problem in problems), problems
