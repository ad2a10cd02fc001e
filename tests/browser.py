"""The console served for a real browser: a threaded HTTP server of the test's app, Debian's Chromium (installed by
``make setup-test``) driven by Playwright, and a page that records what a person would not see (script errors,
warnings, Content-Security-Policy violations)."""
from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server


@pytest.fixture
def live_server(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)
    server.server_close()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        yield browser
        browser.close()


def watched(page) -> list[str]:
    """What goes wrong on ``page`` from now on: console errors and warnings, uncaught errors, policy violations."""
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"{page.url}: {message.text} {message.location}")
            if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                         "console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI))")
    return problems


def log_in(page, live_server: str, email: str, lands_on: str = "/") -> None:
    """Log in on the console's form with the tests' password."""
    from tests.conftest import PASSWORD

    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server}{lands_on}")
