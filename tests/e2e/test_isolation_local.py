"""Hub users kept apart, with real JupyterHubs and real single-user servers: code a hub user runs reads nothing of the
console, of another hub or of another user, and runs as a system account of its own.

The console's data dir is put where every account may reach it (the pytest tmp dir is private to root), so what keeps
hub users out is the console's own file modes, not where the test happens to run.
"""
import json
import os
import pwd
import re
import stat
import uuid
from pathlib import Path

import httpx
import pytest
import websocket

from clusters import local
from console import create_app
from console.services.institutions import ensure_local_cluster
from tests.e2e.test_local_hubs import wait_operation
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def database_url():
    return None  # the console's default: SQLite in its data dir, whose file hub users must not read


@pytest.fixture
def config(config, public_tmp):
    return {**config, "DATA_DIR": str(public_tmp / "data"), "SECRET_KEY": None}


PROBE = """
import json, os, subprocess
def attempt(path):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").read(1)
        return "read"
    except PermissionError:
        return "denied"
    except FileNotFoundError:
        return "missing"
home = os.path.expanduser("~")
with open(os.path.join(home, "mine.txt"), "w") as out:
    out.write("my own file")
print(json.dumps({"uid": subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip(),
                  "own": attempt(os.path.join(home, "mine.txt")), "paths": {p: attempt(p) for p in PATHS}}))
"""


def run_in_kernel(server_url: str, token: str, code: str) -> str:
    """Start a kernel on the user's server (REST), run ``code`` in it (websocket), return what it printed."""
    headers = {"Authorization": f"token {token}"}
    kernel = httpx.post(server_url + "api/kernels", json={}, headers=headers, timeout=30)
    assert kernel.status_code == 201, kernel.text
    socket = websocket.create_connection(
        server_url.replace("http://", "ws://") + f"api/kernels/{kernel.json()['id']}/channels",
        header=[f"Authorization: token {token}"], timeout=60)
    try:
        msg_id = uuid.uuid4().hex
        socket.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "", "session": uuid.uuid4().hex,
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "allow_stdin": False}}))
        printed = []
        while True:
            message = json.loads(socket.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                raise AssertionError("\n".join(message["content"]["traceback"]))
            elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return "".join(printed)
    finally:
        socket.close()


def start_server(hub_url: str, headers: dict, user: str) -> None:
    assert httpx.post(f"{hub_url}hub/api/users/{user}/server", headers=headers, timeout=30).status_code in (201, 202)
    wait_for(lambda: httpx.get(f"{hub_url}hub/api/users/{user}", headers=headers, timeout=10).json()
             .get("servers", {}).get("", {}).get("ready"), 90, interval=0.5, what=f"{user}'s server")


def test_a_hub_users_code_reads_nothing_of_the_console_another_hub_or_another_user(app, client, ctx,
                                                                                   create_institution, create_user,
                                                                                   api_headers, worker_thread):
    create_institution("north")
    create_institution("south")
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    headers = api_headers(create_user("operator"))
    hubs = {}
    for slug, institution in (("north-lab", "north"), ("south-lab", "south")):
        created = client.post("/api/v1/hubs", json={"slug": slug, "institution": institution, "cluster": "local"},
                              headers=headers).get_json()
        wait_operation(client, headers, created["operation"])
        hubs[slug] = {**client.get(f"/api/v1/hubs/{slug}", headers=headers).get_json(), **created}
    data_dir = Path(app.config["DATA_DIR"])
    north_dir, south_dir = (data_dir / "clusters" / "local" / "hubs" / slug for slug in ("north-lab", "south-lab"))
    url = hubs["north-lab"]["url"]

    # North's first admin logs in with the credential shown at creation and asks the hub for a token
    admin = hubs["north-lab"]["first_admin"]
    with httpx.Client(base_url=url, timeout=10) as browser:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', browser.get("hub/login").text).group(1)
        logged_in = browser.post("hub/login", data={"username": admin["username"], "password": admin["password"],
                                                    "_xsrf": xsrf})
        made = browser.post(f"hub/api/users/{admin['username']}/tokens", json={"note": "test"},
                            headers={"X-XSRFToken": browser.cookies.get("_xsrf", path="/hub/")})
    assert logged_in.status_code == 302 and made.status_code == 201, made.text
    token = made.json()["token"]
    # another user of the same hub, made and started as the console's synthetic check does (no login needed)
    check = {"Authorization": f"token {local.LocalBackend._read_token(north_dir, local.CHECK_SERVICE)}"}
    assert httpx.post(f"{url}hub/api/users/ada", headers=check, timeout=10).status_code == 201
    start_server(url, check, "ada")
    start_server(url, {"Authorization": f"token {token}"}, admin["username"])

    accounts = {entry.pw_name.rsplit("-", 1)[0]: entry for entry in local.hub_accounts(north_dir)}
    assert set(accounts) == {"hf-north-lab-first-admin", "hf-north-lab-ada"}
    ada_home = Path(accounts["hf-north-lab-ada"].pw_dir)
    assert stat.S_IMODE(ada_home.stat().st_mode) == 0o700 and ada_home.stat().st_uid == accounts[
        "hf-north-lab-ada"].pw_uid
    secret_paths = [data_dir, data_dir / "secret_key", data_dir / "encryption_key", data_dir / "hubfleet.sqlite",
                    data_dir / "clusters", south_dir, south_dir / "settings.json", south_dir / "jupyterhub_config.py",
                    south_dir / "jupyterhub.sqlite", south_dir / "hub.log", north_dir / "settings.json",
                    ada_home, ada_home / ".bashrc"]
    assert all(path.exists() for path in secret_paths)
    printed = run_in_kernel(f"{url}user/{admin['username']}/", token,
                            f"PATHS = {[str(p) for p in secret_paths]!r}\n" + PROBE)
    found = json.loads(printed.strip().splitlines()[-1])
    assert found["own"] == "read"  # the probe itself works: its user reads its own files
    assert found["paths"] == {str(path): "denied" for path in secret_paths}
    assert found["uid"] == str(accounts["hf-north-lab-first-admin"].pw_uid) != "0"

    # deleting the hub removes its users' accounts, their homes and whatever they ran
    admin_home = Path(accounts["hf-north-lab-first-admin"].pw_dir)
    wait_operation(client, headers, client.delete("/api/v1/hubs/north-lab", headers=headers).get_json()["operation"])
    assert local.hub_accounts(north_dir) == [] and not ada_home.exists() and not admin_home.exists()
    for entry in accounts.values():
        with pytest.raises(KeyError):
            pwd.getpwnam(entry.pw_name)
    wait_operation(client, headers, client.delete("/api/v1/hubs/south-lab", headers=headers).get_json()["operation"])


def test_the_consoles_data_dir_is_its_own_but_release_environments_are_for_everyone(public_tmp):
    data_dir = public_tmp / "fresh"
    app = create_app({"TESTING": True, "DATA_DIR": str(data_dir), "DATABASE_URL": None, "SECRET_KEY": None,
                      "RELEASE_ENVIRONMENTS": None})
    from clusters.environments import build_state, start_build

    with app.app_context():
        from console.extensions import db

        db.engine.connect().close()  # SQLite opens (and keeps the mode of) the file made for it
        db.engine.dispose()
    start_build("9.9.9", app.config["RELEASE_ENVIRONMENTS"])  # a version pip refuses: only the directory stays
    assert stat.S_IMODE(os.stat(app.config["RELEASE_ENVIRONMENTS"]).st_mode) == 0o755
    wait_for(lambda: build_state("9.9.9", app.config["RELEASE_ENVIRONMENTS"])[0] == "failed", 120,
             what="the build to fail")
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in [data_dir, *data_dir.iterdir()]}
    assert modes == {"fresh": 0o711, "secret_key": 0o600, "encryption_key": 0o600, "hubfleet.sqlite": 0o600,
                     "terraform": 0o700, "clusters": 0o700, "environments": 0o755}


