"""The hub API over the fake backend: create, list, get, delete, validation, OpenAPI."""
import time

import pytest

from console.extensions import db
from console.models import AuditEvent, Hub, Operation


@pytest.fixture
def operator_headers(create_user, api_headers):
    return api_headers(create_user("operator"))


@pytest.fixture
def fleet(create_institution, create_cluster):
    return create_institution("north"), create_cluster("fast", backend="fake")


def create(client, headers, **body):
    return client.post("/api/v1/hubs", json=body, headers=headers)


def test_create_runs_to_running_and_lists(client, operator_headers, fleet, run_worker):
    response = create(client, operator_headers, slug="north-lab", institution="north", cluster="fast")
    assert response.status_code == 202
    op_id = response.get_json()["operation"]
    op = client.get(f"/api/v1/operations/{op_id}", headers=operator_headers).get_json()
    assert op["state"] == "queued" and op["hub"] == "north-lab"

    assert run_worker() == 1
    op = client.get(f"/api/v1/operations/{op_id}", headers=operator_headers).get_json()
    assert op["state"] == "succeeded"
    assert any("deployed north-lab" in line for line in op["log"])

    hubs = client.get("/api/v1/hubs", headers=operator_headers).get_json()
    assert [(h["slug"], h["institution"], h["cluster"], h["state"], h["health"]) for h in hubs] == [
        ("north-lab", "north", "fast", "running", "healthy")]
    assert hubs[0]["url"] == "http://north-lab.fake.invalid/"
    assert hubs[0]["jupyterhub_version"] == "fake"


def test_an_operation_waiting_for_its_hub_says_so_then_ends_with_its_outcome(app, client, operator_headers, fleet,
                                                                           create_cluster):
    from console.worker import Worker

    create_cluster("delayed", backend="fake-delayed", delay=0.5)
    op_id = create(client, operator_headers, slug="north-lab", institution="north", cluster="delayed").get_json()[
        "operation"]
    with app.app_context():
        Worker(app, owner="one-step").run_once()  # deploys, then gives the worker back
        db.session.remove()
    op = client.get(f"/api/v1/operations/{op_id}", headers=operator_headers).get_json()
    assert (op["state"], op["outcome"]) == ("waiting", None)
    assert op["note"] == "waiting for the hub to answer /hub/health" and op["run_after"]
    assert client.get("/api/v1/hubs/north-lab", headers=operator_headers).get_json()["state"] == "provisioning"
    with app.app_context():
        Worker(app, owner="one-step").run_once()  # not due yet: nothing claimed, nothing changed
        db.session.remove()
    assert client.get(f"/api/v1/operations/{op_id}", headers=operator_headers).get_json()["state"] == "waiting"
    time.sleep(0.6)
    with app.app_context():
        Worker(app, owner="another").run_once()
        db.session.remove()
    op = client.get(f"/api/v1/operations/{op_id}", headers=operator_headers).get_json()
    assert (op["state"], op["outcome"], op["note"], op["attempts"]) == ("succeeded", "succeeded", "", 1)
    assert client.get("/api/v1/hubs/north-lab", headers=operator_headers).get_json()["state"] == "running"


def test_delete_returns_operation_and_hub_disappears(client, operator_headers, fleet, run_worker):
    create(client, operator_headers, slug="north-lab", institution="north", cluster="fast")
    run_worker()
    response = client.delete("/api/v1/hubs/north-lab", headers=operator_headers)
    assert response.status_code == 202
    run_worker()
    op = client.get(f"/api/v1/operations/{response.get_json()['operation']}", headers=operator_headers).get_json()
    assert op["state"] == "succeeded"
    assert client.get("/api/v1/hubs/north-lab", headers=operator_headers).status_code == 404
    assert client.get("/api/v1/hubs", headers=operator_headers).get_json() == []
    # the slug is free again
    assert create(client, operator_headers, slug="north-lab", institution="north", cluster="fast").status_code == 202


def test_actions_are_audited(client, operator_headers, fleet, run_worker):
    create(client, operator_headers, slug="north-lab", institution="north", cluster="fast")
    run_worker()
    client.delete("/api/v1/hubs/north-lab", headers=operator_headers)
    actions = [e.action for e in db.session.execute(db.select(AuditEvent).order_by(AuditEvent.id)).scalars()]
    assert actions == ["hub.create", "hub.delete"]


BAD = [
    ({"institution": "north", "cluster": "fast"}, {"slug"}),
    ({"slug": "x", "institution": "north", "cluster": "fast"}, {"slug"}),
    ({"slug": "Bad_Slug", "institution": "north", "cluster": "fast"}, {"slug"}),
    ({"slug": "taken", "institution": "north", "cluster": "fast"}, {"slug"}),
    ({"slug": "ok-hub", "institution": "nowhere", "cluster": "fast"}, {"institution"}),
    ({"slug": "ok-hub", "institution": "north", "cluster": "nowhere"}, {"cluster"}),
    ({"slug": "ok-hub", "institution": "nowhere", "cluster": "nowhere"}, {"institution", "cluster"}),
    ({}, {"slug", "institution", "cluster"}),
    ({"slug": "ok-hub", "institution": "north", "cluster": "fast", "extra": 1}, {"extra"}),
]


@pytest.mark.parametrize("body,fields", BAD)
def test_bad_input_gets_field_errors_and_creates_nothing(client, operator_headers, fleet, run_worker, body, fields):
    create(client, operator_headers, slug="taken", institution="north", cluster="fast")
    before = (db.session.query(Hub).count(), db.session.query(Operation).count())
    response = create(client, operator_headers, **body)
    assert response.status_code == 422
    assert set(response.get_json()["errors"]["json"]) == fields
    db.session.expire_all()
    assert (db.session.query(Hub).count(), db.session.query(Operation).count()) == before


def test_openapi_document_is_generated_from_the_routes(client, operator_headers):
    spec = client.get("/api/v1/openapi.json", headers=operator_headers).get_json()
    assert spec["openapi"].startswith("3.")
    assert {"/api/v1/hubs", "/api/v1/hubs/{slug}", "/api/v1/operations/{operation_id}"} <= set(spec["paths"])
    assert set(spec["paths"]["/api/v1/hubs"]) == {"get", "post"}
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    create_schema = spec["components"]["schemas"]["HubCreate"]
    assert set(create_schema["required"]) == {"slug", "institution", "cluster"}


def test_healthz_needs_no_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}
