"""Console login through institutions' own identity providers.

Two real OpenID providers (the npm ``oidc-provider``, tests/idp/provider.py) play institutions A and B.  The console
is driven with Flask's test client; the IdP's pages with httpx, as a browser would: the console's redirect to the
IdP is followed there, the IdP's sign-in form filled, and the IdP's redirect back handed to the console.
"""
from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import pytest

from console.extensions import db
from console.models import AuditEvent, Hub, Identity, InstitutionIdp, LoginState, Membership, User
from console.security import new_api_token
from console.services import identities
from tests.conftest import PASSWORD, csrf_from
from tests.idp.provider import OidcProvider, _FormParser, _fill

SECRETS = {"a": "a-client-secret-7f3c9d", "b": "b-client-secret-51e0aa"}
CONSOLE = "http://localhost"
USERS = {
    "a": {"alice": {"sub": "alice-a", "email": "alice@a.edu", "name": "Alice A", "groups": ["students"]},
          "bob": {"sub": "bob-a", "email": "bob@a.edu", "groups": ["staff"]},
          "mallory": {"sub": "mallory-a", "email": "mallory@a.edu", "userinfo_sub": "somebody-else"}},
    "b": {"alice": {"sub": "alice-b-77", "email": "alice@a.edu", "name": "Alice at B"},
          "carol": {"sub": "carol-b", "email": "carol@b.edu"}},
}


def _provider(key: str) -> OidcProvider:
    return OidcProvider(clients=[{"client_id": f"console-{key}", "client_secret": SECRETS[key],
                                  "redirect_uris": [f"{CONSOLE}/login/idp/inst-{key}/callback"]}],
                        users=USERS[key])


@pytest.fixture(scope="module")
def providers():
    started = {key: _provider(key).start() for key in ("a", "b")}
    yield started
    for provider in started.values():
        provider.stop()


@pytest.fixture
def idps(app, providers, create_institution, create_user, create_cluster, api_headers, client, run_worker,
         own_g_per_request):
    """Institutions A and B with a hub each and their IdPs set through the API (A: members are the "students"
    group; neither vouches for an email domain unless a test says so)."""
    for provider in providers.values():
        provider.set_users(USERS[key_of(provider, providers)])
    app.config["OUTBOUND_ALLOW"] = [f"127.0.0.1:{p.port}" for p in providers.values()]
    institutions = {key: create_institution(f"inst-{key}", f"Institution {key.upper()}") for key in ("a", "b")}
    create_cluster("fast", backend="fake")
    operator = create_user("operator", email="ops@example.org")
    headers = api_headers(operator)
    for key in ("a", "b"):
        response = client.post("/api/v1/hubs", json={"slug": f"hub-{key}", "institution": f"inst-{key}",
                                                     "cluster": "fast"}, headers=headers)
        assert response.status_code == 202, response.get_json()
        body = {"discovery_url": providers[key].issuer, "client_id": f"console-{key}",
                "client_secret": SECRETS[key], "member_claim": "groups" if key == "a" else "",
                "member_values": ["students"] if key == "a" else [],
                "scopes": "openid profile email groups" if key == "a" else "openid email"}
        response = client.put(f"/api/v1/institutions/inst-{key}/idp", json=body, headers=headers)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["issuer"] == providers[key].issuer
    run_worker()
    return {"institutions": institutions, "operator": operator, "headers": headers, "providers": providers}


def key_of(provider, providers) -> str:
    return next(k for k, p in providers.items() if p is provider)


def through_idp(authorize_url: str, login: str) -> str:
    """Sign ``login`` in at the IdP the console sent us to; returns the URL the IdP sends the browser back to."""
    with httpx.Client() as web:
        return _sign_in(web, authorize_url, login)


