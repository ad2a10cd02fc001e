"""Hubs on Slurm clusters in the console: profiles beyond the cluster's policy are field errors, the preview shows the
batch script of each profile, and the hub page and API show Slurm's view (read live from the session's real
single-node cluster, tests/slurm.py) with reasons in words.

The Slurm cluster and its hub are rows made here (backend "slurm", the operator's policy in the cluster's settings),
as registration would make them: nothing in these tests deploys a hub.
"""
from __future__ import annotations

import time

import pytest

from clusters import lifecycle, slurm
from clusters.slurm_health import job_name_prefix
from console.extensions import db
from console.models import Hub, Institution, Operation, Rollout
from tests.clusters.test_slurm import submit, wait_for
from tests.conftest import csrf_from

DUMMY = {"authenticator_class": "dummy", "allowed_users": ["ada"]}
IMAGE = "quay.io/jupyter/scipy-notebook:2025-01-06"
POLICY = {"partitions": [{"name": "debug", "max_time_minutes": 60, "max_cpus": 2, "max_memory_gb": 4,
                          "max_gpus": 0},
                         {"name": "long", "max_time_minutes": 10080, "max_cpus": 2, "max_memory_gb": 8,
                          "max_gpus": 0}],
          "qos": ["normal"]}


@pytest.fixture
def hpc(create_institution, create_cluster, create_user, api_headers):
    """Institution north with hub north-hpc on Slurm cluster hpc (slurm.conf not set: tests that read Slurm set it)
    and hub north-vm on a fake cluster; returns (north's admin headers, north's admin)."""
    north = create_institution("north", "North College")
    north.policy = {"open_login_allowed": True}  # the dummy login's simple rules keep these tests short
    cluster = create_cluster("hpc", backend="slurm", slurm_conf="/nonexistent/slurm.conf", **POLICY)
    plain = create_cluster("vm", backend="fake")
    for slug, on in (("north-hpc", cluster), ("north-vm", plain)):
        db.session.add(Hub(slug=slug, institution_id=north.id, cluster_id=on.id, spec={}, backend_state={},
                           state=lifecycle.RUNNING))
    db.session.commit()
    admin = create_user("institution_admin", institution=north)
    return api_headers(admin), admin


def put_environment(client, headers, environment):
    return client.put("/api/v1/institutions/north/config",
                      json={"auth": DUMMY, "environment": environment}, headers=headers)


def test_a_profile_beyond_the_slurm_cluster_s_policy_is_a_field_error_and_nothing_changes(app, client, hpc):
    admin, _ = hpc
    profiles = [{"display_name": "Quick", "slurm": {"partition": "debug", "time_minutes": 30}},
                {"display_name": "Too long", "slurm": {"partition": "debug", "time_minutes": 240, "cpus": 8}},
                {"display_name": "Elsewhere", "slurm": {"partition": "gpu", "qos": "normal"}}]

    response = put_environment(client, admin, {"image": IMAGE, "profiles": profiles})

    assert response.status_code == 422
    assert response.get_json()["errors"]["json"] == {
        "environment.profiles.1.slurm.time_minutes": ["At most 60 minutes on partition debug."],
        "environment.profiles.1.slurm.cpus": ["At most 2 CPUs on partition debug."],
        "environment.profiles.2.slurm.partition": [("Partition gpu is not offered on this cluster; choose one of "
                                                    "debug, long.")]}
    assert db.session.execute(db.select(Institution).filter_by(slug="north")).scalar_one().environment in (None, {})
    assert db.session.query(Rollout).count() == 0 and db.session.query(Operation).count() == 0
    # wrong types are refused whatever the cluster, by the environment's own schema
    wrong = put_environment(client, admin, {"image": IMAGE, "profiles": [
        {"display_name": "Odd", "slurm": {"time_minutes": "soon"}}]})
    assert wrong.status_code == 422 and wrong.get_json()["errors"]["json"] == {
        "environment.profiles.0.slurm.time_minutes": ["Enter a whole number of minutes, at least 1."]}

    accepted = put_environment(client, admin, {"image": IMAGE, "profiles": profiles[:1]})
    assert accepted.status_code in (200, 202), accepted.get_json()


def test_job_options_are_checked_only_where_the_institution_has_hubs_on_slurm(client, hpc):
    admin, _ = hpc
    db.session.execute(db.update(Hub).where(Hub.slug == "north-hpc").values(state=lifecycle.DELETED,
                                                                             desired="deleted"))
    db.session.commit()

    response = put_environment(client, admin, {"image": IMAGE, "profiles": [
        {"display_name": "Long", "slurm": {"partition": "anywhere", "time_minutes": 100000}}]})

    assert response.status_code in (200, 202), response.get_json()


