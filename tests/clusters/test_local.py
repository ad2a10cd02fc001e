"""The local backend on its own, with real JupyterHub processes: deploy, status, alive, adopt, stop, remove.

No console and no database: what the backend promises to whoever drives it.  How long a stop takes is measured by
``tests/perf/bench_local_stop.py``; here a stop must end every process without having to kill one.
"""
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import httpx
import jupyterhub
import psutil
import pytest

from clusters.base import HubSpec
from clusters.local import MARKER, LocalBackend, hub_accounts, remove_account
from tenants.auth import first_admin
from tenants.layering import layered
from tenants.render import render_local
from tests.e2e.helpers import login_and_start_server
from tests.helpers import port_open, wait_for

pytestmark = pytest.mark.timeout(120)

# HUBFLEET_TEST_PORTS="first-last" keeps suites run side by side on one machine off each other's ports
PORTS = [int(p) for p in os.environ.get("HUBFLEET_TEST_PORTS", "21000-21999").split("-")]
# Where hub users' accounts cannot run this Python, hubs run from an environment: built once, kept across runs
ENVIRONMENTS = os.environ.get("HUBFLEET_TEST_ENVIRONMENTS",
                              str(Path(tempfile.gettempdir()) / "hubfleet-test-environments"))


def spec(slug: str, admin: dict | None = None, **extra) -> HubSpec:
    """The hub a new institution gets (closed: only ``admin``, its first admin, may log in; the idle culler as a
    managed service), plus ``extra`` sections."""
    config = layered(None, None, None, None)
    if admin:
        config["auth"]["first_admin"] = admin
    return HubSpec(slug=slug, institution="north", config={**render_local(config, {}), **extra})


@pytest.fixture
def backend(tmp_path):
    backend = LocalBackend(str(tmp_path / "hubs"), port_range=PORTS, environments=ENVIRONMENTS)
    yield backend
    for hub_dir in (tmp_path / "hubs").glob("*"):  # a failing test leaves no process behind
        if hub_dir.is_dir():
            backend._stop(hub_dir, lambda line: None)
    for account in hub_accounts(tmp_path, prefix=True):  # nor a system account
        remove_account(account, lambda line: None)


def ready(backend, state):
    return wait_for(lambda: (s := backend.status(state)).ready and s, 60, what="the hub to answer /hub/health")


def main_process(backend, state) -> psutil.Process:
    return backend._main_process(Path(state["dir"]), state["pid"])


def test_deploy_serves_and_reports_what_runs(backend):
    lines = []
    state = backend.deploy(spec("north-lab"), {}, lines.append)
    status = ready(backend, state)
    assert status.running and status.url == state["url"]
    assert status.version == jupyterhub.__version__ and status.users == 0
    assert backend.alive(state) is True
    assert httpx.get(state["url"] + "hub/health", timeout=5).status_code == 200
    # the console's read-only token is accepted by the hub for what probing needs, and only for that
    token = backend.api_token(state)
    assert httpx.get(backend.api_url(state) + "users", headers={"Authorization": f"token {token}"},
                     timeout=5).status_code == 200
    assert httpx.post(backend.api_url(state) + "users/someone", headers={"Authorization": f"token {token}"},
                      timeout=5).status_code == 403
    names = {" ".join(p.cmdline()) for p in backend.processes(Path(state["dir"]))}
    assert any("jupyterhub_idle_culler" in n for n in names) and any("configurable-http-proxy" in n for n in names)
    assert any(f"started JupyterHub (pid {state['pid']})" in line for line in lines)


def test_a_second_deploy_adopts_and_a_changed_config_restarts(backend):
    state = backend.deploy(spec("north-lab"), {}, lambda line: None)
    ready(backend, state)
    lines = []
    again = backend.deploy(spec("north-lab"), state, lines.append)
    assert again["pid"] == state["pid"] and again["ports"] == state["ports"]
    assert any("adopting it" in line for line in lines)

    changed = backend.deploy(spec("north-lab", Spawner={"default_url": "/tree"}), again, lines.append)
    assert changed["pid"] != state["pid"] and changed["ports"] == state["ports"]
    assert not psutil.pid_exists(state["pid"]) or psutil.Process(state["pid"]).status() == psutil.STATUS_ZOMBIE
    assert ready(backend, changed).ready and backend.alive(changed)


