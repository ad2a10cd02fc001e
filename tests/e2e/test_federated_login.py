"""Federated login with real parts: one sign-on across two real local JupyterHubs.

A real OpenID provider (npm oidc-provider) is North College's IdP; the console (a real HTTP server) logs people in
through it and is itself the OpenID provider of North's two hubs, which run OAuthenticator's GenericOAuthenticator
against it.  Debian's Chromium walks the whole journey of a student: IdP login, My hubs, Launch, JupyterLab, then
the second hub without any credential.  A signed-in person who is not a member is refused by the hub itself; a person
whose membership is revoked is refused at their next login.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest

from clusters.local import LocalBackend
from console.extensions import db
from console.models import Hub, Identity, User
from console.services.institutions import ensure_local_cluster
from tests.conftest import PASSWORD, csrf_from
from tests.e2e.test_oidc_login import wait_op
from tests.helpers import wait_for
from tests.idp.provider import OidcProvider, login_through

# One database: what these steps store is tested on SQLite and PostgreSQL by the console's own tests; the real hubs
# are the point here, and they run the same on either.
pytestmark = [pytest.mark.timeout(420), pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
SECRET = "north-console-client-secret-3b8e"
PEOPLE = {"ada": {"sub": "ada-1", "email": "ada@north.edu", "name": "Ada", "groups": ["students"]},
          "eve": {"sub": "eve-1", "email": "eve@north.edu", "name": "Eve", "groups": ["visitors"]},
          "cal": {"sub": "cal-1", "email": "cal@north.edu", "name": "Cal", "groups": ["guests"]}}
SLUGS = ("north-1", "north-2")


@pytest.fixture
def north(app, ctx, client, create_institution, create_user, api_headers, live_server):
    """North College: its IdP (students are members of every North hub), federated login, two running hubs."""
    from console.worker import start_in_process

    app.config["PUBLIC_URL"] = live_server
    clients = [{"client_id": "console-north", "client_secret": SECRET,
                "redirect_uris": [f"{live_server}/login/idp/north/callback"]}]
    idp = OidcProvider(clients=clients, users=PEOPLE).start()
    app.config["OUTBOUND_ALLOW"] = [f"127.0.0.1:{idp.port}"]
    create_institution("north", "North College")
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    operator_account = create_user("operator")
    operator = api_headers(operator_account)
    response = client.put("/api/v1/institutions/north/idp", headers=operator, json={
        "discovery_url": idp.issuer, "client_id": "console-north", "client_secret": SECRET,
        "scopes": "openid profile email groups", "member_claim": "groups", "member_values": ["students"]})
    assert response.status_code == 200, response.get_json()
    # Federated before the hubs exist: they start with it.
    response = client.put("/api/v1/institutions/north/config", headers=operator,
                          json={"auth": {"authenticator_class": "federated"}, "environment": {}})
    assert response.status_code == 200, response.get_json()
    thread, stop = start_in_process(app)
    ops = [client.post("/api/v1/hubs", json={"slug": slug, "institution": "north", "cluster": "local"},
                       headers=operator).get_json()["operation"] for slug in SLUGS]
    for op in ops:
        wait_op(client, operator, op)
    hubs = {slug: client.get(f"/api/v1/hubs/{slug}", headers=operator).get_json()["url"] for slug in SLUGS}
    yield {"console": live_server, "idp": idp, "hubs": hubs, "operator": operator,
           "operator_email": operator_account.email}
    for slug in SLUGS:
        client.delete(f"/api/v1/hubs/{slug}", headers=operator)
    for slug in SLUGS:
        wait_for(lambda: client.get(f"/api/v1/hubs/{slug}", headers=operator).status_code == 404, 60,
                 what=f"{slug} to be deleted")
    stop.set()
    thread.join(30)
    idp.stop()


def sign_in_at_idp(page, idp_origin: str, login: str) -> None:
    """Fill the IdP's sign-in form (and its consent form, if it shows one) until it sends the browser back."""
    for _ in range(4):
        page.wait_for_load_state()
        if not page.url.startswith(idp_origin):
            return
        if page.locator("input[name=login]").count():
            page.fill("input[name=login]", login)
            page.fill("input[name=password]", "any")
        page.locator("button[type=submit]").first.click()
        page.wait_for_load_state()


def person(subject: str) -> User:
    db.session.expire_all()
    return db.session.execute(db.select(User).join(Identity, Identity.user_id == User.id)
                              .where(Identity.subject == subject)).unique().scalar_one()


def hub_api(slug: str) -> httpx.Client:
    """The hub's REST API with the console's own token for it."""
    state, url = db.session.execute(db.select(Hub.backend_state, Hub.url).where(Hub.slug == slug)).one()
    return httpx.Client(base_url=url + "hub/api/", timeout=10,
                        headers={"Authorization": f"token {LocalBackend(root='/').api_token(state)}"})


