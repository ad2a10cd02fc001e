"""Open in my hub, end to end: an /open link to a git repository served on loopback lands a member in their real
local hub, whose nbgitpuller (installed in the hub's environment) pulls the repository into their home.

The repository is served over git's smart HTTP protocol (``git http-backend`` behind a small HTTP server): nbgitpuller
clones with ``--depth 1``, which the dumb protocol cannot serve.  The browser is httpx, which runs no JavaScript, so
the test does what nbgitpuller's page script does: it reads the page's ``data-*`` attributes and calls the
``git-pull/api`` event stream with them."""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlencode, urljoin, urlsplit

import httpx
import pytest

from console.extensions import db
from console.models import Hub
from console.services import memberships
from tests.console.test_people import Browser
from tests.helpers import wait_for

# One database: what these steps store is tested on SQLite and PostgreSQL by the console's own tests; the real hubs
# are the point here, and they run the same on either.
pytestmark = [pytest.mark.timeout(300), pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
NOTEBOOK = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# Week 1"]}], "metadata": {},
            "nbformat": 4, "nbformat_minor": 5}


def git(*args, cwd=None):
    subprocess.run(["git", "-c", "user.name=Instructor", "-c", "user.email=instructor@example.org", *args],
                   cwd=cwd, check=True, capture_output=True)


def make_repository(root):
    """A bare repository ``<root>/course.git`` whose branch main holds week1/intro.ipynb."""
    work = root / "work"
    (work / "week1").mkdir(parents=True)
    (work / "week1" / "intro.ipynb").write_text(json.dumps(NOTEBOOK))
    git("init", "-q", "--bare", "-b", "main", str(root / "served" / "course.git"))
    git("init", "-q", "-b", "main", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "Week 1", cwd=work)
    git("push", "-q", str(root / "served" / "course.git"), "main", cwd=work)


def serve_git(project_root) -> ThreadingHTTPServer:
    """git's smart HTTP protocol on 127.0.0.1: every request handed to ``git http-backend`` as CGI."""

    class GitHttp(BaseHTTPRequestHandler):
        def do_GET(self):
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(project_root), "GIT_HTTP_EXPORT_ALL": "1",
                   "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(length),
                   "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                   "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "REMOTE_ADDR": "127.0.0.1"}
            done = subprocess.run(["git", "http-backend"], input=self.rfile.read(length), env=env,
                                  capture_output=True)
            head, _, body = done.stdout.partition(b"\r\n\r\n")
            headers = [line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line]
            self.send_response(next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200))
            for key, value in headers:
                if key.lower() != "status":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), GitHttp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def wait_operation(client, headers, op_id, timeout=120):
    op = wait_for(lambda: (o := client.get(f"/api/v1/operations/{op_id}", headers=headers).get_json())["state"]
                  in ("succeeded", "failed") and o, timeout, what=f"operation {op_id}")
    assert op["state"] == "succeeded", "\n".join(op["log"])
    return op


def log_in_to_hub(browser: httpx.Client, page: httpx.Response, username: str, password: str) -> httpx.Response:
    """Fill in the hub's login form ``page`` (it carries where to go next)."""
    action = html.unescape(re.search(r'<form[^>]* action="([^"]+)"', page.text).group(1))
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    return browser.post(urljoin(str(page.url), action), data={"username": username, "password": password, "_xsrf": xsrf})


def pull_as_the_page_does(browser: httpx.Client, page: httpx.Response) -> tuple[list[dict], dict]:
    """Call nbgitpuller's event stream as its page script would, with the page's own data; returns the events until
    the pull finished or failed, and the page's data."""
    data = {key: unquote(html.unescape(value)) for key, value in re.findall(r'data-([a-z-]+)="([^"]*)"', page.text)}
    query = {"_xsrf": data["xsrf"], "repo": data["repo"], "targetpath": data["targetpath"],
             **({"branch": data["branch"]} if "branch" in data else {})}
    events = []
    api = urljoin(str(page.url), f"{data['base-url']}git-pull/api?{urlencode(query)}")
    with browser.stream("GET", api, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1]["phase"] in ("finished", "error"):
                    break
    return events, data


def test_an_open_link_lands_in_the_members_hub_with_the_files_pulled(app, client, local_fleet, worker_thread,
                                                                      create_user, tmp_path):
    make_repository(tmp_path)
    server = serve_git(tmp_path / "served")
    try:
        repo = f"http://127.0.0.1:{server.server_address[1]}/course.git"
        headers = local_fleet
        created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north",
                                                    "cluster": "local"}, headers=headers)
        admin = created.get_json()["first_admin"]  # the hub's one login: the person below has its username
        wait_operation(client, headers, created.get_json()["operation"])
        person = create_user("member", email=f"{admin['username']}@north.example")
        assert person.username == admin["username"]
        hub = db.session.execute(db.select(Hub).filter_by(slug="north-lab")).unique().scalar_one()
        memberships.grant(person, hub=hub, source="operator")
        db.session.commit()

        link = "/open?" + urlencode({"repo": repo, "path": "week1/intro.ipynb"})
        sent = Browser(app, person).get(link)
        assert sent.status_code == 302
        pull_link = sent.headers["Location"]
        assert pull_link.startswith(hub.url + "hub/user-redirect/git-pull?")

        name = person.username
        with httpx.Client(follow_redirects=True, timeout=10) as browser:
            login_page = browser.get(pull_link)
            assert urlsplit(str(login_page.url)).path == "/hub/login"
            log_in_to_hub(browser, login_page, name, admin["password"])
            started = browser.post(f"{hub.url}hub/api/users/{name}/server",
                                   headers={"X-XSRFToken": browser.cookies.get("_xsrf", path="/hub/")})
            assert started.status_code in (201, 202), started.text
            wait_for(lambda: (browser.get(f"{hub.url}hub/api/users/{name}").json()["servers"].get("") or {})
                     .get("ready"), 90, interval=0.5, what="the member's server")

            page = browser.get(pull_link)  # the hub sends it on to the person's own server
            assert page.status_code == 200 and urlsplit(str(page.url)).path == f"/user/{name}/git-pull"
            events, data = pull_as_the_page_does(browser, page)
            assert events[-1]["phase"] == "finished", events
            assert (data["repo"], data["targetpath"], data["path"]) == (repo, "course",
                                                                         "lab/tree/course/week1/intro.ipynb")

            model = browser.get(f"{hub.url}user/{name}/api/contents/course/week1/intro.ipynb")
            assert model.status_code == 200, model.text
            assert model.json()["type"] == "notebook" and model.json()["content"]["cells"][0]["source"] == "# Week 1"
            assert browser.get(f"{hub.url}user/{name}/{data['path']}").status_code == 200  # where the page goes
        wait_operation(client, headers, client.delete("/api/v1/hubs/north-lab", headers=headers).get_json()["operation"])
    finally:
        server.shutdown()
        server.server_close()