def _sign_in(web: httpx.Client, authorize_url: str, login: str) -> str:
    response = web.get(authorize_url)
    for _ in range(20):
        location = response.headers.get("location")
        if location:
            url = urljoin(str(response.url), location)
            if url.startswith(CONSOLE + "/"):
                return url
            response = web.get(url)
            continue
        forms = _FormParser()
        forms.feed(response.text)
        assert forms.forms, f"the IdP showed no form: {response.status_code} {response.text[:300]}"
        data, _ = _fill(forms.forms[0], login, "any")
        response = web.post(urljoin(str(response.url), forms.forms[0].action), data=data)
    raise AssertionError("the IdP did not send the browser back")


def start(client, slug: str, **query) -> str:
    response = client.get(f"/login/idp/{slug}" + (f"?{urlencode(query)}" if query else ""))
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


def idp_login(client, slug: str, login: str, **query):
    """The whole login through ``slug``'s IdP; returns the console's answer to the IdP's redirect back."""
    return client.get(through_idp(start(client, slug, **query), login))


def person(issuer: str, subject: str) -> User | None:
    db.session.expire_all()
    identity = db.session.execute(db.select(Identity).filter_by(issuer=issuer, subject=subject)
                                  ).unique().scalar_one_or_none()
    return identity.user if identity else None


def test_a_login_through_a_makes_a_member_of_a_who_sees_only_a_hubs(app, idps, client):
    page = client.get("/login").get_data(as_text=True)
    assert "Log in with Institution A" in page and "Log in with Institution B" in page
    response = idp_login(client, "inst-a", "alice")
    assert response.status_code == 302
    alice = person(idps["providers"]["a"].issuer, "alice-a")
    assert alice.role == "member" and alice.institution.slug == "inst-a" and alice.password_hash == ""
    assert alice.email.endswith("@inst-a.invalid")  # A vouches for no domain: the IdP's email is no label
    rules = db.session.execute(db.select(Membership).filter_by(user_id=alice.id)).unique().scalars().all()
    idp_a = db.session.execute(db.select(InstitutionIdp).filter_by(institution_id=alice.institution_id)).scalar_one()
    assert [(m.source, m.ref, m.institution_id, m.active) for m in rules] == [
        ("rule", f"idp:{idp_a.id}", alice.institution_id, True)]
    hubs = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "hub-a" in hubs and "hub-b" not in hubs
    assert client.get("/account/sessions").status_code == 200  # a console session like a password login's


def test_a_second_idp_is_another_person_until_linked_by_logging_in_there_again(app, idps, client):
    issuer_a, issuer_b = idps["providers"]["a"].issuer, idps["providers"]["b"].issuer
    idp_login(client, "inst-a", "alice")
    other = app.test_client()
    idp_login(other, "inst-b", "alice")  # same email at B, another IdP: not merged
    alice, alice_at_b = person(issuer_a, "alice-a"), person(issuer_b, "alice-b-77")
    assert alice.id != alice_at_b.id and alice_at_b.institution.slug == "inst-b"

    # Alice links her B login from her account: B must authenticate her again (prompt=login).
    page = client.get("/account/logins").get_data(as_text=True)
    assert "Link a login of Institution B" in page and "alice-a" in page
    authorize = start(client, "inst-b", link="1")
    assert parse_qs(urlsplit(authorize).query)["prompt"] == ["login"]
    refused = client.get(through_idp(authorize, "alice"))
    assert refused.status_code == 400 and "belongs to another person" in refused.get_data(as_text=True)
    assert person(issuer_b, "alice-b-77").id == alice_at_b.id  # nothing moved

    # A login of B nobody holds yet links to her.
    users = dict(USERS["b"], alice2={"sub": "alice-b-second", "email": "alice@a.edu"})
    idps["providers"]["b"].set_users(users)
    linked = client.get(through_idp(start(client, "inst-b", link="1"), "alice2"))
    assert linked.status_code == 302 and linked.headers["Location"].endswith("/account/logins")
    assert person(issuer_b, "alice-b-second").id == alice.id
    assert db.session.execute(db.select(AuditEvent).filter_by(action="identity.link")).scalar_one().detail[
        "how"] == "re-authentication"
    page = client.get("/account/logins").get_data(as_text=True)
    assert "alice-a" in page and "alice-b-second" in page

    # Her next login through A, with a changed email, is still her: (issuer, sub), not the email.
    idps["providers"]["a"].set_users({**USERS["a"], "alice": {**USERS["a"]["alice"], "email": "a.l@a.edu"}})
    again = app.test_client()
    assert idp_login(again, "inst-a", "alice").status_code == 302
    assert person(issuer_a, "alice-a").id == alice.id
    assert db.session.execute(db.select(Identity).filter_by(subject="alice-a")).scalar_one().claims["email"] == \
        "a.l@a.edu"

    # Unlinking: one of two goes; the last way to log in stays.
    ids = [i.id for i in db.session.execute(db.select(Identity).filter_by(user_id=alice.id)).scalars()]
    token = csrf_from(client.get("/account/logins").get_data(as_text=True))
    assert client.post("/account/logins/unlink", data={"identity_id": ids[1], "csrf_token": token}).status_code == 302
    last = client.post("/account/logins/unlink", data={"identity_id": ids[0], "csrf_token": token})
    assert last.status_code == 422 and "only way to log in" in last.get_data(as_text=True)


