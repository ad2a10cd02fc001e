"""Troubleshooting on the hub page: the end of the hub's log (secrets blanked for everyone, server paths for
institution admins), the running servers the monitoring last saw, the link to the hub's own admin page.

Pages and API go through HTTP as separate browsers; hubs run on the fake backend, whose log a test writes to
(``FakeBackend.write_log``).  Each backend's ``log_tail`` is checked on its own: the local one on a real log file, the
Kubernetes one against the API emulator (``tests/k8s/emulator.py``).
"""
from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

import pytest

from clusters.base import LOG_TAIL_BYTES, get_backend
from clusters.kubernetes import KubernetesBackend
from clusters.local import LocalBackend
from clusters.testing import FakeBackend
from console.extensions import db
from console.models import Hub, ServerSnapshot, utcnow
from console.services import config as config_service
from console.services.troubleshooting import MASK, MAX_LINE, PATH_MASK, redact, secret_values, server_paths
from tests.console.test_people import Browser

TOKEN = "0af1b2c3d4e5f60718293a4b5c6d7e8f"


# -- redaction, on its own ------------------------------------------------------------------------------------------

def test_every_secret_value_is_blanked_in_each_form_it_takes():
    secrets = secret_values({"GenericOAuthenticator": {"client_secret": "p@ss word/+"},
                             "JupyterHub": {"services": [{"api_token": TOKEN}]}, "pin": "ab1"})
    lines = redact(["client_secret=p@ss word/+ ok", "posted p%40ss+word%2F%2B", '{"s": "p@ss word/+"}',
                    f"service token {TOKEN} loaded", "hab1t ab1 stays short", ""], secrets)
    assert lines == [f"client_secret={MASK} ok", f"posted {MASK}", f'{{"s": "{MASK}"}}',
                     f"service token {MASK} loaded", f"hab1t {MASK} stays short", ""]


def test_credentials_in_headers_and_urls_are_blanked_without_knowing_them():
    lines = redact([
        "302 GET /hub/oauth_callback?code=Zm9vYmFy&state=eyJzdGF0ZSI6 -> /hub/spawn (alice@10.0.0.5) 12ms",
        "200 GET /hub/api/users?state=active (idle-culler@127.0.0.1)",
        "\x1b[32minfo\x1b[39m: 200 GET /api/routes\r",
        "GET /hub/api/users?token=abcdef123456 200",
        "headers: {'Authorization': 'token abcdef123456', 'Accept': 'application/json'}",
        "Authorization: Bearer eyJhbGciOi.payload.sig",
        '{"access_token": "ya29.secret", "expires_in": 3600}',
        "status_code=500 and exit code 1 stay",
    ], [])
    assert lines == [
        f"302 GET /hub/oauth_callback?code={MASK}&state=eyJzdGF0ZSI6 -> /hub/spawn (alice@10.0.0.5) 12ms",
        "200 GET /hub/api/users?state=active (idle-culler@127.0.0.1)",  # OAuth's state proves nothing alone
        "info: 200 GET /api/routes",  # configurable-http-proxy's colours dropped
        f"GET /hub/api/users?token={MASK} 200",
        f"headers: {{'Authorization': 'token {MASK}', 'Accept': 'application/json'}}",
        f"Authorization: Bearer {MASK}",
        f'{{"access_token": "{MASK}", "expires_in": 3600}}',
        "status_code=500 and exit code 1 stay"]


def test_server_paths_are_kept_for_operators_and_replaced_for_others():
    lines = ['Loading config from /srv/hubfleet/data/clusters/local/hubs/north/jupyterhub_config.py',
             'File "/usr/lib/python3/dist-packages/jupyterhub/app.py", line 3211, in launch_instance',
             "spawning in /home/hf-north-alice-1a2b for alice", "cd /root; GET /hub/home 200; /user/alice/lab",
             "venv /opt/venvs/hubfleet/bin/python"]
    assert redact(lines, [], None) == lines  # operators
    admin = redact(lines, [], ["/srv/hubfleet/data", "/opt/venvs/hubfleet/"])
    assert admin == [f"Loading config from {PATH_MASK}/jupyterhub_config.py",
                     f'File "{PATH_MASK}/app.py", line 3211, in launch_instance',
                     f"spawning in {PATH_MASK} for alice", f"cd {PATH_MASK}; GET /hub/home 200; /user/alice/lab",
                     f"venv {PATH_MASK}"]