def test_the_config_form_takes_job_options_and_the_preview_shows_each_profile_s_batch_script(client, hpc, login):
    _, admin_user = hpc
    login(client, admin_user)
    page = client.get("/institutions/north/config").get_data(as_text=True)
    assert 'name="environment.profiles.0.slurm.time_minutes"' in page
    form = {"csrf_token": csrf_from(page), "action": "preview", "auth.authenticator_class": "dummy",
            "auth.allowed_users": "ada",
            "environment.image": IMAGE,
            "environment.profiles.0.display_name": "Quick", "environment.profiles.0.slurm.partition": "debug",
            "environment.profiles.0.slurm.time_minutes": "30", "environment.profiles.0.slurm.memory_gb": "1",
            "environment.profiles.1.display_name": "Week", "environment.profiles.1.slurm.partition": "long",
            "environment.profiles.1.slurm.time_minutes": "20000", "environment.profiles.1.slurm.qos": "",
            "environment.profiles.2.slurm.partition": ""}  # the empty "Add a profile" fieldset

    refused = client.post("/institutions/north/config", data=form)
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert 'id="environment.profiles.1.slurm.time_minutes-error"' in text
    assert "At most 10080 minutes on partition long." in text and 'value="20000"' in text

    form["environment.profiles.1.slurm.time_minutes"] = "2880"
    preview = client.post("/institutions/north/config", data=form)
    text = preview.get_data(as_text=True)
    assert preview.status_code == 200
    assert 'id="batch-scripts-north-hpc"' in text and 'id="batch-scripts-north-vm"' not in text
    assert ("#!/bin/bash\n#SBATCH --job-name={job_name}\n#SBATCH --partition=debug\n#SBATCH --time=30\n"
            "#SBATCH --cpus-per-task=1\n#SBATCH --mem=1G\n") in text
    assert "#SBATCH --partition=long\n#SBATCH --time=2880\n" in text
    # profiles are job options there, not settings left out
    assert ("north-hpc runs on the slurm backend, which runs users' servers as Slurm jobs, not containers, so these "
            "settings do not apply there and are not in its configuration: default image, CPU guarantee, memory "
            "guarantee, home storage.") in text
    assert db.session.query(Operation).count() == 0  # preview changes nothing


def test_the_hub_page_and_the_api_show_why_a_server_cannot_start_in_words(app, client, hpc, login, slurm_site,
                                                                          create_institution, create_user,
                                                                          api_headers):
    admin, admin_user = hpc
    cluster = db.session.execute(db.select(Hub).filter_by(slug="north-hpc")).unique().scalar_one().cluster
    cluster.settings = {**cluster.settings, "slurm_conf": str(slurm_site.conf)}
    db.session.commit()
    env, prefix = slurm_site.env, job_name_prefix("north-hpc")
    ada = f"ada{time.time_ns()}"  # Slurm keeps ended jobs for minutes: this run's own user
    memory = int(slurm.parse_record(slurm.run(env, "scontrol", "show", "node", "localhost", "--oneliner"))
                 ["RealMemory"])
    with pytest.raises(slurm.SlurmError):  # refused at submission, kept by Slurm as FAILED with its reason
        submit(env, f"--job-name={prefix}{ada}", f"--mem={memory * 2}", "--time=5", "--wrap=hostname")
    slurm.run(env, "scontrol", "update", "nodename=localhost", "state=drain", "reason=scratch disk full")
    job_id = None
    try:
        job_id = submit(env, f"--job-name={prefix}bob", "--time=5", "--wrap=sleep 60")
        wait_for(lambda: all(j.reason != "None" for j in slurm.jobs(env, job_id)), what="a reason on the job")

        data = client.get("/api/v1/hubs/north-hpc/slurm", headers=admin).get_json()

        assert data["error"] == "" and data["hub"] == "north-hpc" and data["cluster"] == "hpc"
        [pending] = data["pending"]
        assert (pending["id"], pending["user"], pending["partition"]) == (job_id, "bob", "debug")
        assert pending["explanation"].startswith("The nodes your server needs are not available")
        [failed] = [j for j in data["failed"] if j["user"] == ada]
        assert failed["reason"] == "BadConstraints" and "No node has what the job asks for" in failed["explanation"]
        assert data["nodes"][0]["condition"] == "drained" and data["nodes"][0]["reason"] == "scratch disk full"

        login(client, admin_user)
        text = client.get("/hubs/north-hpc").get_data(as_text=True)
        assert 'id="hub-slurm"' in text and f'data-job="{job_id}"' in text
        assert "The nodes your server needs are not available" in text and "scratch disk full" in text
        assert "No node has what the job asks for" in text and "never started" in text
        # the page's 5 s poll of its own fragment does not ask Slurm
        fragment = client.get("/hubs/north-hpc", headers={"HX-Request": "true"}).get_data(as_text=True)
        assert 'id="hub-slurm"' not in fragment
        # other hubs pay nothing and have no view of Slurm
        assert 'id="hub-slurm"' not in client.get("/hubs/north-vm").get_data(as_text=True)
        refused = client.get("/api/v1/hubs/north-vm/slurm", headers=admin)
        assert refused.status_code == 409 and "only hubs on Slurm clusters" in refused.get_json()["message"]
        # another institution's admin does not see the hub at all
        south = create_institution("south", "South College")
        stranger = api_headers(create_user("institution_admin", institution=south))
        assert client.get("/api/v1/hubs/north-hpc/slurm", headers=stranger).status_code == 404
    finally:
        if job_id:
            slurm.run(env, "scancel", str(job_id))
        slurm.run(env, "scontrol", "update", "nodename=localhost", "state=resume")
    wait_for(lambda: all(n.usable for n in slurm.nodes(env)), what="the node resuming")


def test_slurm_not_answering_is_said_on_the_page_and_in_the_api_never_a_500(app, client, hpc, login):
    admin, admin_user = hpc
    app.config["SLURM_TIMEOUT"] = 1  # the cluster's slurm.conf does not exist: sinfo retries for a minute

    data = client.get("/api/v1/hubs/north-hpc/slurm", headers=admin).get_json()

    assert data["error"] == "Slurm did not answer: sinfo did not answer within 1 s"
    assert data["pending"] == [] and data["nodes"] == []
    login(client, admin_user)
    page = client.get("/hubs/north-hpc")
    assert page.status_code == 200 and 'id="slurm-error"' in page.get_data(as_text=True)
    assert "Slurm did not answer: " in page.get_data(as_text=True)