def test_authoritative_issuers_link_a_verified_email_but_an_email_alone_never_links(app, idps, client):
    issuer_a, issuer_b = idps["providers"]["a"].issuer, idps["providers"]["b"].issuer
    # B is no authority for a.edu: its alice@a.edu is someone else, whatever A says.
    db.session.execute(db.update(InstitutionIdp).values(authoritative_domains=["a.edu"])
                       .where(InstitutionIdp.issuer == issuer_a))
    db.session.commit()
    idp_login(client, "inst-a", "alice")
    alice = person(issuer_a, "alice-a")
    assert alice.email == "alice@a.edu"  # A vouches for a.edu: her verified email is her label
    idp_login(app.test_client(), "inst-b", "alice")
    stranger = person(issuer_b, "alice-b-77")
    assert stranger.id != alice.id and stranger.email != "alice@a.edu"

    # Once B is authoritative for a.edu too, a verified email from B is linked to the one person A vouched for
    # with it (audited).
    db.session.execute(db.update(InstitutionIdp).values(authoritative_domains=["a.edu"]))
    db.session.commit()
    idp_login(app.test_client(), "inst-a", "bob")
    bob = person(issuer_a, "bob-a")
    idps["providers"]["b"].set_users({"bob": {"sub": "bob-b", "email": "bob@a.edu"},
                                      "alice3": {"sub": "alice-b-3", "email": "alice@a.edu"},
                                      "unverified": {"sub": "bob-b-4", "email": "bob@a.edu", "email_verified": False}})
    idp_login(app.test_client(), "inst-b", "bob")
    assert person(issuer_b, "bob-b").id == bob.id
    event = db.session.execute(db.select(AuditEvent).filter_by(action="identity.link")).scalar_one()
    assert event.detail["how"] == "authoritative email domain" and event.detail["domain"] == "a.edu"
    # Two people hold verified alice@a.edu from authoritative issuers now (alice, and B's earlier stranger):
    # nobody is guessed.  An unverified email links nobody either.
    idp_login(app.test_client(), "inst-b", "alice3")
    assert person(issuer_b, "alice-b-3").id not in (alice.id, stranger.id)
    idp_login(app.test_client(), "inst-b", "unverified")
    assert person(issuer_b, "bob-b-4").id != bob.id