def test_the_first_admin_is_shown_once_never_in_the_clear_and_gone_once_the_institution_has_a_login(
        client, create_institution, create_cluster, create_user, api_headers):
    from console.extensions import db
    from console.models import AuditEvent

    north = create_institution("north")
    create_institution("south").auth = {"authenticator_class": "github", "client_id": "x", "allow_all": True}
    db.session.commit()
    create_cluster("fast")
    headers = api_headers(create_user("operator"))
    created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "fast"},
                          headers=headers)
    password = created.get_json()["first_admin"]["password"]
    rendered = client.get("/api/v1/hubs/north-lab/rendered?target=local", headers=headers).get_json()["config"]
    assert rendered["JupyterHub"]["authenticator_class"] == "hubfleet-first-admin"
    assert rendered["FirstAdminAuthenticator"]["admin_username"] == "first-admin"
    assert rendered["FirstAdminAuthenticator"]["admin_password_hash"] == "********"
    answers = [client.get(path, headers=headers).get_data(as_text=True) for path in
               ("/api/v1/hubs/north-lab", "/api/v1/hubs", "/api/v1/hubs/north-lab/rendered?target=z2jh")]
    audit = " ".join(str(e.detail) for e in db.session.execute(db.select(AuditEvent)).scalars())
    assert not [text for text in [*answers, audit] if password in text or "scrypt$" in text]
    # a hub of an institution with a login of its own gets no first admin
    other = client.post("/api/v1/hubs", json={"slug": "south-lab", "institution": "south", "cluster": "fast"},
                        headers=headers)
    assert other.status_code == 202 and other.get_json()["first_admin"] is None

    north.auth = {"authenticator_class": "github", "client_id": "x", "allow_all": True}  # as a finished rollout does
    db.session.commit()
    rendered = client.get("/api/v1/hubs/north-lab/rendered?target=local", headers=headers).get_json()["config"]
    assert rendered["JupyterHub"]["authenticator_class"] == "github" and "FirstAdminAuthenticator" not in rendered