def test_stop_ends_every_process_without_killing_one(backend):
    # Started from a console that ignores SIGINT (as one started in the background by a shell does): JupyterHub
    # stops its managed services with SIGINT, and must not inherit the console's indifference to it.
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        state = backend.deploy(spec("north-lab"), {}, lambda line: None)
    finally:
        signal.signal(signal.SIGINT, ignored)
    ready(backend, state)
    processes = backend.processes(Path(state["dir"]))
    assert len(processes) >= 3  # JupyterHub, its proxy, the idle culler

    lines = []
    backend.stop(state, lines.append)
    assert lines == [f"stopping JupyterHub (pid {state['pid']})"]  # nothing had to be killed
    for proc in processes:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, proc
    assert backend.alive(state) is False
    assert not any(port_open(port) for port in state["ports"].values())
    status = backend.status(state)
    assert not status.running and not status.ready
    assert status.message.startswith("JupyterHub is not running; last lines of its log:")
    assert Path(state["dir"], "jupyterhub.sqlite").exists()  # a stop keeps the hub's data

    restarted = backend.deploy(spec("north-lab"), state, lambda line: None)
    assert ready(backend, restarted).ready and restarted["ports"] == state["ports"]


def test_a_killed_hub_is_not_alive_and_deploy_clears_what_it_left(backend):
    state = backend.deploy(spec("north-lab"), {}, lambda line: None)
    ready(backend, state)
    hub_dir = Path(state["dir"])
    main = main_process(backend, state)
    [proxy] = [p for p in main.children() if "configurable-http-proxy" in " ".join(p.cmdline())]
    [culler] = [p for p in main.children() if "jupyterhub_idle_culler" in " ".join(p.cmdline())]
    for proc in (main, proxy):
        proc.send_signal(signal.SIGKILL)
    wait_for(lambda: backend.alive(state) is False, 5, what="the killed hub seen gone")
    assert "JupyterHub is not running" in backend.status(state).message
    assert culler.is_running()  # orphaned, still carrying the hub's marker

    lines = []
    again = backend.deploy(spec("north-lab"), state, lines.append)
    assert not culler.is_running() or culler.status() == psutil.STATUS_ZOMBIE
    assert any(line.startswith("started JupyterHub") for line in lines)
    assert ready(backend, again).ready
    assert [p.pid for p in backend.processes(hub_dir) if "jupyterhub_idle_culler" in " ".join(p.cmdline())] \
        != [culler.pid]


def test_remove_leaves_nothing(backend):
    state = backend.deploy(spec("north-lab"), {}, lambda line: None)
    ready(backend, state)
    processes = backend.processes(Path(state["dir"]))
    lines = []
    backend.remove(state, lines.append)
    assert not Path(state["dir"]).exists() and lines[-1] == f"removed {state['dir']}"
    assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert backend.alive(state) is False
    # removing what is already gone, or what was never deployed, is not an error
    backend.remove(state, lines.append)
    backend.remove({}, lines.append)
    assert lines[-1] == "the hub was never deployed; nothing to remove"


def test_alive_checks_the_recorded_pid_and_falls_back_to_the_marker(backend, tmp_path):
    state = backend.deploy(spec("north-lab"), {}, lambda line: None)
    ready(backend, state)
    # a recorded pid that now belongs to another program (this test's own process) is not taken for the hub: the
    # hub is found by its marker instead
    assert backend.alive({**state, "pid": os.getpid()}) is True
    assert backend.alive({**state, "dir": str(tmp_path / "hubs" / "elsewhere")}) is False
    assert backend.alive({}) is False


