"""Registering a Slurm cluster: the API and the page, every bad field a field error with nothing written, onboarding
against the session's real single-node cluster (tests/slurm.py) shown check by check with its fixes, and hubs
refused until the check passed.  The whole journey with a real hub is tests/e2e/test_slurm_hubs.py."""
from __future__ import annotations

import pytest

from console.extensions import db
from console.models import AuditEvent, Cluster, Operation
from console.services.institutions import ensure_local_cluster
from tests.conftest import csrf_from

pytestmark = pytest.mark.timeout(90)

PARTITIONS = [{"name": "debug", "max_time_minutes": 60, "max_cpus": 2, "max_memory_gb": 4, "max_gpus": 0},
              {"name": "long", "max_time_minutes": 10080}]


@pytest.fixture
def slurm_conf(tmp_path):
    """A slurm.conf file to name (registration only checks that it is there; onboarding reads it)."""
    path = tmp_path / "slurm.conf"
    path.write_text("ClusterName=test\n")
    return str(path)


@pytest.fixture
def operator(create_user, api_headers):
    return api_headers(create_user("operator"))


def body(conf, **changes):
    return {"name": "hpc", "slurm_conf": conf, "partitions": PARTITIONS, "qos": ["normal"],
            "port_first": 22500, "port_last": 22599, **changes}


def test_registering_records_the_policy_and_queues_the_onboarding_check(app, client, operator, slurm_conf):
    response = client.post("/api/v1/clusters/register/slurm", json=body(slurm_conf), headers=operator)

    assert response.status_code == 201, response.get_json()
    cluster = response.get_json()
    assert (cluster["name"], cluster["backend"], cluster["state"]) == ("hpc", "slurm", "checking")
    assert cluster["settings"]["partitions"] == [
        PARTITIONS[0], {"name": "long", "max_time_minutes": 10080, "max_cpus": None, "max_memory_gb": None,
                        "max_gpus": None}]
    assert cluster["settings"]["qos"] == ["normal"] and cluster["settings"]["port_range"] == [22500, 22599]
    assert cluster["settings"]["root"].endswith("/clusters/hpc") and cluster["settings"]["homes"] == "/home"
    [op] = db.session.execute(db.select(Operation).filter_by(kind="cluster-check")).unique().scalars()
    assert op.cluster.name == "hpc"
    audit = db.session.execute(db.select(AuditEvent).filter_by(action="cluster.register")).scalar_one()
    assert audit.detail["backend"] == "slurm" and audit.detail["partitions"] == ["debug", "long"]


@pytest.mark.parametrize("changes, field", [
    ({"name": "HPC!"}, "name"),
    ({"slurm_conf": "etc/slurm.conf"}, "slurm_conf"),
    ({"slurm_conf": "/nonexistent/slurm.conf"}, "slurm_conf"),
    ({"partitions": []}, "partitions"),
    ({"partitions": [{"name": "debug"}, {"name": "debug"}]}, "partitions"),
    ({"partitions": [{"name": "debug", "max_cpus": 0}]}, "partitions"),
    ({"partitions": [{"name": "debug", "max_time_minutes": "an hour"}]}, "partitions"),
    ({"partitions": [{"name": "de bug"}]}, "partitions"),
    ({"qos": ["no rmal"]}, "qos"),
    ({"root": "hubs"}, "root"),
    ({"port_first": 80}, "port_first"),
    ({"port_last": 22501}, "port_last"),
    ({"server_ip": "the nodes"}, "server_ip"),
])
def test_each_bad_field_is_a_field_error_and_nothing_is_written(client, operator, slurm_conf, changes, field):
    response = client.post("/api/v1/clusters/register/slurm", json=body(slurm_conf, **changes), headers=operator)

    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]["json"]
    assert db.session.execute(db.select(Cluster)).first() is None
    assert db.session.execute(db.select(AuditEvent)).first() is None