def open_hub(web: httpx.Client, hub_url: str) -> httpx.Response:
    """Open a hub's login as a browser would, following every redirect (hub, console, back to the hub)."""
    return web.get(hub_url + "hub/oauth_login", follow_redirects=True)


def test_one_sign_on_across_two_real_hubs_members_only(north, browser, client, tmp_path):
    console, hubs, idp = north["console"], north["hubs"], north["idp"]

    # Ada, a student, in Chromium: IdP login, My hubs, Launch, JupyterLab.
    page = browser.new_page()
    visits = []
    page.on("request", lambda request: visits.append(request.url))
    page.goto(f"{console}/login")
    page.click("a[data-idp=north]")
    sign_in_at_idp(page, idp.issuer, "ada")
    page.wait_for_url(f"{console}/me/hubs", timeout=30000)
    for slug in SLUGS:
        assert page.locator("tr", has_text=slug).get_by_role("link", name="Launch").count() == 1
    page.screenshot(path=str(tmp_path / "1-my-hubs.png"), full_page=True)
    for number, slug in enumerate(SLUGS, start=2):
        page.goto(f"{console}/me/hubs")
        before = len(visits)
        page.locator("tr", has_text=slug).get_by_role("link", name="Launch").click()
        page.wait_for_url(re.compile(re.escape(hubs[slug]) + r"user/ada/lab"), timeout=120000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=120000)  # JupyterLab's shell is up
        page.screenshot(path=str(tmp_path / f"{number}-{slug}-lab.png"))
        # No credential asked on the way: the browser never went back to the IdP.
        assert not [url for url in visits[before:] if url.startswith(idp.issuer)], visits[before:]
        assert any(url.startswith(f"{console}/oauth/authorize") for url in visits[before:])

    # Each hub knows Ada by her console username, as a member; the console tracks no password for her.
    assert person("ada-1").username == "ada" and person("ada-1").password_hash == ""

    # An operator opens a hub first, logs in with a password on the console's form and is sent on to the hub (not
    # stopped by the form's own policy) - which refuses them: an operator is no member of it.
    other = browser.new_page()
    responses = []
    other.on("response", lambda response: responses.append((response.url, response.status)))
    other.goto(hubs["north-1"] + "hub/")
    other.fill("input[name=email]", north["operator_email"])
    other.fill("input[name=password]", PASSWORD)
    other.click("button[type=submit]")
    other.wait_for_url(re.compile(re.escape(hubs["north-1"]) + "hub/oauth_callback"), timeout=30000)
    assert [status for url, status in responses if "/hub/oauth_callback" in url] == [403]

    # Eve signs into the console through the same IdP, but is no member of North's hubs: the hub itself refuses her.
    with httpx.Client(timeout=30) as eve:
        assert login_through(eve, f"{console}/login/idp/north", "eve").status_code == 200
        refused = open_hub(eve, hubs["north-1"])
        assert refused.status_code == 403 and str(refused.url).startswith(hubs["north-1"] + "hub/oauth_callback")

    # Cal joins north-2 by an invitation link, signs in there; revoked, the next login is refused.
    link = client.post("/api/v1/hubs/north-2/invitations", headers=north["operator"],
                       json={"expires_in": 3600, "max_uses": 1}).get_json()["link"]
    link = console + urlsplit(link).path  # made by the API's test client: the live console's address instead
    with httpx.Client(timeout=30) as cal:
        assert login_through(cal, f"{console}/login/idp/north", "cal").status_code == 200
        invitation = cal.get(link)
        joined = cal.post(link, data={"csrf_token": csrf_from(invitation.text)})
        assert joined.status_code == 302, joined.text[:300]
        assert open_hub(cal, hubs["north-2"]).status_code == 200
        assert open_hub(cal, hubs["north-1"]).status_code == 403  # invited to north-2 only
        with hub_api("north-2") as api:
            assert "" in api.get("users/cal").json()["servers"]  # the login started Cal's server
        revoked = client.delete(f"/api/v1/hubs/north-2/members/{person('cal-1').id}", headers=north["operator"])
        assert revoked.status_code in (200, 204), revoked.get_data(as_text=True)
        cal.cookies.delete("jupyterhub-hub-login")  # the hub's own cookie gone: a new hub login
        assert open_hub(cal, hubs["north-2"]).status_code == 403
    # ... and the worker stopped the server Cal had there.
    with hub_api("north-2") as api:
        wait_for(lambda: not api.get("users/cal").json()["servers"], 60, what="Cal's server to stop")
    assert db.session.execute(db.select(Hub.state).where(Hub.slug == "north-1")).scalar_one() == "running"
