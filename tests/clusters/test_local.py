"""The local backend on its own, with real JupyterHub processes: deploy, status, alive, adopt, stop, remove.

No console and no database: what the backend promises to whoever drives it.  How long a stop takes is measured by
``tests/perf/bench_local_stop.py``; here a stop must end every process without having to kill one.
"""
import os
import signal
from pathlib import Path

import httpx
import jupyterhub
import psutil
import pytest

from clusters.base import HubSpec
from clusters.local import LocalBackend
from tenants.layering import layered
from tenants.render import render_local
from tests.helpers import port_open, wait_for

pytestmark = pytest.mark.timeout(120)

# HUBFLEET_TEST_PORTS="first-last" keeps suites run side by side on one machine off each other's ports
PORTS = [int(p) for p in os.environ.get("HUBFLEET_TEST_PORTS", "21000-21999").split("-")]


def spec(slug: str, **extra) -> HubSpec:
    """The hub a new institution gets (dummy login, the idle culler as a managed service), plus ``extra`` sections."""
    config = render_local(layered(None, None, None, None), {})
    return HubSpec(slug=slug, institution="north", config={**config, **extra})


@pytest.fixture
def backend(tmp_path):
    backend = LocalBackend(str(tmp_path / "hubs"), port_range=PORTS)
    yield backend
    for hub_dir in (tmp_path / "hubs").glob("*"):  # a failing test leaves no process behind
        if hub_dir.is_dir():
            backend._stop(hub_dir, lambda line: None)


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