def test_a_hub_that_died_says_with_which_error_and_never_shows_its_secrets(backend):
    """The status of a stopped hub names the error its log ends with, then the end of the log, secrets blanked."""
    hub_dir = backend.hub_dir("north-lab")
    hub_dir.mkdir(parents=True)
    (hub_dir / "settings.json").write_text('{"GenericOAuthenticator": {"client_secret": "s3cr3t-value"}}')
    (hub_dir / "hub.log").write_text("x" * 100_000 + "\n" + "\n".join([
        "[I app] starting with s3cr3t-value", "Traceback (most recent call last):",
        '  File "app.py", line 1, in init_role_assignment', "    raise ValueError(",
        "ValueError: Found undefined service idle-culler in role idle-culler (s3cr3t-value)"]) + "\n")
    status = backend.status({"dir": str(hub_dir), "url": "http://127.0.0.1:1/"})
    assert not status.running and not status.ready
    assert status.message.startswith("JupyterHub is not running: ValueError: Found undefined service idle-culler")
    assert "last lines of its log:\n" in status.message and "raise ValueError(" in status.message
    assert "s3cr3t-value" not in status.message and "********" in status.message
    assert "x" * 301 not in status.message


def log_in(url: str, username: str, password: str) -> httpx.Response:
    """POST the hub's login form as a browser does; the answer, redirects not followed."""
    with httpx.Client(base_url=url, timeout=10) as browser:
        form = browser.get("hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text).group(1)
        return browser.post("hub/login", data={"username": username, "password": password, "_xsrf": xsrf})


def test_a_hub_without_a_login_of_its_institution_admits_nobody_but_its_first_admin(backend):
    admin, password = first_admin()
    state = backend.deploy(spec("north-lab", admin), {}, lambda line: None)
    ready(backend, state)
    for username, attempt in [("ada", "anything"), ("admin", "admin"), ("root", ""), ("first-admin", "guess"),
                              ("first-admin", password[:-1]), ("ada", password)]:
        refused = log_in(state["url"], username, attempt)
        assert refused.status_code == 403 and "Invalid username or password" in refused.text, (username, attempt)
    admitted = log_in(state["url"], admin["username"], password)
    assert admitted.status_code == 302 and admitted.headers["location"].startswith("/hub/")
    settings = Path(state["dir"], "settings.json").read_text()
    assert password not in settings and admin["password_hash"] in settings  # only the hash is kept

    # without a first admin (a hub made before there was one), nobody at all
    again = backend.deploy(spec("north-lab"), state, lambda line: None)
    ready(backend, again)
    assert log_in(again["url"], admin["username"], password).status_code == 403


def test_hub_files_are_the_consoles_alone(backend):
    state = backend.deploy(spec("north-lab"), {}, lambda line: None)
    ready(backend, state)
    backend.backup(state, "before-upgrade", lambda line: None)
    hub_dir = Path(state["dir"])
    assert stat.S_IMODE(backend.root.stat().st_mode) == 0o700
    modes = {str(path.relative_to(hub_dir)): stat.S_IMODE(path.stat().st_mode)
             for path in [hub_dir, *hub_dir.rglob("*")]}
    assert {"settings.json", "jupyterhub_config.py", "hub.log", "jupyterhub.sqlite", "jupyterhub_cookie_secret",
            "ports.json", "backups/before-upgrade.sqlite"} <= set(modes)
    assert {name: mode for name, mode in modes.items() if mode != (0o700 if (hub_dir / name).is_dir() else 0o600)} \
        == {}


DEPLOY_AS_ANOTHER_USER = """
import json, sys
from clusters.base import HubSpec
from clusters.local import LocalBackend, isolation
root, first, last, spec = json.loads(sys.stdin.read())
backend = LocalBackend(root, port_range=(first, last), ip="0.0.0.0")
state = backend.deploy(HubSpec(**spec), {}, lambda line: print(line, file=sys.stderr))
print(json.dumps({"state": state, "accounts": backend.accounts, "cluster_page": isolation()}))
"""


@pytest.fixture
def unprivileged(tmp_path):
    """A system account to run a console without root, and a directory of its own that every account may pass."""
    name = f"hf-test-{os.getpid()}-{tmp_path.name[-8:]}"[:32]
    subprocess.run(["useradd", "--comment", f"hubfleet {tmp_path}/console", "--no-create-home", "--shell",
                    "/usr/sbin/nologin", "--user-group", name], check=True)
    home = Path(tempfile.mkdtemp(prefix="hubfleet-single-user-"))
    home.chmod(0o755)
    entry = pwd.getpwnam(name)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    yield entry, home
    for proc in psutil.process_iter():  # the hub it started: root may stop it
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARKER, "").startswith(str(home)):
                proc.kill()
    shutil.rmtree(home, ignore_errors=True)  # its account goes with the backend fixture's cleanup


