"""Cluster provisioning through the console: wizard, plan review, approval, apply, destroy (real terraform)."""
import os
from pathlib import Path

import pytest

from console.extensions import db
from console.models import AuditEvent, Cluster, Operation
from tests.conftest import csrf_from


@pytest.fixture
def operator(create_user, api_headers):
    return api_headers(create_user("operator"))


def local_vars(tmp_path, **extra):
    return {"name": "campus", "data_dir": str(tmp_path / "campus"), "port_first": 24000, "port_last": 24099,
            **extra}


def op_of(client, headers, op_id):
    return client.get(f"/api/v1/operations/{op_id}", headers=headers).get_json()


def test_provision_review_apply_then_destroy(client, operator, tmp_path, run_worker, create_institution,
                                            create_user, login):
    created = client.post("/api/v1/clusters", json={"provider": "local", "variables": local_vars(tmp_path)},
                          headers=operator)
    assert created.status_code == 202
    assert client.get("/api/v1/clusters/campus", headers=operator).get_json()["state"] == "planning"
    run_worker()
    plan = client.get("/api/v1/clusters/campus/plan", headers=operator).get_json()
    assert plan["state"] == "planned"
    assert plan["plan"]["summary"] == {"add": ["terraform_data.cluster"], "change": [], "destroy": []}
    assert not (tmp_path / "campus").exists()  # nothing before approval

    applied = client.post("/api/v1/clusters/campus/apply", headers=operator)
    assert applied.status_code == 202
    # Approved twice (a double click, a second tab): the same apply, nothing queued twice.
    again = client.post("/api/v1/clusters/campus/apply", headers=operator)
    assert again.status_code == 202 and again.get_json() == applied.get_json()
    early = client.delete("/api/v1/clusters/campus?confirm=campus", headers=operator)
    assert early.status_code == 409 and "cannot be destroyed: wait until the apply ends" in early.get_json()["message"]
    assert db.session.query(Operation).filter_by(kind="cluster-apply").count() == 1
    run_worker()
    op = op_of(client, operator, applied.get_json()["operation"])
    assert op["state"] == "succeeded" and any("Apply complete!" in line for line in op["log"])
    cluster = client.get("/api/v1/clusters/campus", headers=operator).get_json()
    assert cluster["state"] == "ready" and cluster["outputs"]["port_range"] == [24000, 24099]
    assert (tmp_path / "campus" / "hubs").is_dir()
    assert client.post("/api/v1/clusters/campus/apply", headers=operator).status_code == 409  # plan used up

    # A hub on it blocks destruction.
    create_institution("north")
    client.post("/api/v1/hubs", json={"slug": "campus-lab", "institution": "north", "cluster": "campus"},
                headers=operator)
    refused = client.delete("/api/v1/clusters/campus?confirm=campus", headers=operator)
    assert refused.status_code == 422 and "campus-lab" in refused.get_json()["errors"]["json"]["confirm"][0]
    assert client.delete("/api/v1/clusters/campus?confirm=wrong", headers=operator).status_code == 422
    client.delete("/api/v1/hubs/campus-lab", headers=operator)
    run_worker()  # the hub comes up on the new cluster, then goes
    destroyed = client.delete("/api/v1/clusters/campus?confirm=campus", headers=operator)
    assert destroyed.status_code == 202
    run_worker()
    assert op_of(client, operator, destroyed.get_json()["operation"])["state"] == "succeeded"
    assert not (tmp_path / "campus").exists()
    assert client.get("/api/v1/clusters/campus", headers=operator).status_code == 404
    # Its page says what happened to it.
    login(client, create_user("operator"))
    page = client.get("/clusters/campus")
    finished = db.session.get(Operation, destroyed.get_json()["operation"]).finished_at
    assert page.status_code == 404
    assert f"campus was destroyed on {finished:%Y-%m-%d %H:%M} UTC by " in page.get_data(as_text=True)


def test_failing_apply_fails_the_operation_and_the_cluster_is_not_ready(client, operator, tmp_path, run_worker):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should go")
    client.post("/api/v1/clusters", json={"provider": "local",
                                          "variables": local_vars(tmp_path, data_dir=str(blocker / "campus"))},
                headers=operator)
    run_worker()
    applied = client.post("/api/v1/clusters/campus/apply", headers=operator).get_json()["operation"]
    run_worker()
    op = op_of(client, operator, applied)
    assert op["state"] == "failed"
    assert "local-exec provisioner error" in op["error"]
    assert any("Not a directory" in line for line in op["log"])
    cluster = client.get("/api/v1/clusters/campus", headers=operator).get_json()
    assert cluster["state"] == "failed" and cluster["outputs"] == {}


