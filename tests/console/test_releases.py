"""Releases: publishing checks the version on the package index, only ready releases are used, unused ones can be
deleted and used ones retracted.  Over the fake backend (nothing to prepare there); preparation on a local cluster,
with real JupyterHubs, is in tests/e2e/test_release_prepare.py."""
import pytest

from console.extensions import db
from console.lifecycles import RELEASE
from console.models import AuditEvent, Hub, Operation, Release
from console.services import releases
from tests.conftest import csrf_from


@pytest.fixture
def fleet(create_institution, create_cluster, create_user, api_headers, client, run_worker):
    """Three running hubs of north on release r1 (a fake cluster: r1 is ready at once); returns operator headers."""
    create_institution("north")
    create_cluster("fast", backend="fake")
    operator = api_headers(create_user("operator"))
    published = client.post("/api/v1/releases", json={"name": "r1", "jupyterhub_version": "5.4.6"}, headers=operator)
    assert published.status_code == 201 and published.get_json()["state"] == "ready"
    for i in range(3):
        client.post("/api/v1/hubs", json={"slug": f"hub-{i}", "institution": "north", "cluster": "fast"},
                    headers=operator)
    run_worker()
    return operator


def hub(slug):
    found = db.session.execute(db.select(Hub).filter_by(slug=slug)).unique().scalar_one()
    db.session.refresh(found)
    return found


def test_every_release_move_either_happens_or_is_refused_with_a_sentence():
    for state in RELEASE.states:
        for event in RELEASE.verbs:
            if RELEASE.allows(state, event):
                assert RELEASE.next_state(state, event) in RELEASE.states
            else:
                sentence = RELEASE.refusal(state, event)
                assert sentence.startswith(("A ", "An ")) and " cannot " in sentence and sentence.endswith(".")


def test_a_version_that_does_not_exist_is_refused_with_the_reason(client, create_user, api_headers):
    operator = api_headers(create_user("operator"))
    refused = client.post("/api/v1/releases", json={"name": "future", "jupyterhub_version": "9.9.9"},
                          headers=operator)
    assert refused.status_code == 422
    [message] = refused.get_json()["errors"]["json"]["jupyterhub_version"]
    assert message.startswith("JupyterHub 9.9.9 does not exist on the package index; the newest there is ")
    assert db.session.query(Release).count() == 0 and db.session.query(Operation).count() == 0
    assert client.post("/api/v1/releases", json={"name": "today", "jupyterhub_version": "5.4.6"},
                       headers=operator).status_code == 201


def test_only_a_ready_release_is_given_to_new_hubs_and_rolled_out(client, fleet, run_worker):
    for name, state in (("r2-preparing", "preparing"), ("r3-failed", "failed")):
        db.session.add(Release(name=name, jupyterhub_version="6.1.1", state=state, error="smoke test failed"))
    db.session.commit()
    assert releases.newest_release("stable").name == "r1"
    client.post("/api/v1/hubs", json={"slug": "late", "institution": "north", "cluster": "fast"}, headers=fleet)
    assert hub("late").release.name == "r1"
    for name, reason in (("r2-preparing", "A preparing release cannot be used by hubs or rolled out: wait until"),
                         ("r3-failed", "Release r3-failed (smoke test failed): A failed release cannot be used")):
        refused = client.post("/api/v1/rollouts", json={"release": name, "target": {"channel": "stable"}},
                              headers=fleet)
        assert refused.status_code == 422 and reason in refused.get_json()["errors"]["json"]["release"][0]


def test_an_unused_release_is_deleted_a_used_one_is_refused_with_a_sentence(client, fleet):
    assert client.post("/api/v1/releases", json={"name": "spare", "jupyterhub_version": "6.1.1"},
                       headers=fleet).status_code == 201
    assert client.delete("/api/v1/releases/spare", headers=fleet).status_code == 204
    assert client.get("/api/v1/releases/spare", headers=fleet).status_code == 404
    used = client.delete("/api/v1/releases/r1", headers=fleet)
    assert used.status_code == 409
    assert used.get_json()["message"] == "Release r1 is used by 3 hubs; retract it instead."
    assert client.get("/api/v1/releases/r1", headers=fleet).get_json()["state"] == "ready"
    actions = [e.action for e in db.session.execute(db.select(AuditEvent)).scalars()]
    assert actions.count("release.delete") == 1


def test_a_deleted_hub_still_counts_as_a_user(client, fleet, run_worker):
    client.delete("/api/v1/hubs/hub-0", headers=fleet)
    run_worker()
    client.post("/api/v1/releases", json={"name": "r2", "jupyterhub_version": "6.1.1"}, headers=fleet)
    client.post("/api/v1/hubs", json={"slug": "only", "institution": "north", "cluster": "fast"}, headers=fleet)
    client.delete("/api/v1/hubs/only", headers=fleet)
    run_worker()
    refused = client.delete("/api/v1/releases/r2", headers=fleet)
    assert refused.status_code == 409 and refused.get_json()["message"] == \
        "Release r2 is used by 1 hub; retract it instead."