def test_a_long_line_is_cut_after_blanking_so_no_part_of_a_secret_shows():
    secret = "k" * 40
    [line] = redact(["x" * (MAX_LINE - 4) + secret], [secret])
    assert len(line) == MAX_LINE and "k" not in line


# -- the page and the API -------------------------------------------------------------------------------------------

@pytest.fixture
def fleet(ctx, create_institution, create_cluster, create_user, api_headers, run_worker):
    """North (hub north-lab) and South (hub south-lab) on the fake backend, running; an operator, North's admin and
    South's admin, each with a browser."""
    north, south = create_institution("north", "North College"), create_institution("south", "South University")
    create_cluster("fast", backend="fake")
    operator = create_user("operator")
    api = Browser(ctx)
    headers = api_headers(operator)
    for slug, inst in (("north-lab", "north"), ("south-lab", "south")):
        response = api.open("/api/v1/hubs", method="POST", headers=headers,
                            json={"slug": slug, "institution": inst, "cluster": "fast"})
        assert response.status_code == 202, response.get_json()
    run_worker()
    hubs = {h.slug: h for h in db.session.execute(db.select(Hub)).unique().scalars()}
    assert {h.state for h in hubs.values()} == {"running"}
    admin = create_user("institution_admin", institution=north)
    south_admin = create_user("institution_admin", institution=south)
    yield {"hubs": hubs, "api": api, "operator": Browser(ctx, operator), "admin": Browser(ctx, admin),
           "south_admin": Browser(ctx, south_admin), "headers": {"operator": headers, "admin": api_headers(admin),
                                                                  "south_admin": api_headers(south_admin)}}
    for slug in hubs:
        get_backend("fake").remove({"slug": slug}, lambda line: None)  # the fake's log goes with the hub


FRAGMENT = {"HX-Request": "true"}


def write_hostile_log(ctx, hub: Hub) -> str:
    """Lines a hub might write: a secret of its config, a credential, a server path, HTML; returns the secret."""
    secret = config_service.hub_spec(hub).secrets["FirstAdminAuthenticator"]["admin_password_hash"]
    FakeBackend.write_log(hub.slug,
                          f"[D] first admin hash {secret}",
                          "[I] 302 GET /hub/oauth_callback?code=Zm9vYmFy -> /hub/spawn",
                          f"[I] Writing cookie secret to {ctx.config['DATA_DIR']}/clusters/local/hubs/x/cookie",
                          "[W] bad username <script>alert('hub')</script>")
    return secret


def test_operators_read_the_log_with_paths_and_without_secrets(ctx, fleet):
    secret = write_hostile_log(ctx, fleet["hubs"]["north-lab"])
    fragment = fleet["operator"].get("/hubs/north-lab/log", headers=FRAGMENT)
    html = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and html.lstrip().startswith('<div id="hub-log">')
    assert "JupyterHub is now running at http://north-lab.fake.invalid/" in html
    assert secret not in html and f"first admin hash {MASK}" in html and "Zm9vYmFy" not in html
    assert f"{ctx.config['DATA_DIR']}/clusters/local/hubs/x/cookie" in html  # operators see paths
    assert "<script>" not in html and "&lt;script&gt;alert(&#39;hub&#39;)&lt;/script&gt;" in html
    assert 'id="hub-log-source"' in html
    page = fleet["operator"].get("/hubs/north-lab/log").get_data(as_text=True)  # without htmx: a page of its own
    assert "<h1>Log of north-lab</h1>" in page and f"first admin hash {MASK}" in page and secret not in page


def test_institution_admins_read_neither_secrets_nor_server_paths(ctx, fleet):
    secret = write_hostile_log(ctx, fleet["hubs"]["north-lab"])
    for response in (fleet["admin"].get("/hubs/north-lab/log", headers=FRAGMENT),
                     fleet["api"].get("/api/v1/hubs/north-lab/log", headers=fleet["headers"]["admin"])):
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        assert secret not in text and "Zm9vYmFy" not in text
        assert ctx.config["DATA_DIR"] not in text and f"Writing cookie secret to {PATH_MASK}" in text
    body = fleet["api"].get("/api/v1/hubs/north-lab/log", headers=fleet["headers"]["admin"]).get_json()
    assert body["source"] == "" and body["lines"][-1] == "[W] bad username <script>alert('hub')</script>"
    operator = fleet["api"].get("/api/v1/hubs/north-lab/log", headers=fleet["headers"]["operator"]).get_json()
    assert operator["source"] == "fake log of north-lab" and len(operator["lines"]) == 6


