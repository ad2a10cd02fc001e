"""Who reaches what: every registered route is walked, so a new route cannot slip through unprotected (what each
role gets from each route is walked in test_permissions.py)."""
import tempfile

import pytest

from console import create_app
from console.security import PUBLIC_ENDPOINTS

PUBLIC = PUBLIC_ENDPOINTS  # pages anyone may open: the login form, the health check, an invitation link's page


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
        elif name.endswith("_id"):
            values[name] = 999999
        elif name == "name":
            values[name] = "x-cluster"
        elif name == "rollout_id":
            values[name] = 999999
        elif name == "action":
            values[name] = "start"
        elif name == "filename":
            values[name] = "htmx.min.js"
        elif name == "token":
            values[name] = "not-a-token"
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
