"""The console as its hubs' OpenID provider, driven as a hub drives it: the authorization request with PKCE through
a signed-in person's browser, the code exchanged at the token endpoint with the hub's client secret in the body,
userinfo with the access token, the ID token checked against the published keys.

Hubs run on the fake backend here (their clients are the console's own rows); the real-hub journey is in
tests/e2e/test_federated_login.py.  Every test runs on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from markupsafe import escape
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.jwk import KeySet

from console.extensions import db
from console.models import AuditEvent, HubClient, Membership, OAuthCode, OAuthToken, Operation, utcnow
from console.services import config as config_service
from console.services import federation, memberships
from tests.conftest import PASSWORD, csrf_from
from tests.console.test_memberships import browser, client, fleet  # noqa: F401 (fixtures)

ISSUER = "https://console.test"


@pytest.fixture
def federated(app, fleet):
    """North's hubs log in through the console.  (Stored as the institution's config directly: how a change rolls
    out is tested elsewhere; the real-hub test applies it through the page.)"""
    app.config["PUBLIC_URL"] = ISSUER + "/"
    fleet["north"].auth = {"authenticator_class": "federated"}
    db.session.commit()
    return fleet


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class Hub:
    """What a hub does, with the credentials the console rendered into its config."""

    def __init__(self, hub, browser_factory):
        values, hub_secrets = federation.hub_login(hub)
        db.session.commit()
        self.client_id, self.secret = values["client_id"], hub_secrets["client_secret"]
        self.redirect_uri = hub.url + "hub/oauth_callback"
        self.api = browser_factory()  # the hub's own HTTP client: no cookies of anyone's

    def authorize(self, browser_, verifier_challenge=None, **extra):
        _, challenge = verifier_challenge or pkce()
        query = {"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                 "scope": "openid profile email groups", "state": "s-1", "code_challenge": challenge,
                 "code_challenge_method": "S256", **extra}
        return browser_.get("/oauth/authorize?" + urlencode({k: v for k, v in query.items() if v is not None}))

    def code(self, browser_, verifier_challenge):
        answer = self.authorize(browser_, verifier_challenge)
        assert answer.status_code == 302, answer.get_data(as_text=True)
        location = urlsplit(answer.headers["Location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == self.redirect_uri
        query = parse_qs(location.query)
        assert query["state"] == ["s-1"]
        return query["code"][0]

    def exchange(self, code, verifier, secret=None):
        return self.api.post("/oauth/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
            "client_id": self.client_id, "client_secret": secret or self.secret, "code_verifier": verifier})

    def login(self, browser_) -> dict:
        verifier, challenge = pkce()
        answer = self.exchange(self.code(browser_, (verifier, challenge)), verifier)
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()

    def userinfo(self, access_token):
        return self.api.get("/oauth/userinfo", headers={"Authorization": f"Bearer {access_token}"})

    def refresh(self, refresh_token):
        return self.api.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                                   "client_id": self.client_id, "client_secret": self.secret})


@pytest.fixture
def hubs(federated, browser):
    return {slug: Hub(hub, browser) for slug, hub in federated["hubs"].items() if slug.startswith("n")}


@pytest.fixture
def person(federated, create_user, browser):
    """A member of nhub1 (only), by an operator's grant, with their signed-in browser."""
    user = create_user("member", email="pat@north.example")
    memberships.grant(user, hub=federated["hubs"]["nhub1"], source="operator")
    db.session.commit()
    return user, browser(user)


def test_discovery_and_keys_describe_the_provider(federated, browser):
    anyone = browser()
    metadata = anyone.get("/.well-known/openid-configuration").get_json()
    OpenIDProviderMetadata(metadata).validate()
    assert metadata["issuer"] == ISSUER and metadata["token_endpoint"] == ISSUER + "/oauth/token"
    assert "groups" in metadata["scopes_supported"] and metadata["code_challenge_methods_supported"] == ["S256"]
    keys = anyone.get("/oauth/jwks").get_json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and "d" not in keys[0] and "p" not in keys[0]


def test_without_a_public_url_federated_login_is_refused_with_a_field_error(app, fleet, client, api_headers):
    app.config["PUBLIC_URL"] = None
    before = db.session.execute(db.select(AuditEvent.id)).all()
    response = client.open(method="PUT", path="/api/v1/institutions/north/config", headers=api_headers(fleet["admin"]),
                           json={"auth": {"authenticator_class": "federated"}, "environment": {}})
    assert response.status_code == 422
    assert "PUBLIC_URL" in response.get_json()["errors"]["json"]["auth.authenticator_class"][0]
    assert db.session.execute(db.select(AuditEvent.id)).all() == before  # nothing changed
    assert app.test_client().get("/.well-known/openid-configuration").status_code == 404