def test_another_institutions_admin_gets_404_for_the_log_everywhere(fleet):
    assert fleet["south_admin"].get("/hubs/north-lab/log", headers=FRAGMENT).status_code == 404
    assert fleet["south_admin"].get("/hubs/north-lab/log").status_code == 404
    assert fleet["api"].get("/api/v1/hubs/north-lab/log",
                            headers=fleet["headers"]["south_admin"]).status_code == 404
    assert fleet["south_admin"].get("/hubs/south-lab/log", headers=FRAGMENT).status_code == 200


def test_the_hub_page_lists_running_servers_and_links_the_hubs_admin_page(fleet):
    hub = fleet["hubs"]["north-lab"]
    now = utcnow().replace(microsecond=0)
    db.session.add_all([
        ServerSnapshot(hub_id=hub.id, username="ada", state="running", started=now - timedelta(hours=2),
                       last_activity=now - timedelta(minutes=3), seen_at=now),
        ServerSnapshot(hub_id=hub.id, username="grace", state="pending", started=now, seen_at=now),
        ServerSnapshot(hub_id=hub.id, username="linus", state="stopped", last_activity=now, seen_at=now),
        ServerSnapshot(hub_id=fleet["hubs"]["south-lab"].id, username="ken", state="running", seen_at=now)])
    db.session.commit()
    for browser in (fleet["operator"], fleet["admin"]):
        page = browser.get("/hubs/north-lab").get_data(as_text=True)
        section = page[page.index('<section id="hub-troubleshooting"'):]
        section = section[:section.index("</section>")]
        assert '<a id="hub-admin-link" href="http://north-lab.fake.invalid/hub/admin">' in section
        assert 'hx-get="/hubs/north-lab/log" hx-trigger="load"' in section
        rows = section[section.index('<table id="hub-servers">'):]
        assert rows.index('data-user="ada"') < rows.index('data-user="grace"')  # most recently active first
        assert (now - timedelta(minutes=3)).strftime("%Y-%m-%d %H:%M:%S UTC") in rows
        assert 'data-user="linus"' not in rows and 'data-user="ken"' not in rows
    hub.url = None
    db.session.commit()
    page = fleet["operator"].get("/hubs/north-lab").get_data(as_text=True)
    assert 'id="hub-admin-link"' not in page and "its admin page cannot be opened" in page


def test_a_hub_never_deployed_says_why_it_has_no_log(ctx, fleet):
    hub = fleet["hubs"]["north-lab"]
    hub.backend_state = {}
    db.session.commit()
    html = fleet["operator"].get("/hubs/north-lab/log", headers=FRAGMENT).get_data(as_text=True)
    assert '<p class="muted" id="hub-log-reason">The hub was never deployed, so it has no log yet.</p>' in html


# -- each backend's log_tail ----------------------------------------------------------------------------------------

def test_the_local_backend_reads_only_the_end_of_a_long_log_and_blanks_its_tokens(tmp_path):
    backend = LocalBackend(str(tmp_path / "hubs"))
    hub_dir = tmp_path / "hubs" / "north"
    state = {"dir": str(hub_dir)}
    assert backend.log_tail({}).reason == "the hub was never deployed, so it has no log yet"
    hub_dir.mkdir(parents=True)
    assert "not been started" in backend.log_tail(state).reason
    (hub_dir / "settings.json").write_text(json.dumps(
        {"JupyterHub": {"services": [{"name": "hubfleet", "api_token": TOKEN}]}}))
    lines = [f"line {n} " + "." * 60 for n in range(5000)]  # about 350 KB
    (hub_dir / "hub.log").write_text("\n".join(lines[:-1] + [f"token {TOKEN} used"]) + "\n")
    tail = backend.log_tail(state, 50)
    assert tail.lines == lines[-50:-1] + ["token ******** used"]
    assert tail.source == str(hub_dir / "hub.log") and tail.reason == ""
    whole = backend.log_tail(state, 10_000).lines  # never more than the last LOG_TAIL_BYTES, and no cut line
    assert 0 < len(whole) < 5000 and whole[0] in lines and sum(len(line) + 1 for line in whole) <= LOG_TAIL_BYTES
    os.chmod(hub_dir / "hub.log", 0)
    if os.geteuid() != 0:  # root reads it anyway
        assert backend.log_tail(state).reason.startswith("the hub's log cannot be read")


