"""Talk to a real JupyterHub the way a student's browser does."""
from __future__ import annotations

import re

import httpx

from tests.helpers import wait_for


def login_and_start_server(hub_url: str, username: str, password: str, timeout: float = 90) -> httpx.Response:
    """Log into the hub's login form, start the user's server, open JupyterLab; returns the Lab page response."""
    with httpx.Client(base_url=hub_url, follow_redirects=True, timeout=10) as browser:
        form = browser.get("hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text).group(1)
        home = browser.post("hub/login", data={"username": username, "password": password, "_xsrf": xsrf})
        assert home.status_code == 200 and "/hub/home" in str(home.url) or "/hub/spawn" in str(home.url), home.url
        started = browser.post(f"hub/api/users/{username}/server",
                               headers={"X-XSRFToken": browser.cookies.get("_xsrf", path="/hub/")})
        assert started.status_code in (201, 202), started.text

        def ready():
            model = browser.get(f"hub/api/users/{username}").json()
            server = model.get("servers", {}).get("")
            return server and server.get("ready")

        wait_for(ready, timeout, interval=0.5, what=f"{username}'s server to be ready")
        return browser.get(f"user/{username}/lab")


def publish_ready(client, headers, timeout: float = 300, **release) -> dict:
    """Publish a release through the API and wait (a worker must be running) until its preparation ends; fails the
    test unless it became ready.  Returns the release."""
    published = client.post("/api/v1/releases", json=release, headers=headers)
    assert published.status_code == 201, published.get_json()
    name = release["name"]
    done = wait_for(lambda: (r := client.get(f"/api/v1/releases/{name}", headers=headers).get_json())["state"]
                    != "preparing" and r, timeout, interval=0.5, what=f"release {name} prepared")
    assert done["state"] == "ready", done["error"]
    return done
