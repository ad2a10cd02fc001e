"""The HTML side: forms keep input and show field errors, htmx gets fragments, plain POSTs work without JS."""
import re

import pytest

from console.extensions import db
from console.models import Hub, Institution, Operation
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
    # North has configured no login: the answer shows the hub's first admin credential, once, never cached
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    created = response.get_data(as_text=True)
    assert "<code>first-admin</code>" in created and 'href="/hubs/north-lab"' in created
    password = re.search(r"<dt>Password</dt><dd><code>([^<]+)</code>", created).group(1)
    page = operator_client.get("/hubs/north-lab").get_data(as_text=True)
    assert 'hx-trigger="every 1s"' in page  # the live log polls while the operation is queued
    assert password not in page and "Closed: only the hub&#39;s first admin" in page
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


# -- one status, pages that refresh themselves, no dead ends ------------------------------------------------------

def make_hub(client, run_worker, slug="north-lab", institution="north"):
    post_form(client, "/hubs/new", {"slug": slug, "institution": institution, "cluster": "fast"})
    run_worker()
    return db.session.execute(db.select(Hub).filter_by(slug=slug, state="running")).unique().scalar_one()


def status_of(page: str) -> str:
    """The label of the first one-status badge on a page."""
    match = re.search(r'<span class="badge badge-\w+" data-status="[a-z-]+">([^<]+)</span>', page)
    return match.group(1) if match else ""


def test_one_status_reads_the_same_on_every_page_and_in_the_api(operator_client, run_worker, create_user,
                                                                api_headers):
    make_hub(operator_client, run_worker)
    fleet = operator_client.get("/").get_data(as_text=True)
    row = re.search(r'<tr id="hub-north-lab">(.*?)</tr>', fleet, re.S).group(1)
    assert 'data-status="healthy"' in row and status_of(row) == "Running"
    assert "<th>Health</th>" not in fleet  # one status, not a state and a health that can disagree

    post_form(operator_client, "/hubs/north-lab/restart", {}, page="/hubs/north-lab")
    headers = api_headers(create_user("operator"))
    pages = {path: operator_client.get(path).get_data(as_text=True) for path in ("/", "/hubs/north-lab",
                                                                                 "/institutions/north")}
    for path, page in pages.items():
        assert status_of(page) == "Queued: restart", path
    assert "Waiting for a worker; meanwhile running: answering since" in pages["/hubs/north-lab"]
    listed = operator_client.get("/api/v1/hubs", headers=headers).get_json()
    one = operator_client.get("/api/v1/hubs/north-lab", headers=headers).get_json()
    assert [h["slug"] for h in listed] == ["north-lab"]
    for body in (listed[0], one):
        assert body["status"]["label"] == "Queued: restart" and body["status"]["reason"].startswith(
            "waiting for a worker")
        assert body["state"] == "running" and body["health"] == "healthy"  # the fields clients had stay

    run_worker()
    assert status_of(operator_client.get("/hubs/north-lab").get_data(as_text=True)) == "Running"


def test_fleet_page_runs_as_many_statements_for_many_hubs_as_for_few(app, operator_client, run_worker,
                                                                     create_institution):
    from sqlalchemy import event

    from console.services import operations

    def statements_for_fleet():
        seen = []

        def count(*args):
            seen.append(1)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            page = operator_client.get("/").get_data(as_text=True)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        return len(seen), page

    make_hub(operator_client, run_worker, "north-a")
    few, _ = statements_for_fleet()
    create_institution("south")
    for i in range(8):
        make_hub(operator_client, run_worker, f"south-{i}", "south")
    hub = db.session.execute(db.select(Hub).filter_by(slug="south-3")).unique().scalar_one()
    operations.enqueue(hub, "restart", "ops@example.org")  # a pending operation beside finished ones
    db.session.commit()
    many, page = statements_for_fleet()
    assert page.count('id="hub-') == 9 and "Queued: restart" in page
    assert many == few


def test_hub_and_alerts_pages_refresh_themselves(operator_client, run_worker):
    make_hub(operator_client, run_worker)
    for path, root in (("/hubs/north-lab", "hub-detail"), ("/alerts", "alerts-list")):
        page = operator_client.get(path).get_data(as_text=True)
        assert f'<div id="{root}" hx-get="{path}" hx-trigger="every 5s" hx-swap="outerHTML">' in page
        fragment = operator_client.get(path, headers={"HX-Request": "true"}).get_data(as_text=True).strip()
        assert fragment.startswith(f'<div id="{root}"') and "<html" not in fragment, path