def test_the_kubernetes_backend_reads_the_hub_pods_log(kube_api):
    namespace = "hub-42"
    kube_api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
                  "status": {"phase": "Active"}})
    state = {"namespace": namespace, "release": "hub-42"}

    def pod(name, phase, created, containers=("hub",), component="hub", **status):
        kube_api.put({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": name, "namespace": namespace, "creationTimestamp": created,
            "labels": {"app": "jupyterhub", "component": component}},
            "spec": {"containers": [{"name": c, "image": "quay.io/jupyterhub/k8s-hub:4.2.0"} for c in containers]},
            "status": {"phase": phase, **status}})

    with KubernetesBackend(kubeconfig=kube_api.kubeconfig()) as backend:
        assert backend.log_tail({}).reason == "the hub was never deployed, so it has no log yet"
        assert backend.log_tail(state).reason == f"the hub has no pod in namespace {namespace} yet"
        pod("jupyter-alice", "Running", "2026-01-01T00:00:00Z", component="singleuser-server")
        pod("hub-old", "Running", "2026-01-01T00:00:00Z")
        pod("hub-new", "Pending", "2026-01-02T00:00:00Z", containers=("hub", "sidecar"))
        kube_api.set_log(namespace, "hub-old", "".join(f"[I] line {n}\n" for n in range(500)))
        tail = backend.log_tail(state, 3)
        assert tail.lines == ["[I] line 497", "[I] line 498", "[I] line 499"]
        assert tail.source == f"Pod {namespace}/hub-old"
        [asked] = [r for r in kube_api.requests if r.path.endswith("/log")]
        assert asked.path == f"/api/v1/namespaces/{namespace}/pods/hub-old/log" and asked.params == {"tailLines": "3"}
        kube_api.delete("Pod", "hub-old", namespace)
        assert backend.log_tail(state).reason == "the hub's pod has logged nothing yet"
        assert kube_api.requests[-1].params == {"tailLines": "200", "container": "hub"}  # two containers: name it
        # crashing: the container waits to be restarted, and its previous run's log says why
        pod("hub-crash", "Running", "2026-01-03T00:00:00Z", containerStatuses=[{
            "name": "hub", "restartCount": 3, "ready": False, "image": "k8s-hub:4.2.0", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
        kube_api.set_log(namespace, "hub-crash", "ValueError: Found undefined service idle-culler\n", previous=True)
        crashed = backend.log_tail(state)
        assert crashed.lines == ["ValueError: Found undefined service idle-culler"]
        assert crashed.reason == "the hub's container is not running (restarted 3 times): these lines are from its " \
            "last run"
        assert kube_api.requests[-1].params == {"tailLines": "200", "previous": "true"}
    nowhere = kube_api.kubeconfig().replace(kube_api.url, "http://127.0.0.1:9")
    with KubernetesBackend(kubeconfig=nowhere, request_timeout=2) as unreachable:
        assert unreachable.log_tail(state).reason.startswith("the hub's log cannot be read: the cluster's API does")


def test_the_fake_backend_has_a_log_once_deployed():
    fake = get_backend("fake")
    assert fake.log_tail({}).lines == [] and fake.log_tail({}).reason
    state = {"deployed": True, "slug": "fake-log", "url": "http://fake-log.fake.invalid/"}
    FakeBackend.write_log("fake-log", "one", "two")
    try:
        assert fake.log_tail(state, 2).lines == ["one", "two"] and len(fake.log_tail(state).lines) == 4
    finally:
        fake.remove(state, lambda line: None)
    assert fake.log_tail(state).lines[-1].startswith("[I JupyterHub app] JupyterHub is now running")


def test_the_server_paths_blanked_for_admins_include_the_consoles_own(ctx, fleet):
    """Wherever the data dir and the Python environment are (not only under /srv, /home, ...), they are blanked."""
    paths = server_paths(fleet["hubs"]["north-lab"])
    assert ctx.config["DATA_DIR"] in paths and sys.prefix in paths and ctx.config["RELEASE_ENVIRONMENTS"] in paths