def test_ports_another_cluster_s_hubs_use_are_refused(app, client, operator, slurm_conf):
    ensure_local_cluster("local", app.config["DATA_DIR"], [22550, 22560], "127.0.0.1")

    response = client.post("/api/v1/clusters/register/slurm", json=body(slurm_conf), headers=operator)

    assert response.status_code == 422
    assert "overlap those of local cluster local (22550 to 22560)" in \
        response.get_json()["errors"]["json"]["port_first"][0]
    assert client.post("/api/v1/clusters/register/slurm", json=body(slurm_conf, name="hpc2", port_first=22561),
                       headers=operator).status_code == 201


def test_only_operators_register_clusters(client, create_institution, create_user, api_headers, slurm_conf):
    admin = api_headers(create_user("institution_admin", institution=create_institution("north")))

    assert client.post("/api/v1/clusters/register/slurm", json=body(slurm_conf), headers=admin).status_code == 403
    assert db.session.execute(db.select(Cluster)).first() is None


def test_the_page_registers_with_a_plain_form_and_says_what_is_wrong(client, create_user, login, slurm_conf):
    login(client, create_user("operator"))
    page = client.get("/clusters/register-slurm")
    assert page.status_code == 200 and "Register a Slurm cluster" in page.get_data(as_text=True)
    token = csrf_from(page.get_data(as_text=True))
    form = {"csrf_token": token, "name": "hpc", "slurm_conf": slurm_conf, "qos": "normal",
            "port_first": "22500", "port_last": "22599"}

    wrong = client.post("/clusters/register-slurm", data={**form, "partitions": "debug 60 2 4 0 9"})
    assert wrong.status_code == 422
    assert "Not a partition line: &#39;debug 60 2 4 0 9&#39;" in wrong.get_data(as_text=True)
    assert db.session.execute(db.select(Cluster)).first() is None

    done = client.post("/clusters/register-slurm", data={**form, "partitions": "debug 60 2 4 0\nlong 10080 - 8"})
    assert done.status_code == 302 and done.headers["Location"].endswith("/clusters/hpc")
    cluster = db.session.execute(db.select(Cluster).filter_by(name="hpc")).scalar_one()
    assert cluster.settings["partitions"][1] == {"name": "long", "max_time_minutes": 10080, "max_cpus": None,
                                                 "max_memory_gb": 8, "max_gpus": None}
    detail = client.get("/clusters/hpc").get_data(as_text=True)
    assert 'data-partition="long"' in detail and slurm_conf in detail and "Onboarding check" in detail


def test_onboarding_shows_each_failure_with_its_fix_and_hubs_wait_for_it(app, client, operator, slurm_site,
                                                                         create_institution, run_worker):
    create_institution("north")
    response = client.post("/api/v1/clusters/register/slurm", headers=operator, json=body(
        str(slurm_site.conf), partitions=[{"name": "gpu"}]))
    assert response.status_code == 201

    refused = client.post("/api/v1/hubs", json={"slug": "north-hpc", "institution": "north", "cluster": "hpc"},
                          headers=operator)
    assert refused.status_code == 422
    assert "has not passed its onboarding check" in refused.get_json()["errors"]["json"]["cluster"][0]

    run_worker()
    cluster = client.get("/api/v1/clusters/hpc", headers=operator).get_json()
    assert cluster["state"] == "needs-setup"
    checks = {c["name"]: c for c in cluster["checks"]}
    assert checks["slurmctld answers"]["ok"]
    assert not checks["partitions offered"]["ok"]
    assert "not offered: gpu (sinfo lists debug, long)" in checks["partitions offered"]["detail"]
    assert "PartitionName=" in checks["partitions offered"]["fix"]
    assert not checks["a test job runs"]["ok"]
    refused = client.post("/api/v1/hubs", json={"slug": "north-hpc", "institution": "north", "cluster": "hpc"},
                          headers=operator)
    assert "partitions offered" in refused.get_json()["errors"]["json"]["cluster"][0]
    again = client.post("/api/v1/clusters/hpc/check", headers=operator)
    assert again.status_code in (200, 202), again.get_json()
