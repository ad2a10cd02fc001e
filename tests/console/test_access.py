"""Who reaches what: every registered route is walked, so a new route cannot slip through unprotected."""
import tempfile

import pytest

from console import create_app
from tests.conftest import csrf_from

PUBLIC = {"auth.login", "healthz"}


def all_routes(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def fill(rule, hub_slug="x-hub", institution_slug="x-inst", operation_id=999999):
    values = {}
    for name in rule.arguments:
        if name == "slug":
            values[name] = institution_slug if "/institutions/" in rule.rule else hub_slug
        elif name == "operation_id":
            values[name] = operation_id
        elif name == "name":
            values[name] = "x-cluster"
        elif name == "rollout_id":
            values[name] = 999999
        elif name == "action":
            values[name] = "start"
        elif name == "filename":
            values[name] = "htmx.min.js"
        else:
            raise AssertionError(f"the walk does not know how to fill <{name}> in {rule.rule}; teach it")
    return _build(rule, values)


def _build(rule, values):
    path = rule.rule
    for name, value in values.items():
        path = path.replace(f"<int:{name}>", str(value)).replace(f"<path:{name}>", str(value))
        path = path.replace(f"<{name}>", str(value))
    return path


def test_the_walk_covers_the_api_and_pages(app):
    endpoints = {rule.endpoint for rule, _ in all_routes(app)}
    assert {"fleet.index", "fleet.hub", "fleet.new_hub", "fleet.delete_hub", "fleet.operation",
            "institutions.index", "api.Hubs", "api.HubItem", "api.OperationItem", "auth.logout"} <= endpoints


@pytest.mark.parametrize("rule,method", [
    pytest.param(rule, method, id=f"{method} {rule.rule}")
    for rule, method in all_routes(create_app({"TESTING": True, "DATABASE_URL": "sqlite://", "SECRET_KEY": "x",
                                               "DATA_DIR": tempfile.mkdtemp()}))
    if rule.endpoint not in PUBLIC])
def test_anonymous_requests_are_refused(client, rule, method):
    path = fill(rule)
    response = client.open(path, method=method)
    if path.startswith("/api/") or path == "/metrics":  # token-only: the API and Prometheus' scrape
        assert response.status_code == 401, path
        assert response.get_json()["code"] == 401
    else:
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login")


def test_api_ignores_session_cookies(client, create_user, login):
    login(client, create_user("operator"))
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/hubs").status_code == 401


def test_bad_token_is_refused(client):
    assert client.get("/api/v1/hubs", headers={"Authorization": "Bearer hf_not-a-token"}).status_code == 401


@pytest.fixture
def two_institutions(create_institution, create_cluster, create_user, api_headers, client, run_worker):
    """Institution a and b with one hub and one operation each; returns (admin of a, b's objects)."""
    a = create_institution("inst-a")
    create_institution("inst-b")
    create_cluster("fast", backend="fake")
    operator = api_headers(create_user("operator"))
    ops = {}
    for inst in ("inst-a", "inst-b"):
        response = client.post("/api/v1/hubs", json={"slug": f"hub-{inst}", "institution": inst, "cluster": "fast"},
                               headers=operator)
        ops[inst] = response.get_json()["operation"]
    run_worker()
    admin = create_user("institution_admin", institution=a)
    return admin, {"hub": "hub-inst-b", "institution": "inst-b", "operation": ops["inst-b"], "own_hub": "hub-inst-a"}


def test_institution_admin_gets_404_for_everything_of_another_institution(app, client, two_institutions, login,
                                                                          api_headers):
    admin, other = two_institutions
    headers = api_headers(admin)
    login(client, admin)
    token = csrf_from(client.get("/hubs/hub-inst-a").get_data(as_text=True))
    checked = 0
    for rule, method in all_routes(app):
        if not rule.arguments - {"filename"} or rule.endpoint in PUBLIC or rule.endpoint == "static":
            continue
        path = _build(rule, {name: {"slug": other["institution"] if "/institutions/" in rule.rule
                                    else other["hub"], "operation_id": other["operation"],
                                    "name": "fast", "rollout_id": 1, "action": "pause"}[name]
                             # clusters and rollouts are the operators' alone
                             for name in rule.arguments})
        if path.startswith("/api/"):
            # A well-formed body, so that only the object's visibility decides the answer.
            body = {"auth": {}, "environment": {}} if path.endswith("/config") else \
                [] if path.endswith("/blackouts") else {}
            query = {"confirm": "fast"} if method == "DELETE" and "/clusters/" in path else None
            response = client.open(path, method=method, headers=headers, json=body if method != "GET" else None,
                                   query_string=query)
        else:
            response = client.open(path, method=method, data={"csrf_token": token, "confirm": other["hub"]})
        assert response.status_code == 404, f"{method} {path} -> {response.status_code}"
        checked += 1
    assert checked >= 9

    # Lists show only their own institution.
    page = client.get("/").get_data(as_text=True)
    assert "hub-inst-a" in page and "hub-inst-b" not in page
    assert [h["slug"] for h in client.get("/api/v1/hubs", headers=headers).get_json()] == ["hub-inst-a"]
    institutions = client.get("/institutions").get_data(as_text=True)
    assert "inst-a" in institutions and "inst-b" not in institutions
    # And the other institution's hub is untouched.
    assert client.get(f"/api/v1/hubs/{other['own_hub']}", headers=headers).get_json()["state"] == "running"