def test_a_member_signs_in_with_the_hubs_own_groups_and_a_signed_id_token(hubs, person, browser, federated):
    user, signed_in = person
    tokens = hubs["nhub1"].login(signed_in)
    assert tokens["token_type"].lower() == "bearer" and tokens["expires_in"] == federation.ACCESS_SECONDS
    assert tokens["refresh_token"] and tokens["scope"] == "openid profile email groups"
    info = hubs["nhub1"].userinfo(tokens["access_token"]).get_json()
    assert info == {"sub": user.username, "preferred_username": user.username, "email": "pat@north.example",
                    "email_verified": True, "groups": ["member"]}
    keys = KeySet.import_key_set(browser().get("/oauth/jwks").get_json())
    claims = jwt.decode(tokens["id_token"], keys).claims
    assert claims["iss"] == ISSUER and claims["aud"] == [hubs["nhub1"].client_id]
    assert claims["sub"] == user.username and claims["groups"] == ["member"]

    # The same person at the other hub of North, which they do not belong to: signed in, but no group there.
    elsewhere = hubs["nhub2"].login(signed_in)
    assert hubs["nhub2"].userinfo(elsewhere["access_token"]).get_json()["groups"] == []
    # North's admin is member and hub admin of every North hub; nobody's claim names another hub's groups.
    admin_tokens = hubs["nhub2"].login(browser(federated["admin"]))
    assert hubs["nhub2"].userinfo(admin_tokens["access_token"]).get_json()["groups"] == ["member", "hub-admin"]
    # A token works at its own hub's client only: another hub's secret cannot refresh it.
    stolen = hubs["nhub2"].api.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "client_id": hubs["nhub2"].client_id, "client_secret": hubs["nhub2"].secret})
    assert stolen.status_code == 400 and stolen.get_json()["error"] == "invalid_grant"


def test_a_visitor_logs_in_first_and_comes_back_to_the_hubs_request(hubs, browser):
    answer = hubs["nhub1"].authorize(browser())
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"][0].startswith("/oauth/authorize?response_type=code")


def test_bad_requests_are_refused_and_never_sent_elsewhere(hubs, person):
    _, signed_in = person
    hub = hubs["nhub1"]
    # A redirect URI that is not the hub's own: shown to the person, never followed.
    for wrong in ("http://evil.example/hub/oauth_callback", hub.redirect_uri + "x", hub.redirect_uri.upper()):
        answer = hub.authorize(signed_in, redirect_uri=wrong)
        assert answer.status_code == 400 and "Location" not in answer.headers, wrong
    # Without one, the hub's own.
    assert hub.authorize(signed_in, redirect_uri=None).headers["Location"].startswith(hub.redirect_uri + "?code=")
    for client_id in ("hub-999999", "hub-x", "nobody", "hub-" + "9" * 40):
        answer = hub.authorize(signed_in, client_id=client_id)
        assert answer.status_code == 400 and "Location" not in answer.headers, client_id
    # No PKCE, or the plain method: the hub is told so at its own callback.
    for extra in ({"code_challenge": None, "code_challenge_method": None}, {"code_challenge_method": "plain"}):
        answer = hub.authorize(signed_in, **extra)
        assert answer.status_code == 302 and answer.headers["Location"].startswith(hub.redirect_uri)
        assert "error=invalid_request" in answer.headers["Location"]
    # The wrong verifier, the wrong secret, a code of another hub's client.
    verifier, challenge = pkce()
    code = hub.code(signed_in, (verifier, challenge))
    assert hub.exchange(code, pkce()[0]).get_json()["error"] == "invalid_grant"
    assert hub.exchange(hub.code(signed_in, (verifier, challenge)), verifier, secret="nope").status_code == 401
    other = hubs["nhub2"]
    assert other.exchange(hub.code(signed_in, (verifier, challenge)), verifier).get_json()["error"] == "invalid_grant"
    assert db.session.execute(db.select(OAuthToken.id)).first() is None  # none of these bought a token
    assert hub.userinfo("not-a-token").status_code == 401


def test_a_replayed_code_is_refused_and_revokes_what_it_bought(hubs, person):
    _, signed_in = person
    hub = hubs["nhub1"]
    verifier, challenge = pkce()
    code = hub.code(signed_in, (verifier, challenge))
    first = hub.exchange(code, verifier).get_json()
    assert hub.userinfo(first["access_token"]).status_code == 200
    again = hub.exchange(code, verifier)
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"
    assert hub.userinfo(first["access_token"]).status_code == 401
    assert hub.refresh(first["refresh_token"]).get_json()["error"] == "invalid_grant"


