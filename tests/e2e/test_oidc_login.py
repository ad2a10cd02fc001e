"""An institution brings its own IdP: a real OpenID provider (npm oidc-provider) and a real local JupyterHub.

The institution admin configures generic-oauth through the console from the IdP's discovery URL, previews and
applies; the hub is reconfigured; a student logs in through the IdP and the hub knows them by the configured claim;
a user outside allowed_groups is refused.
"""
import re

import httpx
import pytest

from clusters.local import LocalBackend
from console.extensions import db
from console.models import Hub
from console.services.institutions import ensure_local_cluster
from tests.conftest import csrf_from
from tests.helpers import wait_for
from tests.idp.provider import OidcProvider, login_through

pytestmark = pytest.mark.timeout(240)
SECRET = "north-idp-client-secret-9d2e"


@pytest.fixture
def running_hub(app, ctx, client, create_institution, create_user, api_headers):
    from console.worker import start_in_process

    institution = create_institution("north", "North College")
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    operator = api_headers(create_user("operator"))
    thread, stop = start_in_process(app)
    op = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                     headers=operator).get_json()["operation"]
    wait_op(client, operator, op)
    hub = client.get("/api/v1/hubs/north-lab", headers=operator).get_json()
    yield hub, operator, create_user("institution_admin", institution=institution)
    client.delete("/api/v1/hubs/north-lab", headers=operator)
    wait_for(lambda: client.get("/api/v1/hubs/north-lab", headers=operator).status_code == 404, 60,
             what="the hub to be deleted")
    stop.set()
    thread.join(30)


def wait_op(client, headers, op_id):
    # the test client's requests share this test's session: forget what an earlier request loaded
    op = wait_for(lambda: db.session.expire_all() or (o := client.get(f"/api/v1/operations/{op_id}",
                                                                      headers=headers).get_json())["state"]
                  in ("succeeded", "failed") and o, 120, what=f"operation {op_id}")
    assert op["state"] == "succeeded", "\n".join(op["log"])


def form_value(page: str, name: str) -> str:
    match = re.search(rf'name="{re.escape(name)}" type="[a-z]+" value="([^"]*)"', page)
    return match.group(1) if match else ""


def test_institution_idp_login_end_to_end(app, client, running_hub, login):
    hub, operator, admin = running_hub
    users = {"ada": {"sub": "u-1", "email": "ada@north.edu", "preferred_username": "ada.lovelace",
                     "name": "Ada", "groups": ["students"]},
             "eve": {"sub": "u-2", "email": "eve@elsewhere.org", "preferred_username": "eve",
                     "name": "Eve", "groups": ["visitors"]}}
    clients = [{"client_id": "north-hub", "client_secret": SECRET,
                "redirect_uris": [hub["url"] + "hub/oauth_callback"]}]
    with OidcProvider(clients=clients, users=users) as idp:
        # The provider serves plain http on loopback: the operator allow-lists exactly it for the console's fetches.
        app.config["OUTBOUND_ALLOW"] = [f"127.0.0.1:{idp.port}"]
        # The institution admin configures their IdP in the console, from its discovery URL.
        login(client, admin)
        page = client.get("/institutions/north/config").get_data(as_text=True)
        token = csrf_from(page)
        assert hub["url"] + "hub/oauth_callback" in page  # the callback URL to register at the IdP
        client.post("/institutions/north/config", data={"csrf_token": token, "action": "switch",
                                                       "auth.authenticator_class": "generic-oauth"})
        discovered = client.post("/institutions/north/config", data={
            "csrf_token": token, "action": "discover", "auth.authenticator_class": "generic-oauth",
            "discovery_url": idp.issuer, "environment.image": "quay.io/jupyter/scipy-notebook:2025-01-06"})
        page = discovered.get_data(as_text=True)
        assert discovered.status_code == 200, page
        endpoints = {k: form_value(page, f"auth.{k}") for k in ("authorize_url", "token_url", "userdata_url")}
        assert all(v.startswith(idp.issuer) for v in endpoints.values()), endpoints
        scope = re.search(r'name="auth.scope"[^>]*>([^<]*)</textarea>', page).group(1).split()
        assert "groups" in scope

        preview = client.post("/institutions/north/config", data={
            "csrf_token": token, "action": "preview", "auth.authenticator_class": "generic-oauth",
            **{f"auth.{k}": v for k, v in endpoints.items()}, "auth.scope": "\n".join(scope),
            "auth.client_id": "north-hub", "auth.client_secret": SECRET, "auth.username_claim": "preferred_username",
            "auth.auth_state_groups_key": "oauth_user.groups", "auth.allowed_groups": "students", "auth.manage_groups": "on",
            "environment.image": "quay.io/jupyter/scipy-notebook:2025-01-06", "environment.default_url": "/lab",
            "environment.cull_timeout": "0"})
        assert preview.status_code == 200 and "+  authenticator_class: generic-oauth" in preview.get_data(True)
        assert client.post("/institutions/north/config/apply", data={"csrf_token": token}).status_code == 302

        # The worker reconfigures the hub; it restarts with the institution's IdP.
        op_id = wait_for(lambda: client.get("/api/v1/hubs", headers=operator) and db.session.execute(
            db.text("SELECT max(id) FROM operation WHERE kind = 'reconfigure'")).scalar(), 10,
            what="the reconfigure operation")
        wait_op(client, operator, op_id)
        state = db.session.execute(db.select(Hub.backend_state).filter_by(slug="north-lab")).scalar_one()
        api = httpx.Client(base_url=hub["url"] + "hub/api/", timeout=10, headers={
            "Authorization": f"token {LocalBackend(root='/').api_token(state)}"})

        # A student in an allowed group logs in through the IdP; the hub knows them by preferred_username.
        with httpx.Client(timeout=10) as browser:
            landed = login_through(browser, hub["url"] + "hub/oauth_login", "ada", follow_callback=False)
            assert landed.status_code == 302 and "/hub/oauth_callback" in str(landed.url), landed.text[:300]
        user = api.get("users/ada.lovelace")
        assert user.status_code == 200 and user.json()["name"] == "ada.lovelace"

        # Someone outside allowed_groups is refused, and never becomes a hub user.
        with httpx.Client(timeout=10) as browser:
            refused = login_through(browser, hub["url"] + "hub/oauth_login", "eve", follow_callback=False)
        assert refused.status_code == 403
        assert api.get("users/eve").status_code == 404
        api.close()

        # The IdP's client secret reached the hub's own config, not the console's pages or API.
        assert SECRET not in client.get("/institutions/north/config").get_data(as_text=True)
        assert SECRET not in client.get("/api/v1/hubs/north-lab/rendered", headers=operator).get_data(True)