def test_the_member_rule_is_applied_at_every_login(app, idps, client):
    idp_login(client, "inst-a", "bob")  # staff, not students: no membership
    bob = person(idps["providers"]["a"].issuer, "bob-a")
    assert not db.session.execute(db.select(Membership).filter_by(user_id=bob.id)).first()
    idps["providers"]["a"].set_users({**USERS["a"], "alice": {**USERS["a"]["alice"], "groups": []}})
    idp_login(client, "inst-a", "bob")
    idps["providers"]["a"].set_users(USERS["a"])
    idp_login(client, "inst-a", "alice")
    alice = person(idps["providers"]["a"].issuer, "alice-a")
    assert [m.active for m in db.session.execute(db.select(Membership).filter_by(user_id=alice.id)).scalars()] \
        == [True]
    idps["providers"]["a"].set_users({**USERS["a"], "alice": {**USERS["a"]["alice"], "groups": ["alumni"]}})
    idp_login(app.test_client(), "inst-a", "alice")  # left the group: the rule's grant ends
    db.session.expire_all()
    assert [m.active for m in db.session.execute(db.select(Membership).filter_by(user_id=alice.id)).scalars()] \
        == [False]


def _with_query(url: str, **changes) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode({k: v for k, v in query.items() if v is not None})))


def _refused(response, status: int, words: str):
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert words in text and "Log in to Hubfleet" in text
    return text


def test_every_failure_ends_on_the_login_page_with_a_clear_message(app, idps, client):
    back = through_idp(start(client, "inst-a"), "alice")
    _refused(client.get(_with_query(back, state="forged")), 400, "not valid any more")
    _refused(client.get(_with_query(back, state=None)), 400, "not valid any more")
    _refused(app.test_client().get(back), 400, "not valid any more")  # another browser: not its login
    assert client.get(back).status_code == 302
    _refused(client.get(back), 400, "not valid any more")  # replayed
    assert db.session.query(LoginState).count() == 0

    # Cancelled at the IdP: the IdP comes back with an error.
    authorize = start(client, "inst-a")
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    _refused(client.get(f"/login/idp/inst-a/callback?error=access_denied&state={state}"), 400,
             "cancelled or refused")

    # The IdP's userinfo names another sub than its ID token.
    _refused(idp_login(app.test_client(), "inst-a", "mallory"), 400, "inconsistently")
    assert person(idps["providers"]["a"].issuer, "mallory-a") is None

    # An unknown institution, and a disabled person.
    _refused(client.get("/login/idp/nowhere"), 404, "no institution login")
    alice = person(idps["providers"]["a"].issuer, "alice-a")
    alice.disabled_at = alice.created_at
    db.session.commit()
    _refused(idp_login(app.test_client(), "inst-a", "alice"), 400, "disabled")


def institution_c(app, idps, create_institution, client_auth_methods=None, **client) -> OidcProvider:
    """Institution C with an IdP of its own (started; the caller stops it), set through the API."""
    provider = OidcProvider(clients=[{"client_id": "console-c", "client_secret": "c-secret-1234",
                                      "redirect_uris": [f"{CONSOLE}/login/idp/inst-c/callback"], **client}],
                            users={"dana": {"sub": "dana-c"}}, client_auth_methods=client_auth_methods).start()
    app.config["OUTBOUND_ALLOW"] = [*app.config["OUTBOUND_ALLOW"], f"127.0.0.1:{provider.port}"]
    create_institution("inst-c", "Institution C")
    assert app.test_client().put("/api/v1/institutions/inst-c/idp", headers=idps["headers"], json={
        "discovery_url": provider.issuer, "client_id": "console-c", "client_secret": "c-secret-1234"}
    ).status_code == 200
    return provider


def test_an_idp_that_is_down_is_a_message_not_an_error(app, idps, create_institution):
    provider = institution_c(app, idps, create_institution)
    try:
        client = app.test_client()
        authorize = start(client, "inst-c")
        back = through_idp(authorize, "dana")
    finally:
        provider.stop()
    _refused(client.get(back), 502, "cannot be reached")  # the code exchange finds nobody
    fresh = app.test_client()
    fresh.application.extensions.pop("hubfleet_idp_clients", None)  # no discovery document cached either
    _refused(fresh.get("/login/idp/inst-c"), 502, "cannot be reached")