def test_without_root_a_hub_serves_one_person_on_loopback_and_says_so(backend, unprivileged):
    entry, home = unprivileged
    admin, password = first_admin()
    hub_spec = spec("north-lab", admin)
    for key in ("services", "load_roles"):  # the idle culler runs with this Python, which that user may not run
        hub_spec.config["JupyterHub"].pop(key)
    deployed = subprocess.run(
        [str(Path(backend._python(hub_spec, lambda line: None))), "-c", DEPLOY_AS_ANOTHER_USER],
        input=json.dumps([str(home / "hubs"), *PORTS, hub_spec.__dict__]), capture_output=True, text=True,
        user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], cwd=home, timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(Path(__file__).parents[2])})
    assert deployed.returncode == 0, deployed.stderr
    result = json.loads(deployed.stdout)
    state = result["state"]
    assert result["accounts"] is False and state["isolation"] == "single-user"
    assert result["cluster_page"].endswith("each hub serves one person (the first to start a server), on 127.0.0.1 only")
    assert state["url"].startswith("http://127.0.0.1:")  # asked for 0.0.0.0: loopback only, whatever it was told
    assert "cannot create a system account per hub user" in deployed.stderr
    status = ready(backend, state)
    assert "serves one person (the first to start a server), on 127.0.0.1 only" in status.message
    listening = {c.laddr.ip for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == state["ports"]["public"]}
    assert listening == {"127.0.0.1"}

    # the first admin's server runs as the console's own user; a second person's server is refused
    lab = login_and_start_server(state["url"], admin["username"], password)
    assert lab.status_code == 200
    servers = [p for p in backend.processes(Path(state["dir"])) if "jupyterhub.singleuser" in " ".join(p.cmdline())]
    assert [p.uids().real for p in servers] == [entry.pw_uid]
    check = {"Authorization": f"token {backend.api_token(state, 'check')}"}
    api = backend.api_url(state)
    assert httpx.post(api + "users/ada", headers=check, timeout=10).status_code == 201
    refused = httpx.post(api + "users/ada/server", headers=check, timeout=30)
    progress = httpx.get(api + "users/ada/server/progress", headers=check, timeout=30)  # the hub's own words
    assert refused.status_code == 500 and '"failed": true' in progress.text
    assert "This hub serves one person (first-admin)" in progress.text


def test_a_throw_away_hub_and_the_clusters_hubs_never_take_one_port_twice(backend):
    """Ports are handed out before anything listens on them: a smoke-test hub allocated while a cluster hub is still
    starting (and the other way round) must not pick the ports the other recorded."""
    smoke = backend.throw_away("op-7")
    assert smoke.root == backend.root / LocalBackend.NESTED / "op-7"
    early, thrown_dir, late = backend.hub_dir("early"), smoke.hub_dir("smoke-test"), backend.hub_dir("late")
    for hub_dir in (early, thrown_dir, late):
        hub_dir.mkdir(parents=True)
    first = backend._allocate_ports(early)
    thrown = smoke._allocate_ports(thrown_dir)
    late = backend._allocate_ports(late)
    taken = [*first.values(), *thrown.values(), *late.values()]
    assert len(set(taken)) == 9, (first, thrown, late)
    assert json.loads((smoke.root / "smoke-test" / "ports.json").read_text()) == thrown