def test_operation_panel_shows_what_it_waits_for_then_its_typed_outcome(operator_client, run_worker):
    from console.models import OUTCOME_ROLLED_BACK
    from console.services import operations

    hub = make_hub(operator_client, run_worker)
    op = operations.enqueue(hub, "upgrade", "ops@example.org")
    db.session.commit()
    op.state = "running"
    operations.requeue(op, 30, "waiting for the hub to answer /hub/health")
    panel = operator_client.get(f"/operations/{op.id}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'data-status="waiting"' in panel and "Waiting for the hub to answer /hub/health <span" in panel
    assert 'hx-trigger="every 1s"' in panel
    assert "Upgrading" in operator_client.get("/hubs/north-lab").get_data(as_text=True)

    operations.finish(op, OUTCOME_ROLLED_BACK, "upgrade to r2 failed (no answer); rolled back to r1")
    panel = operator_client.get(f"/operations/{op.id}").get_data(as_text=True)
    assert 'data-status="rolled_back">Rolled back</span>' in panel and "Waiting for the hub" not in panel
    assert '<p class="notice">upgrade to r2 failed (no answer); rolled back to r1</p>' in panel
    listed = operator_client.get("/hubs/north-lab").get_data(as_text=True)
    assert 'data-status="rolled_back"' in listed


def test_a_deleted_hub_says_what_happened_to_it(app, operator_client, run_worker, create_user, login,
                                                 create_institution):
    hub = make_hub(operator_client, run_worker)
    post_form(operator_client, "/hubs/north-lab/delete", {"confirm": "north-lab"})
    run_worker()
    delete_op = db.session.execute(db.select(Operation).filter_by(kind="delete")).unique().scalar_one()
    db.session.refresh(hub)
    gone = operator_client.get("/hubs/north-lab")
    text = gone.get_data(as_text=True)
    assert gone.status_code == 404
    assert f"north-lab was deleted on {hub.deleted_at:%Y-%m-%d %H:%M} UTC by {delete_op.actor}." in text
    assert 'href="/">Back to the fleet</a>' in text and f'href="/operations/{delete_op.id}"' in text
    # A hub page that polls it reloads whole, and so shows this instead of its last fragment.
    assert operator_client.get("/hubs/north-lab", headers={"HX-Request": "true"}).headers["HX-Refresh"] == "true"
    # Its operations still open.
    assert operator_client.get(f"/operations/{delete_op.id}").status_code == 200

    # The institution's admin is told too; another institution's admin learns nothing.
    own_admin = create_user("institution_admin", institution=db.session.get(Institution, hub.institution_id))
    stranger_admin = create_user("institution_admin", institution=create_institution("south"))
    with app.app_context():  # a context of their own: requests share the test's ``g`` otherwise
        own = login(app.test_client(), own_admin)
        assert "north-lab was deleted on" in own.get("/hubs/north-lab").get_data(as_text=True)
    with app.app_context():
        other = login(app.test_client(), stranger_admin)
        stranger = other.get("/hubs/north-lab")
        assert stranger.status_code == 404 and "deleted" not in stranger.get_data(as_text=True)
        never = other.get("/hubs/never-was")
        assert stranger.get_data(as_text=True) == never.get_data(as_text=True)

    # The slug is free again: a new hub of that name is the one its link shows.
    make_hub(operator_client, run_worker)
    assert operator_client.get("/hubs/north-lab").status_code == 200


def test_alerts_of_a_deleted_hub_are_closed_by_the_monitor(app, operator_client, run_worker):
    from datetime import timedelta

    from console.models import Alert, utcnow
    from console.monitor import Monitor
    from console.services import monitoring

    hub = make_hub(operator_client, run_worker)
    hub.health, hub.health_since = "down", utcnow() - timedelta(hours=1)
    hub.status_message = "no answer to 3 probes in a row: connection refused"
    monitoring.evaluate_alerts([hub], utcnow())
    db.session.commit()
    alert = db.session.execute(db.select(Alert)).unique().scalar_one()
    assert alert.resolved_at is None
    post_form(operator_client, "/hubs/north-lab/delete", {"confirm": "north-lab"})
    run_worker()
    Monitor(app).tick()
    db.session.refresh(alert)
    assert alert.resolved_at is not None
    page = operator_client.get("/alerts").get_data(as_text=True)
    row = re.search(rf'<tr id="alert-{alert.id}">(.*?)</tr>', page, re.S).group(1)
    assert "closed: the hub was deleted" in row and 'data-status="deleted">Deleted</span>' in row
    assert ">open<" not in row


def test_a_forgotten_cluster_says_what_happened_to_it(client, operator_client, create_user, api_headers, login,
                                                      app, create_institution):
    kubeconfig = ("kind: Config\nclusters: [{name: c, cluster: {server: 'https://k8s.example.edu:6443'}}]\n"
                  "contexts: [{name: c, context: {cluster: c}}]\ncurrent-context: c\n")
    operator = create_user("operator")
    headers = api_headers(operator)
    assert client.post("/api/v1/clusters/register", json={"name": "prod", "kubeconfig": kubeconfig},
                       headers=headers).status_code == 201
    page = operator_client.get("/clusters/prod").get_data(as_text=True)
    assert "Forget…" in page and "Change and re-plan" not in page  # what the lifecycle allows, nothing else
    assert client.delete("/api/v1/clusters/prod?confirm=prod", headers=headers).get_json() == {"operation": None}
    gone = operator_client.get("/clusters/prod")
    text = gone.get_data(as_text=True)
    assert gone.status_code == 404 and "prod was forgotten on " in text and f"by {operator.email}." in text
    assert 'href="/clusters">Back to the clusters</a>' in text
    admin_user = create_user("institution_admin", institution=create_institution("south"))
    with app.app_context():
        admin = login(app.test_client(), admin_user)
        refused = admin.get("/clusters/prod")
        assert refused.status_code == 404 and "forgotten" not in refused.get_data(as_text=True)