def test_an_idp_that_takes_the_client_secret_only_in_the_form_body(app, idps, create_institution):
    """Some IdPs refuse HTTP Basic at their token endpoint; their discovery document lists only the form body, and
    the console posts its secret there.  (This provider, like oidc-provider in general, would take either: the test
    checks which the console chose, and that the login goes through.)"""
    provider = institution_c(app, idps, create_institution, client_auth_methods=["client_secret_post"],
                             token_endpoint_auth_method="client_secret_post")
    try:
        response = idp_login(app.test_client(), "inst-c", "dana")
        assert response.status_code == 302 and response.headers["Location"] == "/me/hubs", response.get_data(True)
        assert person(provider.issuer, "dana-c") is not None
        idp = db.session.execute(db.select(InstitutionIdp).filter_by(issuer=provider.issuer)).scalar_one()
        assert identities.client_for(idp).client_kwargs["token_endpoint_auth_method"] == "client_secret_post"
    finally:
        provider.stop()


def test_next_is_honoured_and_open_redirects_are_refused(app, idps, client):
    assert idp_login(client, "inst-a", "alice", next="/account/logins").headers["Location"] == "/account/logins"
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = idp_login(app.test_client(), "inst-a", "alice", next=target)
        assert response.status_code == 302 and response.headers["Location"] == "/me/hubs", target


def test_people_of_an_idp_have_no_password_to_log_in_or_change(app, idps, client):
    idps["providers"]["a"].set_users(USERS["a"])
    db.session.execute(db.update(InstitutionIdp).values(authoritative_domains=["a.edu"]))
    db.session.commit()
    idp_login(client, "inst-a", "alice")
    alice = person(idps["providers"]["a"].issuer, "alice-a")
    assert alice.email == "alice@a.edu"
    other = app.test_client()
    token = csrf_from(other.get("/login").get_data(as_text=True))
    for password in ("", PASSWORD, "anything at all"):
        response = other.post("/login", data={"email": "alice@a.edu", "password": password, "csrf_token": token})
        assert response.status_code == 401
    page = client.get("/account/password").get_data(as_text=True)
    assert "no password here" in page
    token = csrf_from(page)
    response = client.post("/account/password", data={"current_password": "", "new_password": "x" * 20,
                                                      "confirm": "x" * 20, "csrf_token": token})
    assert response.status_code == 422 and "no password here" in response.get_data(as_text=True)


