"""The HTML side: forms keep input and show field errors, htmx gets fragments, plain POSTs work without JS."""
import pytest

from console.extensions import db
from console.models import Hub, Operation
from tests.conftest import csrf_from


@pytest.fixture
def operator_client(client, create_user, login, create_institution, create_cluster):
    create_institution("north", "North College")
    create_cluster("fast", backend="fake")
    return login(client, create_user("operator"))


def post_form(client, path, data, page=None):
    token = csrf_from(client.get(page or path).get_data(as_text=True))
    return client.post(path, data={**data, "csrf_token": token})


def test_create_hub_through_the_form_then_watch_its_operation(operator_client, run_worker):
    response = post_form(operator_client, "/hubs/new", {"slug": "north-lab", "institution": "north",
                                                       "cluster": "fast"})
    assert response.status_code == 302 and response.headers["Location"] == "/hubs/north-lab"
    page = operator_client.get("/hubs/north-lab").get_data(as_text=True)
    assert 'hx-trigger="every 1s"' in page  # the live log polls while the operation is queued
    run_worker()
    page = operator_client.get("/hubs/north-lab").get_data(as_text=True)
    assert "deployed north-lab" in page and 'hx-trigger="every 1s"' not in page
    fleet = operator_client.get("/").get_data(as_text=True)
    assert 'id="hub-north-lab"' in fleet and 'data-status="healthy"' in fleet and "North College" in fleet


def test_form_errors_are_shown_per_field_and_input_is_kept(operator_client):
    response = post_form(operator_client, "/hubs/new", {"slug": "Bad Slug!", "institution": "nowhere",
                                                       "cluster": "fast"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="slug-error"' in page and 'id="institution-error"' in page and 'id="cluster-error"' not in page
    assert 'value="Bad Slug!"' in page
    assert db.session.query(Hub).count() == 0 and db.session.query(Operation).count() == 0


def test_post_without_csrf_token_is_refused(operator_client):
    response = operator_client.post("/hubs/new", data={"slug": "north-lab", "institution": "north",
                                                       "cluster": "fast"})
    assert response.status_code == 400
    assert db.session.query(Hub).count() == 0


def test_operation_url_serves_page_or_fragment(operator_client):
    post_form(operator_client, "/hubs/new", {"slug": "north-lab", "institution": "north", "cluster": "fast"})
    op_id = db.session.execute(db.select(Operation.id)).scalar_one()
    page = operator_client.get(f"/operations/{op_id}")
    fragment = operator_client.get(f"/operations/{op_id}", headers={"HX-Request": "true"})
    assert "<html" in page.get_data(as_text=True) and 'http-equiv="refresh"' in page.get_data(as_text=True)
    body = fragment.get_data(as_text=True).strip()
    assert body.startswith(f'<section id="operation-{op_id}"') and "<html" not in body
    assert "HX-Request" in page.headers["Vary"] and "HX-Request" in fragment.headers["Vary"]
    assert "HX-Refresh" not in fragment.headers  # still queued: keep polling


def test_finished_operation_fragment_reloads_the_page_around_it(operator_client, run_worker):
    post_form(operator_client, "/hubs/new", {"slug": "north-lab", "institution": "north", "cluster": "fast"})
    run_worker()
    op_id = db.session.execute(db.select(Operation.id)).scalar_one()
    fragment = operator_client.get(f"/operations/{op_id}", headers={"HX-Request": "true"})
    assert fragment.headers["HX-Refresh"] == "true" and "hx-trigger" not in fragment.get_data(as_text=True)
    assert "HX-Refresh" not in operator_client.get(f"/operations/{op_id}").headers


def test_delete_needs_the_typed_slug(operator_client, run_worker):
    post_form(operator_client, "/hubs/new", {"slug": "north-lab", "institution": "north", "cluster": "fast"})
    run_worker()
    wrong = post_form(operator_client, "/hubs/north-lab/delete", {"confirm": "north"})
    assert wrong.status_code == 422 and 'id="confirm-error"' in wrong.get_data(as_text=True)
    assert db.session.query(Operation).filter_by(kind="delete").count() == 0
    right = post_form(operator_client, "/hubs/north-lab/delete", {"confirm": "north-lab"})
    assert right.status_code == 302
    run_worker()
    assert operator_client.get("/hubs/north-lab").status_code == 404


def test_login_rejects_wrong_password_and_redirects_back(client, create_user):
    user = create_user("operator")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    bad = client.post("/login", data={"email": user.email, "password": "nope", "csrf_token": token})
    assert bad.status_code == 401 and "Wrong email or password" in bad.get_data(as_text=True)
    assert client.get("/hubs/new").headers["Location"] == "/login?next=/hubs/new"
    good = client.post("/login?next=/hubs/new", data={"email": user.email, "password": "correct horse battery",
                                                      "csrf_token": token})
    assert good.headers["Location"] == "/hubs/new"
    evil = client.post("/login?next=//evil.example/", data={"email": user.email,
                                                            "password": "correct horse battery",
                                                            "csrf_token": token})
    assert evil.headers["Location"] == "/"


def test_institution_form_field_errors(operator_client):
    response = post_form(operator_client, "/institutions", {"slug": "north", "name": ""}, page="/institutions")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="slug-error"' in page and 'id="name-error"' in page
    created = post_form(operator_client, "/institutions", {"slug": "south", "name": "South U"}, page="/institutions")
    assert created.status_code == 302
    assert "South U" in operator_client.get("/institutions").get_data(as_text=True)