def test_a_retracted_release_keeps_its_hubs_but_is_offered_to_nobody(client, fleet, run_worker):
    retracted = client.post("/api/v1/releases/r1/retract", headers=fleet)
    assert retracted.status_code == 200 and retracted.get_json()["state"] == "retracted"
    assert retracted.get_json()["retracted_at"]
    assert {(hub(f"hub-{i}").state, hub(f"hub-{i}").release.name) for i in range(3)} == {("running", "r1")}
    client.post("/api/v1/hubs", json={"slug": "late", "institution": "north", "cluster": "fast"}, headers=fleet)
    assert hub("late").release is None  # the platform default: no ready release on its channel
    refused = client.post("/api/v1/rollouts", json={"release": "r1", "target": {"hubs": ["late"]}}, headers=fleet)
    assert refused.status_code == 422
    assert "A retracted release cannot be used by hubs or rolled out" in refused.get_json()["errors"]["json"][
        "release"][0]
    again = client.post("/api/v1/releases/r1/retract", headers=fleet)
    assert again.status_code == 409 and again.get_json()["message"].startswith("A retracted release cannot be "
                                                                               "retracted")
    assert client.delete("/api/v1/releases/r1", headers=fleet).status_code == 409  # its hubs still run it


def test_a_release_being_rolled_out_cannot_be_retracted_and_a_failed_one_is_retried(client, fleet):
    client.post("/api/v1/releases", json={"name": "r2", "jupyterhub_version": "6.1.1"}, headers=fleet)
    rollout = client.post("/api/v1/rollouts", json={"release": "r2", "target": {"channel": "stable"}},
                          headers=fleet).get_json()
    refused = client.post("/api/v1/releases/r2/retract", headers=fleet)
    assert refused.status_code == 409
    assert refused.get_json()["message"] == f"Release r2 is being rolled out (rollout {rollout['id']}); " \
                                            "abort that rollout first."
    ready = client.post("/api/v1/releases/r2/retry", headers=fleet)
    assert ready.status_code == 409 and ready.get_json()["message"] == "A ready release cannot be prepared again."
    db.session.add(Release(name="r3", jupyterhub_version="6.1.1", state="failed", error="the index was down"))
    db.session.commit()
    retried = client.post("/api/v1/releases/r3/retry", headers=fleet)
    assert retried.status_code == 202
    body = client.get("/api/v1/releases/r3", headers=fleet).get_json()
    assert (body["state"], body["error"], body["operation"]) == ("preparing", "", retried.get_json()["operation"])


def test_pages_show_state_and_refuse_with_the_sentence(app, client, fleet, create_user, login):
    db.session.add(Release(name="broken", jupyterhub_version="6.1.1", state="failed",
                           error="the smoke-test hub stopped while starting: no such authenticator"))
    db.session.commit()
    login(client, create_user("operator"))
    index = client.get("/releases").get_data(as_text=True)
    assert 'data-status="failed"' in index and "no such authenticator" in index
    assert '<option>broken</option>' not in index  # not offered for rollouts
    page = client.get("/releases/r1").get_data(as_text=True)
    assert 'data-status="ready"' in page and "3 running hubs" in page
    response = client.post("/releases/r1/delete", data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert response.status_code == 200
    assert "Release r1 is used by 3 hubs; retract it instead." in response.get_data(as_text=True)
    client.post("/releases/r1/retract", data={"csrf_token": csrf_from(page)})
    assert "runs retracted release" in client.get("/hubs/hub-0").get_data(as_text=True)
    assert client.post("/releases/r1/retract", data={}).status_code == 400  # no CSRF token, nothing done
    response = client.post("/releases/broken/delete", data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "Release broken deleted." in response.get_data(as_text=True)


def test_the_publish_form_shows_why_a_version_is_refused(client, create_user, login):
    login(client, create_user("operator"))
    token = csrf_from(client.get("/releases").get_data(as_text=True))
    refused = client.post("/releases", data={"csrf_token": token, "name": "future", "jupyterhub_version": "9.9.9",
                                             "channel": "stable"})
    assert refused.status_code == 422
    assert 'id="jupyterhub_version-error">JupyterHub 9.9.9 does not exist on the package index' in \
        refused.get_data(as_text=True)
    published = client.post("/releases", data={"csrf_token": token, "name": "today", "jupyterhub_version": "5.4.6",
                                               "channel": "stable"})
    assert published.status_code == 302 and published.headers["Location"] == "/releases/today"
    assert db.session.query(Release).count() == 1
