"""Decommission of a real local hub whose two users wrote files, and its archive restored into a new hub.

One real JupyterHub (with system accounts per user: the tests run as root), two users whose servers write files into
their homes (through Jupyter's contents API: the server runs as the user's own account), then decommission through
the API: the archive holds the database and both homes (checked by listing and checksums), the hub's processes,
accounts and directory are gone; restored into a new hub, both users' servers read their files back, as accounts of
the new hub.
"""
import hashlib
import json
import re
import sqlite3
import tarfile
from pathlib import Path

import httpx
import psutil
import pytest

from clusters import local
from console.extensions import db
from console.models import Archive, User
from console.services import decommission
from console.services.institutions import ensure_local_cluster
from tests.e2e.test_isolation_local import start_server
from tests.e2e.test_local_hubs import wait_operation

pytestmark = pytest.mark.timeout(300)

FILES = {"ada": {"notes.txt": "ada's notes"}, "bob": {"work/thesis.md": "bob's thesis, chapter 1"}}


@pytest.fixture
def database_url():
    return None  # the console's default: SQLite in its data dir


@pytest.fixture
def config(config, public_tmp):
    return {**config, "DATA_DIR": str(public_tmp / "data"), "SECRET_KEY": None}


def admin_token(url: str, username: str, password: str) -> str:
    """Log in as the hub's first admin and make an API token (the admin may reach every user's server)."""
    with httpx.Client(base_url=url, timeout=10) as browser:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', browser.get("hub/login").text).group(1)
        assert browser.post("hub/login", data={"username": username, "password": password,
                                               "_xsrf": xsrf}).status_code == 302
        made = browser.post(f"hub/api/users/{username}/tokens", json={"note": "test"},
                            headers={"X-XSRFToken": browser.cookies.get("_xsrf", path="/hub/")})
    assert made.status_code == 201, made.text
    return made.json()["token"]


def write(url: str, token: str, user: str, files: dict[str, str]) -> None:
    """Save ``files`` in ``user``'s home through their server (it runs as their account, so they own them)."""
    with httpx.Client(base_url=f"{url}user/{user}/api/contents/", headers={"Authorization": f"token {token}"},
                      timeout=30) as contents:
        for name, text in files.items():
            if "/" in name:
                assert contents.put(name.rsplit("/", 1)[0], json={"type": "directory"}).status_code in (200, 201)
            saved = contents.put(name, json={"type": "file", "format": "text", "content": text})
            assert saved.status_code in (200, 201), saved.text


def read(url: str, token: str, user: str, name: str) -> str:
    got = httpx.get(f"{url}user/{user}/api/contents/{name}", params={"type": "file", "format": "text"},
                    headers={"Authorization": f"token {token}"}, timeout=30)
    assert got.status_code == 200, got.text
    return got.json()["content"]


def test_decommission_archives_both_homes_removes_the_hub_and_a_restore_gives_the_files_back(
        app, client, ctx, create_institution, create_user, api_headers, worker_thread):
    create_institution("north")
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    operator = create_user("operator")
    headers = api_headers(operator)
    created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                          headers=headers).get_json()
    wait_operation(client, headers, created["operation"])
    url = client.get("/api/v1/hubs/north-lab", headers=headers).get_json()["url"]
    token = admin_token(url, created["first_admin"]["username"], created["first_admin"]["password"])
    auth = {"Authorization": f"token {token}"}
    for user, files in FILES.items():
        assert httpx.post(f"{url}hub/api/users/{user}", headers=auth, timeout=10).status_code == 201
        start_server(url, auth, user)
        write(url, token, user, files)
    hub_dir = Path(app.config["DATA_DIR"]) / "clusters" / "local" / "hubs" / "north-lab"
    processes = list(local.LocalBackend.iter_processes(hub_dir))
    accounts = local.hub_accounts(hub_dir)
    assert len(processes) >= 4 and len(accounts) == 2  # hub, proxy, culler, two servers; ada's and bob's accounts

    approved = client.post("/api/v1/hubs/north-lab/decommission", headers=headers,
                           json={"action": "approve", "confirm": "north-lab", "reason": "the course ended"})
    assert approved.status_code == 200, approved.get_json()
    wait_operation(client, headers, approved.get_json()["operation"])

    # the hub is gone: processes, accounts with their homes, directory
    assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not hub_dir.exists() and local.hub_accounts(hub_dir) == []
    assert not any(Path(entry.pw_dir).exists() for entry in accounts)
    # the archive holds the database and both homes, as its listing and checksums say
    [listed] = client.get("/api/v1/archives", headers=headers).get_json()
    path = Path(listed["location"])
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert listed["size"] == path.stat().st_size and listed["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        assert {"manifest.json", "jupyterhub.sqlite", "homes/ada/notes.txt", "homes/bob/work/thesis.md"} <= names
        for user, files in FILES.items():
            for name, text in files.items():
                assert tar.extractfile(f"homes/{user}/{name}").read().decode() == text
        manifest = json.loads(tar.extractfile("manifest.json").read())
        database = tar.extractfile("jupyterhub.sqlite").read()
    assert hashlib.sha256(database).hexdigest() == manifest["database"]["sha256"] == listed["database"]["sha256"]
    copy = path.parent / "check.sqlite"
    copy.write_bytes(database)
    with sqlite3.connect(copy) as check:
        assert {"ada", "bob", "first-admin"} <= {row[0] for row in check.execute("SELECT name FROM users")}
    copy.unlink()
    assert {u["name"]: u["files"] >= len(FILES.get(u["name"], {})) for u in manifest["users"]} == {
        "ada": True, "bob": True, "first-admin": True}

    # restored into a new hub, both users find their files, as accounts of the new hub
    archive = db.session.get(Archive, listed["id"])
    op = decommission.restore(db.session.get(User, operator.id), archive, "north-lab-2", "north", "local")
    wait_operation(client, headers, op.id)
    url = client.get("/api/v1/hubs/north-lab-2", headers=headers).get_json()["url"]
    token = admin_token(url, *op.first_admin)
    auth = {"Authorization": f"token {token}"}
    new_dir = hub_dir.with_name("north-lab-2")
    for user, files in FILES.items():
        assert httpx.get(f"{url}hub/api/users/{user}", headers=auth, timeout=10).status_code == 200
        start_server(url, auth, user)
        assert {name: read(url, token, user, name) for name in files} == files
        [account] = [a for a in local.hub_accounts(new_dir) if a.pw_name.startswith(f"hf-north-lab-2-{user}-")]
        home = Path(account.pw_dir)
        assert home.stat().st_uid == account.pw_uid and home.stat().st_mode & 0o777 == 0o700
        assert all((home / name).stat().st_uid == account.pw_uid for name in files)
