"""People managed in the console: invitation links (single use, expiring, race-safe), disable, enable, remove.

Everything goes through HTTP (the test client), the API with bearer tokens, and the real database: every test runs
on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import contextvars
import threading
from datetime import timedelta

import pytest

from console.extensions import db
from console.models import ApiToken, AuditEvent, ConfigDraft, Invitation, User, UserSession, utcnow
from console.services import people as people_service
from tests.conftest import PASSWORD, csrf_from

NEW_PASSWORD = "a brand new passphrase"


class Browser:
    """A test client whose requests run outside the test's app context, as another browser's would: each gets its
    own ``g`` and database session.  (Inside the test's context every client would share ``g``, and with it the CSRF
    token Flask-WTF caches there.)"""

    def __init__(self, app, user=None):
        self.client = app.test_client()
        if user is not None:
            token = csrf_from(self.get("/login").get_data(as_text=True))
            response = self.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token})
            assert response.status_code == 302, response.get_data(as_text=True)

    def open(self, *args, **kwargs):
        return contextvars.Context().run(self.client.open, *args, **kwargs)

    def get(self, *args, **kwargs):
        return self.open(*args, method="GET", **kwargs)

    def post(self, *args, **kwargs):
        return self.open(*args, method="POST", **kwargs)

    def delete(self, *args, **kwargs):
        return self.open(*args, method="DELETE", **kwargs)


@pytest.fixture
def browser(app):
    """``browser(user=None)``: a new browser, logged in as ``user`` when given."""
    return lambda user=None: Browser(app, user)


@pytest.fixture
def client(app):
    """The API client of these tests (bearer tokens), outside the test's app context like every browser here."""
    return Browser(app)


@pytest.fixture
def north(create_institution):
    return create_institution("north", "North College")


@pytest.fixture
def south(create_institution):
    return create_institution("south", "South University")


@pytest.fixture
def operator(create_user):
    return create_user("operator", email="ops@example.org")