def test_the_console_login_form_and_api_keep_the_secret_write_only(app, idps, client, login, caplog,
                                                                   create_user, api_headers):
    caplog.set_level(logging.DEBUG)
    operator = idps["operator"]
    login(client, operator)
    page = client.get("/institutions/inst-a/console-login")
    assert page.status_code == 200 and "console-a" in page.get_data(as_text=True)
    token = csrf_from(page.get_data(as_text=True))
    # Field-level errors; nothing changes.
    bad = client.post("/institutions/inst-a/console-login", data={
        "csrf_token": token, "discovery_url": "ftp://x", "client_id": "", "client_secret": "new-secret-999",
        "authoritative_domains": "not a domain", "member_claim": "", "member_values": "students", "scopes": "email"})
    text = bad.get_data(as_text=True)
    assert bad.status_code == 422
    for field in ("discovery_url", "client_id", "authoritative_domains", "member_claim", "scopes"):
        assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', text), field
    assert "new-secret-999" not in text
    # A discovery URL the guarded client may not reach, and one that answers no discovery document.
    private = client.post("/institutions/inst-a/console-login", data={
        "csrf_token": token, "discovery_url": "http://127.0.0.1:9/", "client_id": "console-a"})
    assert private.status_code == 422 and "plain http://" in private.get_data(as_text=True)
    nothing = client.post("/institutions/inst-a/console-login", data={
        "csrf_token": token, "discovery_url": f"{idps['providers']['a'].issuer}/nothing", "client_id": "console-a"})
    assert nothing.status_code == 422 and "Could not fetch" in nothing.get_data(as_text=True)
    # A blank secret keeps the stored one; logins still work.
    kept = client.post("/institutions/inst-a/console-login", data={
        "csrf_token": token, "discovery_url": idps["providers"]["a"].issuer, "client_id": "console-a",
        "client_secret": "", "member_claim": "groups", "member_values": "students\nstaff"})
    assert kept.status_code == 302
    assert idp_login(app.test_client(), "inst-a", "bob").status_code == 302  # staff are members now
    assert person(idps["providers"]["a"].issuer, "bob-a") is not None

    # Institution admins read the settings, never set them.
    admin = create_user("institution_admin", institution=idps["institutions"]["a"])
    admin_client = login(app.test_client(), admin)
    assert admin_client.get("/institutions/inst-a/console-login").status_code == 200
    admin_headers = api_headers(admin)
    assert client.put("/api/v1/institutions/inst-a/idp", headers=admin_headers, json={
        "discovery_url": idps["providers"]["a"].issuer, "client_id": "x"}).status_code == 403
    got = client.get("/api/v1/institutions/inst-a/idp", headers=admin_headers).get_json()
    assert got["client_secret_set"] is True and "client_secret" not in got and got["member_values"] == [
        "students", "staff"]

    everything = [client.get("/institutions/inst-a/console-login").get_data(as_text=True), str(got), caplog.text,
                  str([(e.action, e.target, e.detail) for e in db.session.execute(db.select(AuditEvent)).scalars()])]
    for secret in SECRETS.values():
        assert not any(secret in text for text in everything)
    stored = db.session.execute(db.select(InstitutionIdp.client_secret)).scalars().all()
    assert all(s and not any(secret in s for secret in SECRETS.values()) for s in stored)  # encrypted at rest

    assert client.delete("/api/v1/institutions/inst-b/idp", headers=idps["headers"]).status_code == 204
    assert client.delete("/api/v1/institutions/inst-b/idp", headers=idps["headers"]).status_code == 204
    assert "Log in with Institution B" not in app.test_client().get("/login").get_data(as_text=True)


def test_a_person_of_a_invited_to_a_hub_of_b_by_a_link_joins_it_and_sees_it_beside_as(app, idps, client):
    """The journey across institutions: alice logs in through A's IdP and sees A's hub; B's admin sends her a link
    to B's hub; she opens it, joins, and My hubs lists both (the page and the API)."""
    assert idp_login(client, "inst-a", "alice").status_code == 302
    invited = client.application.test_client().post(
        "/api/v1/hubs/hub-b/invitations", json={"expires_in": 3600, "max_uses": 1}, headers=idps["headers"])
    assert invited.status_code == 201, invited.get_json()
    link = urlsplit(invited.get_json()["link"]).path
    page = client.get(link)
    assert page.status_code == 200 and "hub-b" in page.get_data(as_text=True)
    joined = client.post(link, data={"csrf_token": csrf_from(page.get_data(as_text=True))})
    assert joined.status_code == 302 and joined.headers["Location"].endswith("/me/hubs")
    listed = client.get("/me/hubs").get_data(as_text=True)
    assert "hub-a" in listed and "hub-b" in listed
    alice = person(idps["providers"]["a"].issuer, "alice-a")
    assert f"{alice.username} · member" in listed and alice.email not in listed  # no placeholder address shown
    token = client.application.test_client()  # the same person through the API, with a token of her own
    headers = {"Authorization": f"Bearer {new_api_token(alice)}"}
    db.session.commit()
    rows = token.get("/api/v1/me/hubs", headers=headers).get_json()
    assert {(row["hub"], row["source"]) for row in rows} == {("hub-a", "rule"), ("hub-b", "invitation")}
    # The link had one use: a second person is refused, and nothing is granted to them.
    other = client.application.test_client()
    assert idp_login(other, "inst-b", "carol").status_code == 302
    again = other.get(link)
    assert "used up" in again.get_data(as_text=True)
    carol = person(idps["providers"]["b"].issuer, "carol-b")
    assert not db.session.execute(db.select(Membership).filter_by(user_id=carol.id, hub_id=db.session.execute(
        db.select(Hub.id).filter_by(slug="hub-b")).scalar_one())).first()