def test_wizard_refuses_what_the_module_would(client, operator, tmp_path, create_user, login):
    bad = client.post("/api/v1/clusters", json={"provider": "local", "variables": local_vars(
        tmp_path, name="Campus!", port_first=80, port_last=24001, data_dir="relative/dir")}, headers=operator)
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]["json"]) == {"name", "port_first", "data_dir"}
    assert db.session.query(Cluster).count() == 0 and db.session.query(Operation).count() == 0
    unknown = client.post("/api/v1/clusters", json={"provider": "openstack", "variables": {}}, headers=operator)
    assert unknown.get_json()["errors"]["json"] == {"provider": ["Choose one of local, gke, eks, aks."]}
    # the same through the wizard page keeps the input
    login(client, create_user("operator"))
    token = csrf_from(client.get("/clusters/new").get_data(as_text=True))
    page = client.post("/clusters/new", data={"csrf_token": token, "provider": "local", "name": "campus",
                                              "data_dir": str(tmp_path / "c"), "port_first": "24000",
                                              "port_last": "24001"})
    text = page.get_data(as_text=True)
    assert page.status_code == 422 and 'id="port_last-error"' in text and 'value="24001"' in text


def test_cloud_credentials_never_show(app, client, operator, run_worker, create_user, login):
    """Offline, the AWS provider cannot be downloaded, so the plan fails; the credentials must show nowhere."""
    key, secret = "AKIAHUBFLEETTEST0001", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYHUBFLEETKEY"
    created = client.post("/api/v1/clusters", json={
        "provider": "eks", "variables": {"name": "cloud", "region": "us-east-1"},
        "credentials": {"aws_access_key_id": key, "aws_secret_access_key": secret}}, headers=operator)
    assert created.status_code == 202
    run_worker()
    op = op_of(client, operator, created.get_json()["operation"])
    assert op["state"] == "failed" and "terraform init failed" in op["error"]
    seen = [str(op), client.get("/api/v1/clusters/cloud", headers=operator).get_data(as_text=True),
            client.get("/api/v1/clusters", headers=operator).get_data(as_text=True)]
    login(client, create_user("operator"))
    seen += [client.get(p).get_data(as_text=True) for p in ("/clusters", "/clusters/cloud", "/clusters/cloud/edit",
                                                             f"/operations/{op['id']}")]
    seen += [str(e.detail) for e in db.session.execute(db.select(AuditEvent)).scalars()]
    workspace = Path(app.config["DATA_DIR"]) / "terraform" / "cloud"
    seen += [p.read_text(errors="replace") for p in workspace.glob("*") if p.is_file()]
    assert not [s[:120] for s in seen if key in s or secret in s]
    if app.config["DATABASE_URL"].startswith("sqlite"):
        database = app.config["DATABASE_URL"].removeprefix("sqlite:///")
        for path in (database, database + "-wal"):
            if os.path.exists(path):
                assert secret.encode() not in Path(path).read_bytes()


def test_register_a_kubernetes_cluster_by_kubeconfig(client, operator):
    kubeconfig = """apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster: {server: "https://k8s.example.edu:6443", certificate-authority-data: Zm9v}
users:
- name: admin
  user: {token: "kube-token-do-not-show"}
contexts:
- name: prod
  context: {cluster: prod, user: admin}
current-context: prod
"""
    bad = client.post("/api/v1/clusters/register", json={"name": "prod", "kubeconfig": "kind: Config\n"},
                      headers=operator)
    assert bad.status_code == 422 and "current-context" in bad.get_json()["errors"]["json"]["kubeconfig"][0]
    made = client.post("/api/v1/clusters/register", json={"name": "prod", "kubeconfig": kubeconfig},
                       headers=operator)
    # registered, then checked before it takes hubs (tests/console/test_kubernetes_clusters.py runs the check)
    assert made.status_code == 201 and made.get_json()["state"] == "checking"
    assert db.session.query(Operation).filter_by(kind="cluster-check").count() == 1
    assert "kube-token-do-not-show" not in client.get("/api/v1/clusters/prod", headers=operator).get_data(True)
    stored = db.session.execute(db.select(Cluster.kubeconfig).filter_by(name="prod")).scalar_one()
    assert stored and "kube-token" not in stored
