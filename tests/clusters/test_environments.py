"""JupyterHub environments: the package index check, and detached builds that share one lock with inline ones."""
import threading

import pytest

from clusters import environments
from clusters.environments import EnvironmentSetupError, build_state, python_for, start_build
from tests.helpers import wait_for


def test_the_index_lists_real_versions_and_not_invented_ones():
    versions = environments.jupyterhub_versions()
    assert "5.4.6" in versions and environments.installed_jupyterhub() in versions and "9.9.9" not in versions


def test_last_words_keep_pip_errors_without_the_list_of_every_version():
    output = ("Collecting jupyterlab\nWARNING: Retrying\nERROR: Could not find a version that satisfies the "
              "requirement jupyterhub==9.9.9 (from versions: 0.1.0, 0.2.0, 5.4.6)\n"
              "ERROR: No matching distribution found for jupyterhub==9.9.9\n")
    assert environments.last_words(output) == (
        "ERROR: Could not find a version that satisfies the requirement jupyterhub==9.9.9 / "
        "ERROR: No matching distribution found for jupyterhub==9.9.9")
    assert environments.last_words("a\nWARNING: b\nc\n") == "a / c"


@pytest.mark.timeout(180)
def test_one_build_at_a_time_detached_or_inline(tmp_path):
    root = tmp_path / "environments"
    assert build_state("9.9.9", root) == ("absent", "")
    assert start_build("9.9.9", root) is True
    assert start_build("9.9.9", root) is False  # the first builder holds the lock
    assert build_state("9.9.9", root)[0] == "building"
    # An inline build (a hub deploy on another worker) waits for the lock instead of building beside it.
    inline = {}

    def deploy():
        try:
            python_for("9.9.9", root, lambda line: None)
        except EnvironmentSetupError as exc:
            inline["error"] = str(exc)

    thread = threading.Thread(target=deploy)
    thread.start()
    state, reason = wait_for(lambda: (s := build_state("9.9.9", root))[0] != "building" and s, 150,
                             what="the detached build to end")
    assert state == "failed"
    assert reason.startswith("could not install JupyterHub 9.9.9: ERROR: ") and "from versions" not in reason
    thread.join(150)
    assert inline["error"].startswith("could not install JupyterHub 9.9.9")
    assert "No matching distribution found for jupyterhub==9.9.9" in environments.build_log("9.9.9", root).read_text()


def test_environments_are_made_from_a_python_every_account_may_run(tmp_path):
    private = tmp_path / "private" / "bin"
    private.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    assert environments.unreachable(private / "python") is not None  # a directory on the way is closed to others
    assert environments.unreachable("/usr/bin/env") is None
    assert environments.unreachable(environments.base_python()) is None


def test_an_environment_built_before_a_companion_was_listed_lacks_it(tmp_path):
    site = tmp_path / "env" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    for name in ("jupyterhub-6.1.1", "jupyterlab-4.4.0", "oauthenticator-17.4.0", "jupyterhub_ltiauthenticator-1.6.3",
                 "jupyterhub_idle_culler-2.0.0", "nbgitpuller_link-0.2.5",
                 "batchspawner-1.3.0"):  # a pinned companion ("batchspawner==1.3.0") is found by its name
        (site / f"{name}.dist-info").mkdir()
    assert environments.missing_companions(tmp_path / "env") == ["nbgitpuller"]  # a longer name is not the package
    (site / "nbgitpuller-1.3.0.dist-info").mkdir()
    assert environments.missing_companions(tmp_path / "env") == []