def test_a_hub_of_each_institution_exists(idps):
    """The fixture's hubs are live, so My hubs has something to tell apart."""
    assert {h.slug for h in db.session.execute(db.select(Hub)).unique().scalars()} == {"hub-a", "hub-b"}


def test_institution_login_in_chromium_from_the_login_page_to_my_hubs(app, idps, live_server, browser,
                                                                      create_institution, run_worker):
    """A real browser: the console's login page, the IdP's sign-in form, back to the console logged in."""
    provider = OidcProvider(clients=[{"client_id": "console-p", "client_secret": "p-secret-4242",
                                      "redirect_uris": [f"{live_server}/login/idp/inst-p/callback"]}],
                            users={"pat": {"sub": "pat-p", "email": "pat@p.edu", "groups": ["students"]}}).start()
    try:
        app.config["OUTBOUND_ALLOW"] = [*app.config["OUTBOUND_ALLOW"], f"127.0.0.1:{provider.port}"]
        client = app.test_client()
        create_institution("inst-p", "Institution P")
        assert client.post("/api/v1/hubs", json={"slug": "hub-p", "institution": "inst-p", "cluster": "fast"},
                           headers=idps["headers"]).status_code == 202

        def configure():  # off this thread: Playwright's event loop runs here, the guarded client runs its own
            run_worker()
            return client.put("/api/v1/institutions/inst-p/idp", headers=idps["headers"], json={
                "discovery_url": provider.issuer, "client_id": "console-p", "client_secret": "p-secret-4242"})

        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(configure).result().status_code == 200
        page = browser.new_page()
        problems = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(f"{live_server}/login")
        page.click("a[data-idp=inst-p]")
        page.wait_for_selector("input[name=login]")
        assert page.url.startswith(provider.issuer)
        page.fill("input[name=login]", "pat")
        page.fill("input[name=password]", "any")
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server}/me/hubs")  # a member lands on My hubs
        assert "hub-p" in page.content() and "hub-a" not in page.content()
        page.goto(f"{live_server}/account/logins")
        assert "pat-p" in page.content() and "Institution P" in page.content()
        assert problems == [], problems
    finally:
        provider.stop()
    pat = person(provider.issuer, "pat-p")
    assert pat.role == "member" and pat.institution.slug == "inst-p"


# -- pure rules -----------------------------------------------------------------------------------------------------


def test_the_token_endpoint_auth_method_follows_discovery():
    assert identities.token_auth_method({}) == "client_secret_basic"
    assert identities.token_auth_method({"token_endpoint_auth_methods_supported": ["client_secret_post"]}) == \
        "client_secret_post"
    assert identities.token_auth_method({"token_endpoint_auth_methods_supported": [
        "client_secret_post", "client_secret_basic"]}) == "client_secret_basic"


def test_the_member_rule_and_verified_emails_as_pure_rules():
    from console.services.identities import member_rule_matches, verified_email

    rule = InstitutionIdp(member_claim="groups", member_values=["students", "42"])
    assert member_rule_matches(rule, {"groups": ["staff", "students"]})
    assert member_rule_matches(rule, {"groups": "students"}) and member_rule_matches(rule, {"groups": [42]})
    assert not member_rule_matches(rule, {"groups": ["staff"]}) and not member_rule_matches(rule, {})
    assert not member_rule_matches(rule, {"groups": [{"students": True}]})
    assert member_rule_matches(InstitutionIdp(member_claim="", member_values=[]), {})  # no values: everyone
    assert verified_email({"email": "Ann@A.edu", "email_verified": True}) == "ann@a.edu"
    for claims in ({"email": "ann@a.edu"}, {"email": "ann@a.edu", "email_verified": "true"},
                   {"email": "a@b@c", "email_verified": True}, {"email_verified": True}):
        assert verified_email(claims) is None, claims