def test_an_expired_code_is_refused(hubs, person):
    _, signed_in = person
    hub = hubs["nhub1"]
    verifier, challenge = pkce()
    code = hub.code(signed_in, (verifier, challenge))
    db.session.execute(db.update(OAuthCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert hub.exchange(code, verifier).get_json()["error"] == "invalid_grant"


def test_refresh_works_until_the_membership_ends_then_a_new_login_has_no_member_group(hubs, person, federated,
                                                                                       browser):
    user, signed_in = person
    hub = hubs["nhub1"]
    tokens = hub.login(signed_in)
    refreshed = hub.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_json()
    renewed = refreshed.get_json()
    assert hub.userinfo(renewed["access_token"]).get_json()["groups"] == ["member"]
    assert hub.refresh(tokens["refresh_token"]).get_json()["error"] == "invalid_grant"  # used once

    # North's admin ends the membership in the console.
    admin = browser(federated["admin"])
    held = db.session.execute(db.select(Membership).filter_by(user_id=user.id)).unique().scalar_one()
    page = admin.get("/hubs/nhub1")
    ended = admin.post(f"/hubs/nhub1/members/{held.id}/revoke", data={"csrf_token": csrf_from(page.get_data(True))})
    assert ended.status_code in (302, 303), ended.get_data(as_text=True)
    # What the hub holds stops working at once: its next refresh fails, so the hub asks for a new login ...
    assert hub.userinfo(renewed["access_token"]).status_code == 401
    assert hub.refresh(renewed["refresh_token"]).get_json()["error"] == "invalid_grant"
    # ... which the console answers, without the member group: the hub refuses it.
    assert hub.userinfo(hub.login(signed_in)["access_token"]).get_json()["groups"] == []
    event = db.session.execute(db.select(AuditEvent).filter_by(action="membership.revoke")).scalar_one()
    assert event.detail["hub_tokens_revoked"] == 1 and event.detail["servers_stopped"] == ["nhub1"]
    stop = db.session.execute(db.select(Operation).filter_by(kind="stop-server")).unique().scalar_one()
    assert stop.hub.slug == "nhub1" and stop.data == {"username": user.username}  # the worker stops their server


def test_a_disabled_account_loses_its_hub_tokens(hubs, person, federated, api_headers, client):
    user, signed_in = person
    tokens = hubs["nhub1"].login(signed_in)
    response = client.post(f"/api/v1/people/{user.id}/disable", headers=api_headers(federated["operator"]))
    assert response.status_code == 200, response.get_json()
    assert hubs["nhub1"].userinfo(tokens["access_token"]).status_code == 401
    assert hubs["nhub1"].refresh(tokens["refresh_token"]).status_code == 400


def test_a_federated_hub_renders_generic_oauth_against_the_console_and_keeps_its_secrets(hubs, federated, client,
                                                                                         api_headers):
    hub = federated["hubs"]["nhub1"]
    spec = config_service.hub_spec(hub)
    section = spec.config["GenericOAuthenticator"]
    assert spec.config["JupyterHub"]["authenticator_class"] == "hubfleet-federated"
    assert section["client_id"] == hubs["nhub1"].client_id and section["token_url"] == ISSUER + "/oauth/token"
    assert section["allowed_groups"] == ["member"] and section["admin_groups"] == ["hub-admin"]
    assert section["manage_groups"] and section["enable_auth_state"] and section["auth_refresh_age"] == 300
    assert "client_secret" not in section and not spec.config.get("CryptKeeper")  # secrets travel apart ...
    assert spec.secrets["GenericOAuthenticator"]["client_secret"] == hubs["nhub1"].secret  # ... to the hub
    assert len(bytes.fromhex(spec.secrets["CryptKeeper"]["keys"][0])) == 32
    z2jh = config_service.render(hub, "z2jh")
    assert "class FederatedAuthenticator" in z2jh["hub"]["extraConfig"]["hubfleet-federated"]
    assert "authenticator_class" not in z2jh["hub"]["config"]["JupyterHub"]
    headers = api_headers(federated["operator"])
    for path in ("/api/v1/hubs/nhub1/rendered", "/api/v1/hubs/nhub1/rendered?target=z2jh", "/api/v1/hubs/nhub1"):
        text = client.get(path, headers=headers).get_data(as_text=True)
        assert hubs["nhub1"].secret not in text and spec.secrets["CryptKeeper"]["keys"][0] not in text
    stored = db.session.get(HubClient, hub.id).secrets
    assert hubs["nhub1"].secret not in stored  # encrypted at rest
    audit = " ".join(str(e.detail) for e in db.session.execute(db.select(AuditEvent)).scalars())
    assert hubs["nhub1"].secret not in audit


def test_the_login_form_hands_a_hubs_request_on_from_a_page_of_its_own(hubs, person, browser):
    """A redirect chain that starts with the login form may not leave the site (form-action 'self'): the hub's request
    goes on by a page that refreshes to it."""
    user, _ = person
    visitor = browser()
    to_login = hubs["nhub1"].authorize(visitor).headers["Location"]
    page = visitor.get(to_login).get_data(as_text=True)
    answer = visitor.post(to_login, data={"email": user.email, "password": PASSWORD, "csrf_token": csrf_from(page)})
    assert answer.status_code == 200
    target = parse_qs(urlsplit(to_login).query)["next"][0]
    assert f'http-equiv="refresh" content="0;url={escape(target)}"' in answer.get_data(as_text=True)
    assert visitor.get(target).headers["Location"].startswith(hubs["nhub1"].redirect_uri + "?code=")