def invite(client, headers, **body):
    response = client.post("/api/v1/invitations", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def path_of(link: str) -> str:
    return link[link.index("/invitations/"):]


def accept(client, path, email="new@north.example", password=NEW_PASSWORD, confirm=None):
    """Open the invitation page, then send the form, as a browser would."""
    page = client.get(path)
    data = {"email": email, "password": password, "confirm": password if confirm is None else confirm}
    if page.status_code == 200:
        data["csrf_token"] = csrf_from(page.get_data(as_text=True))
    return client.post(path, data=data)


def user_named(email):
    db.session.expire_all()
    return db.session.execute(db.select(User).filter_by(email=email)).unique().scalar_one_or_none()


def test_an_invitation_link_makes_a_new_institution_admin_who_is_logged_in(app, browser, client, north, operator,
                                                                           api_headers):
    created = invite(client, api_headers(operator), role="institution_admin", institution="north")
    assert created["invitation"]["institution"] == "north" and created["invitation"]["max_uses"] == 1
    assert created["link"].endswith(created["token"])

    visitor = browser()
    page = visitor.get(path_of(created["link"]))
    assert page.status_code == 200
    assert "an institution admin" in page.get_data(as_text=True) and "North College" in page.get_data(as_text=True)
    response = accept(visitor, path_of(created["link"]))
    assert response.status_code == 302 and response.headers["Location"] == "/"

    person = user_named("new@north.example")
    assert person.role == "institution_admin" and person.institution_id == north.id and person.is_active
    # Logged in: their institution is theirs to see, another's is not there.
    assert visitor.get("/institutions/north").status_code == 200
    assert "new@north.example" in visitor.get("/people").get_data(as_text=True)
    # The token is stored only as a hash, and appears in no audit entry.
    assert db.session.execute(db.select(Invitation.use_count)).scalar_one() == 1
    events = db.session.execute(db.select(AuditEvent).where(AuditEvent.action.like("invitation.%"))).scalars().all()
    assert [e.action for e in events] == ["invitation.create", "invitation.redeem"]
    assert all(created["token"] not in f"{e.target} {e.detail}" for e in events)
    assert created["token"] not in str(db.session.execute(db.select(Invitation.token_hash)).scalar_one())


def test_a_link_cannot_be_used_twice(app, browser, client, north, operator, api_headers):
    link = path_of(invite(client, api_headers(operator), role="institution_admin", institution="north")["link"])
    assert accept(browser(), link).status_code == 302

    second = browser()
    page = second.get(link)
    assert page.status_code == 410 and "used already" in page.get_data(as_text=True)
    token = csrf_from(second.get("/login").get_data(as_text=True))
    again = second.post(link, data={"email": "other@north.example", "password": NEW_PASSWORD,
                                    "confirm": NEW_PASSWORD, "csrf_token": token})
    assert again.status_code == 410 and "used already" in again.get_data(as_text=True)
    assert user_named("other@north.example") is None


def _race(app, link_path: str, emails: list[str]) -> list[int]:
    """POST the same invitation from one client per email at the same instant; the status codes, in order."""
    clients, forms = [], []
    for email in emails:
        client = Browser(app)
        token = csrf_from(client.get(link_path).get_data(as_text=True))
        clients.append(client)
        forms.append({"csrf_token": token, "email": email, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    barrier = threading.Barrier(len(emails))
    statuses = [0] * len(emails)

    def go(i):
        barrier.wait()
        statuses[i] = clients[i].post(link_path, data=forms[i]).status_code

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(emails))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def test_two_requests_at_once_with_one_link_make_exactly_one_account(app, client, north, operator, api_headers):
    headers = api_headers(operator)
    for round_ in range(3):
        link = path_of(invite(client, headers, role="institution_admin", institution="north")["link"])
        emails = [f"racer{round_}-{i}@north.example" for i in range(2)]
        statuses = _race(app, link, emails)
        assert sorted(statuses) == [302, 410], statuses
        assert sum(user_named(email) is not None for email in emails) == 1


def test_a_link_for_several_people_admits_exactly_that_many_under_contention(app, client, north, operator,
                                                                             api_headers):
    link = path_of(invite(client, api_headers(operator), role="institution_admin", institution="north",
                          max_uses=3)["link"])
    emails = [f"team{i}@north.example" for i in range(8)]
    statuses = _race(app, link, emails)
    assert statuses.count(302) == 3 and statuses.count(410) == 5, statuses
    assert sum(user_named(email) is not None for email in emails) == 3
    assert db.session.execute(db.select(Invitation.use_count)).scalar_one() == 3


def test_expired_revoked_and_unknown_links_are_refused_with_a_clear_message(app, client, north, operator,
                                                                            api_headers, browser):
    headers = api_headers(operator)
    expired = invite(client, headers, role="institution_admin", institution="north")
    db.session.get(Invitation, expired["invitation"]["id"]).expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    page = browser().get(path_of(expired["link"]))
    assert page.status_code == 410 and "This invitation expired on" in page.get_data(as_text=True)

    withdrawn = invite(client, headers, role="institution_admin", institution="north")
    # Withdrawn on the people page, as an operator would.
    web = browser(operator)
    token = csrf_from(web.get("/people").get_data(as_text=True))
    assert web.post(f"/people/invitations/{withdrawn['invitation']['id']}/revoke",
                        data={"csrf_token": token}).status_code == 302
    page = browser().get(path_of(withdrawn["link"]))
    assert page.status_code == 410 and "This invitation was withdrawn" in page.get_data(as_text=True)

    page = browser().get("/invitations/not-a-real-token")
    assert page.status_code == 404 and "This invitation link is not valid" in page.get_data(as_text=True)
    assert db.session.execute(db.select(db.func.count()).select_from(User)).scalar_one() == 1
    # Only the usable ones are listed as open.
    assert client.get("/api/v1/invitations", headers=headers).get_json() == []
    assert {e.action for e in db.session.execute(db.select(AuditEvent)).scalars()} == {
        "invitation.create", "invitation.revoke"}


def test_bad_input_on_the_invitation_page_changes_nothing(app, browser, client, north, operator, api_headers):
    link = path_of(invite(client, api_headers(operator), role="institution_admin", institution="north")["link"])
    visitor = browser()
    for data, field in [({"email": "not an email"}, "email"), ({"password": "short", "confirm": "short"}, "password"),
                        ({"confirm": "something else"}, "confirm"), ({"email": "ops@example.org"}, "email")]:
        response = accept(visitor, link, **data)
        assert response.status_code == 422
        assert f'id="{field}-error"' in response.get_data(as_text=True), data
    assert db.session.execute(db.select(Invitation.use_count)).scalar_one() == 0
    assert accept(visitor, link).status_code == 302  # still usable


def test_an_invitation_can_fix_the_email(app, browser, client, north, operator, api_headers):
    link = path_of(invite(client, api_headers(operator), role="institution_admin", institution="north",
                          email="Fixed@North.example")["link"])
    assert accept(browser(), link, email="someone-else@north.example").status_code == 302
    assert user_named("fixed@north.example") is not None and user_named("someone-else@north.example") is None


def test_bad_invitations_get_field_errors_from_the_api_and_the_page(app, client, north, operator, api_headers, browser):
    headers = api_headers(operator)
    for body, field in [({"role": "root"}, "role"), ({"role": "institution_admin"}, "institution"),
                        ({"role": "operator", "institution": "north"}, "institution"),
                        ({"role": "institution_admin", "institution": "north", "days": 0}, "days"),
                        ({"role": "institution_admin", "institution": "north", "days": 10**400}, "days"),
                        ({"role": "institution_admin", "institution": "north", "email": "x"}, "email"),
                        ({"role": "institution_admin", "institution": "north", "email": "ops@example.org"}, "email"),
                        ({"role": "institution_admin", "institution": "nowhere"}, "institution")]:
        response = client.post("/api/v1/invitations", json=body, headers=headers)
        assert response.status_code == 422, (body, response.get_json())
        assert field in response.get_json()["errors"]["json"], (body, response.get_json())
    web = browser(operator)
    token = csrf_from(web.get("/people").get_data(as_text=True))
    response = web.post("/people/invitations", data={"csrf_token": token, "as": "institution_admin:north",
                                                         "days": "ninety"})
    assert response.status_code == 422 and 'id="days-error"' in response.get_data(as_text=True)
    response = web.post("/people/invitations", data={"csrf_token": token, "as": "operator:north", "days": "7"})
    assert response.status_code == 422 and 'id="as-error"' in response.get_data(as_text=True)
    assert db.session.execute(db.select(db.func.count()).select_from(Invitation)).scalar_one() == 0


def test_the_people_page_shows_a_new_link_once(app, north, operator, browser):
    web = browser(operator)
    token = csrf_from(web.get("/people").get_data(as_text=True))
    response = web.post("/people/invitations", data={"csrf_token": token, "as": "institution_admin:north",
                                                         "email": "", "days": "3"})
    assert response.status_code == 201
    page = response.get_data(as_text=True)
    link = page.split('id="invitation-link" value="', 1)[1].split('"', 1)[0]
    assert "/invitations/" in link
    later = web.get("/people").get_data(as_text=True)
    assert link.rsplit("/", 1)[1] not in later and "whoever has the link" in later
    assert browser().get(path_of(link)).status_code == 200


def test_an_institution_admin_invites_only_admins_of_their_own_institution(app, client, north, south, operator,
                                                                           create_user, api_headers, browser):
    admin = create_user("institution_admin", institution=north, email="admin@north.example")
    other = create_user("institution_admin", institution=south, email="admin@south.example")
    headers = api_headers(admin)
    response = client.post("/api/v1/invitations", json={"role": "operator"}, headers=headers)
    assert response.status_code == 403
    response = client.post("/api/v1/invitations", json={"role": "institution_admin", "institution": "south"},
                           headers=headers)
    assert response.status_code == 422 and "institution" in response.get_json()["errors"]["json"]
    # Their own institution, named or left out.
    assert invite(client, headers, role="institution_admin")["invitation"]["institution"] == "north"
    assert invite(client, headers, role="institution_admin", institution="north")["invitation"]["institution"] \
        == "north"
    # The page offers no choice of role, and refuses an operator invitation sent by hand.
    web = browser(admin)
    page = web.get("/people").get_data(as_text=True)
    assert 'name="as" value="institution_admin"' in page and '<select id="as"' not in page
    token = csrf_from(page)
    assert web.post("/people/invitations", data={"csrf_token": token, "as": "operator"}).status_code == 403
    assert db.session.execute(db.select(db.func.count()).select_from(Invitation)).scalar_one() == 2

    # An operator's invitation to south, and south's admin, are not there for north's admin.
    south_invitation = invite(client, api_headers(operator), role="institution_admin", institution="south")
    for method, path in [("GET", f"/api/v1/people/{other.id}"), ("POST", f"/api/v1/people/{other.id}/disable"),
                         ("POST", f"/api/v1/people/{other.id}/enable"), ("DELETE", f"/api/v1/people/{other.id}"),
                         ("GET", f"/api/v1/people/{operator.id}"), ("POST", f"/api/v1/people/{operator.id}/disable"),
                         ("DELETE", f"/api/v1/invitations/{south_invitation['invitation']['id']}")]:
        assert client.open(path, method=method, headers=headers).status_code == 404, (method, path)
    south_id = south_invitation["invitation"]["id"]
    for path in [f"/people/{other.id}/disable", f"/people/{other.id}/enable", f"/people/{other.id}/remove",
                 f"/people/{operator.id}/disable", f"/people/invitations/{south_id}/revoke"]:
        assert web.post(path, data={"csrf_token": token}).status_code == 404, path
    assert web.get(f"/people/{other.id}/remove").status_code == 404
    assert user_named("admin@south.example").is_active and user_named("ops@example.org").is_active

    # What they see: their institution's admins; never an operator's email.
    listed = [p["email"] for p in client.get("/api/v1/people", headers=headers).get_json()]
    assert listed == ["admin@north.example"]
    page = web.get("/people").get_data(as_text=True)
    assert "admin@south.example" not in page and "ops@example.org" not in page
    invitations = client.get("/api/v1/invitations", headers=headers).get_json()
    assert len(invitations) == 2 and {i["institution"] for i in invitations} == {"north"}
    north_by_operator = invite(client, api_headers(operator), role="institution_admin", institution="north")
    shown = {i["id"]: i["created_by"] for i in client.get("/api/v1/invitations", headers=headers).get_json()}
    assert shown[north_by_operator["invitation"]["id"]] == "an operator"
    assert "ops@example.org" not in web.get("/people").get_data(as_text=True)


def test_a_disabled_person_cannot_log_in_and_their_session_and_token_stop_working(app, client, north, operator,
                                                                                 create_user, api_headers, browser):
    admin = create_user("institution_admin", institution=north, email="admin@north.example")
    colleague = create_user("institution_admin", institution=north, email="colleague@north.example")
    admin_headers = api_headers(admin)
    admin_browser = browser(admin)
    assert admin_browser.get("/").status_code == 200
    assert client.get("/api/v1/hubs", headers=admin_headers).status_code == 200

    # Disabled by a colleague of the same institution, on the people page.
    web = browser(colleague)
    token = csrf_from(web.get("/people").get_data(as_text=True))
    response = web.post(f"/people/{admin.id}/disable", data={"csrf_token": token})
    assert response.status_code == 302
    assert "Disabled" in web.get("/people").get_data(as_text=True)

    assert admin_browser.get("/").status_code == 302  # the session has ended
    assert client.get("/api/v1/hubs", headers=admin_headers).status_code == 401
    fresh = browser()
    form = {"email": admin.email, "password": PASSWORD, "csrf_token": csrf_from(fresh.get("/login").get_data(
        as_text=True))}
    assert fresh.post("/login", data=form).status_code == 401

    # Enabled again (over the API): the password works again; the old token and session stay ended.
    response = client.post(f"/api/v1/people/{admin.id}/enable", headers=api_headers(operator))
    assert response.status_code == 200 and response.get_json()["disabled_at"] is None
    assert fresh.post("/login", data=form).status_code == 302
    assert client.get("/api/v1/hubs", headers=admin_headers).status_code == 401
    actions = [e.action for e in db.session.execute(db.select(AuditEvent).order_by(AuditEvent.id)).scalars()]
    assert actions == ["user.disable", "user.enable"]


def test_nobody_disables_or_removes_themselves_or_the_last_active_operator(app, client, operator, create_user,
                                                                          api_headers):
    headers = api_headers(operator)
    for method, path in [("POST", f"/api/v1/people/{operator.id}/disable"),
                         ("DELETE", f"/api/v1/people/{operator.id}")]:
        response = client.open(path, method=method, headers=headers)
        assert response.status_code == 409 and "your own account" in response.get_json()["message"]

    # Two operators disabling each other at the same instant: one wins, the other is refused.
    second = create_user("operator", email="ops2@example.org")
    results = {}
    pairs = [(operator.email, second.id, api_headers(operator)), (second.email, operator.id, api_headers(second))]
    barrier = threading.Barrier(2)

    def go(actor, target, actor_headers):
        barrier.wait()
        response = Browser(app).post(f"/api/v1/people/{target}/disable", headers=actor_headers)
        results[actor] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=go, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = sorted(status for status, _ in results.values())
    assert statuses in ([200, 409], [200, 401]), results  # 401: the loser's token was revoked before it was read
    refused = [body for status, body in results.values() if status == 409]
    assert all("last active operator" in body["message"] for body in refused), results
    db.session.expire_all()
    active = db.session.execute(db.select(User).where(User.role == "operator", User.disabled_at.is_(None))
                                ).unique().scalars().all()
    assert len(active) == 1


def test_removing_a_person_ends_everything_they_had(app, client, north, operator, create_user, api_headers, browser):
    admin = create_user("institution_admin", institution=north, email="admin@north.example")
    admin_id, admin_headers = admin.id, api_headers(admin)
    browser(admin)
    invite(client, admin_headers, role="institution_admin")
    db.session.add(ConfigDraft(institution_id=north.id, user_id=admin_id))
    db.session.commit()
    web = browser(operator)
    page = web.get(f"/people/{admin_id}/remove")
    assert page.status_code == 200 and "cannot be undone" in page.get_data(as_text=True)
    assert web.post(f"/people/{admin_id}/remove", data={"csrf_token": csrf_from(page.get_data(as_text=True))}
                        ).status_code == 302

    assert user_named("admin@north.example") is None
    for model in (ApiToken, UserSession, ConfigDraft):
        assert db.session.execute(db.select(db.func.count()).select_from(model)
                                  .where(model.user_id == admin_id)).scalar_one() == 0
    invitation = db.session.execute(db.select(Invitation)).unique().scalar_one()
    assert invitation.created_by_id is None  # their invitation stays usable, sent by "a former user"
    assert client.get("/api/v1/invitations", headers=api_headers(operator)).get_json()[0]["created_by"] \
        == "a former user"
    assert client.get("/api/v1/hubs", headers=admin_headers).status_code == 401
    event = db.session.execute(db.select(AuditEvent).filter_by(action="user.remove")).scalar_one()
    assert (event.actor, event.target, event.institution_id) == ("ops@example.org", "admin@north.example", north.id)
    # The address is free again.
    invite(client, api_headers(operator), role="institution_admin", institution="north",
           email="admin@north.example")
    assert client.delete(f"/api/v1/people/{admin_id}", headers=api_headers(operator)).status_code == 404


def test_removal_knows_every_table_that_points_at_an_account():
    pointing = {fk.parent.table.name for table in db.metadata.tables.values() for fk in table.foreign_keys
                if fk.column.table.name == "user"}
    assert pointing == {model.__tablename__ for model in people_service.OWNED_BY_ACCOUNT} | {"invitation"}
