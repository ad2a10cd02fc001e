"""The Kubernetes archive at decommission: the Job the backend applies, against the real API schemas and the API
stand-in (``tests/k8s/emulator.py``), finished by the Job stand-in (``tests/k8s/jobs.py``) with what the Job's own
program prints when it is run here on real files; that program's archive read back by ``clusters.archives``.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from clusters import archives
from clusters.base import BackendError
from clusters.k8s_manifests import ARCHIVE_SCRIPT, HUB_DB_CLAIM, archive_job, job_name, purge_job
from clusters.kubernetes import KubernetesBackend
from tests.clusters.test_kubernetes_backend import SPEC, Log
from tests.k8s.jobs import JobRunner
from tests.k8s.schemas import validate

pytestmark = pytest.mark.timeout(60)

NFS = {"server": "nfs.example.org", "path": "/exports/hubfleet-archives"}


def run_program(tmp_path: Path) -> str:
    """Run the archive Job's program here, on a hub database and two homes laid out as the Job mounts them."""
    database = tmp_path / "hub-db" / "jupyterhub.sqlite"
    database.parent.mkdir()
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.executemany("INSERT INTO users VALUES (?)", [("ada",), ("bob",)])
    for user, name, text in (("ada", "notes.txt", "ada's notes"), ("bob", "work/thesis.md", "bob's thesis")):
        (tmp_path / "homes" / user / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "homes" / user / name).write_text(text)
    (tmp_path / "archive").mkdir()
    (tmp_path / "scratch").mkdir()
    env = {**os.environ, "HUB": "physics", "TARGET": "physics.tar.gz", "ARCHIVE_DIR": str(tmp_path / "archive"),
           "HOMES_DIR": str(tmp_path / "homes"), "HUB_DB_DIR": str(tmp_path / "hub-db"),
           "TMPDIR": str(tmp_path / "scratch")}
    done = subprocess.run([sys.executable, "-c", ARCHIVE_SCRIPT], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def backend(kube_api):
    with KubernetesBackend(kubeconfig=kube_api.kubeconfig(), archive_nfs=NFS, archive_poll=0.05) as backend:
        yield backend


def volumes(kube_api, namespace: str) -> None:
    """The hub database's PVC and two users' PVCs, as the chart and KubeSpawner make them."""
    for name, user in ((HUB_DB_CLAIM, None), ("claim-ada", "ada"), ("claim-bob-40example-2eorg", "bob@example.org")):
        kube_api.put({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                      "metadata": {"name": name, "namespace": namespace,
                                   "annotations": {"hub.jupyter.org/username": user} if user else {}},
                      "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})


def test_the_archive_and_purge_jobs_are_valid_for_the_api_server():
    job = archive_job("hf-42-physics", "physics", "physics-hub42-op7.tar.gz", {"ada": "claim-ada"},
                      NFS["server"], NFS["path"])
    validate(job)
    validate(purge_job("physics-hub42-op7.tar.gz", NFS["server"], NFS["path"]))
    pod = job["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["hub-db"]["readOnly"] and mounts["home-0"] == {"name": "home-0", "mountPath": "/homes/ada",
                                                                 "readOnly": True}
    assert pod["securityContext"]["runAsNonRoot"] and job["spec"]["backoffLimit"] == 0


def test_the_jobs_program_writes_an_archive_the_console_reads(tmp_path):
    printed = run_program(tmp_path)
    result = json.loads(printed.strip().splitlines()[-1].removeprefix("HUBFLEET-ARCHIVE "))
    path = tmp_path / "archive" / "physics.tar.gz"
    assert result["sha256"] == archives.sha256_of(path) == (path.parent / "physics.tar.gz.sha256").read_text()[:64]
    with archives.open_checked(path, result["sha256"]) as tar:
        assert archives.manifest_of(tar) == result["manifest"]
        archives.extract_database(tar, tmp_path / "restored.sqlite")
        home = tmp_path / "bob-again"
        home.mkdir()
        assert archives.extract_home(tar, "bob", home) == 1
    assert (home / "work" / "thesis.md").read_text() == "bob's thesis"
    assert {u["name"]: u["files"] for u in result["manifest"]["users"]} == {"ada": 1, "bob": 1}


def test_archive_applies_the_job_in_the_hubs_namespace_and_reads_its_result(kube_api, backend, tmp_path):
    state = backend.deploy(SPEC, {}, Log())
    volumes(kube_api, state["namespace"])
    printed = run_program(tmp_path)
    log = Log()
    with JobRunner(kube_api, lambda job: (f"copying...\n{printed}", True)) as runner:
        result = backend.archive(state, "physics-hub42-op7.tar.gz", log)
    assert result.location == "nfs://nfs.example.org/exports/hubfleet-archives/physics-hub42-op7.tar.gz"
    assert result.sha256 == archives.sha256_of(tmp_path / "archive" / "physics.tar.gz")
    assert [u["name"] for u in result.manifest["users"]] == ["ada", "bob"]
    [job] = runner.seen
    assert job["metadata"]["namespace"] == state["namespace"]
    assert job["metadata"]["name"] == job_name("archive", "physics-hub42-op7.tar.gz")
    pod = job["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]["readOnly"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {HUB_DB_CLAIM: True, "claim-ada": True, "claim-bob-40example-2eorg": True}
    assert {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]} >= {"/homes/ada", "/homes/bob@example.org"}
    assert [v["nfs"] for v in pod["volumes"] if "nfs" in v] == [NFS]
    applies = [r for r in kube_api.requests if r.method == "PATCH" and "/jobs/" in r.path]
    assert len(applies) == 1 and applies[0].content_type == "application/apply-patch+yaml"
    validate(job)

    # a purge starts its own Job in the system namespace and does not wait for it
    backend.purge_archive(result.location, Log())
    purge = kube_api.get("Job", job_name("purge", "physics-hub42-op7.tar.gz"), "hubfleet-system")
    assert purge["spec"]["template"]["spec"]["volumes"][0]["nfs"] == NFS
    with pytest.raises(BackendError, match="not in this cluster's archive location"):
        backend.purge_archive("nfs://elsewhere/x.tar.gz", Log())


def test_a_failed_job_or_a_cluster_without_an_archive_location_is_an_error(kube_api, backend):
    state = backend.deploy(SPEC, {}, Log())
    volumes(kube_api, state["namespace"])
    with JobRunner(kube_api, lambda job: ("tar: /archive/x: Permission denied", False)):
        with pytest.raises(BackendError, match="Permission denied"):
            backend.archive(state, "physics.tar.gz", Log())
    with KubernetesBackend(kubeconfig=kube_api.kubeconfig()) as unset:
        with pytest.raises(BackendError, match="no archive location"):
            unset.archive(state, "physics.tar.gz", Log())
