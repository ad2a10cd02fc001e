"""Memberships of hubs: grants, hub invitation links (expiring, limited, race-safe, revocable), My hubs, and the
username each person is given once.

Everything goes through HTTP (test clients that act as separate browsers, the API with bearer tokens) and the real
database: every test runs on SQLite and on PostgreSQL.  The hubs run on the fake backend (clusters/testing.py).
"""
from __future__ import annotations

import threading
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from werkzeug.exceptions import Gone

from console.extensions import db
from console.models import (AuditEvent, Hub, Invitation, Membership, ServerSnapshot, User, UsernameClaim,
                            username_base, utcnow)
from console.services import memberships
from console.services import people as people_service
from tests.conftest import PASSWORD, csrf_from
from tests.console.test_people import Browser


@pytest.fixture
def client(app):
    """The API client of these tests (bearer tokens), outside the test's app context like every browser here."""
    return Browser(app)


@pytest.fixture
def browser(app):
    return lambda user=None: Browser(app, user)


@pytest.fixture
def fleet(ctx, create_institution, create_cluster, create_user, client, api_headers, run_worker):
    """Institutions North (hubs nhub1, nhub2) and South (hub shub1), all running; an operator and North's admin."""
    north, south = create_institution("north", "North College"), create_institution("south", "South University")
    create_cluster("fast", backend="fake")
    operator = create_user("operator", email="ops@example.org")
    headers = api_headers(operator)
    for slug, inst in (("nhub1", "north"), ("nhub2", "north"), ("shub1", "south")):
        response = client.post("/api/v1/hubs", json={"slug": slug, "institution": inst, "cluster": "fast"},
                               headers=headers)
        assert response.status_code == 202, response.get_json()
    run_worker()
    hubs = {h.slug: h for h in db.session.execute(db.select(Hub)).unique().scalars()}
    assert {h.state for h in hubs.values()} == {"running"}
    admin = create_user("institution_admin", institution=north, email="admin@north.example")
    return {"north": north, "south": south, "operator": operator, "admin": admin, "hubs": hubs,
            "south_admin": create_user("institution_admin", institution=south, email="admin@south.example")}


def path_of(link: str) -> str:
    return urlsplit(link).path


def make_link(client, headers, slug, expires_in=86400, max_uses=1) -> dict:
    response = client.post(f"/api/v1/hubs/{slug}/invitations", json={"expires_in": expires_in,
                                                                     "max_uses": max_uses}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def join(browser_, link: str):
    """Open an invitation link in ``browser_`` and press its Join button; the answer to the POST."""
    page = browser_.get(path_of(link))
    assert page.status_code == 200, page.get_data(as_text=True)
    return browser_.post(path_of(link), data={"csrf_token": csrf_from(page.get_data(as_text=True))})


def memberships_of(user: User) -> list[Membership]:
    db.session.expire_all()
    return db.session.execute(db.select(Membership).filter_by(user_id=user.id)).unique().scalars().all()


# -- usernames ------------------------------------------------------------------------------------------------------


def test_username_bases_are_dns_and_unix_safe():
    assert username_base("Ada.Lovelace@north.example") == "ada-lovelace"
    assert username_base("José_Núñez+x@x") == "jose-nunez-x"
    assert username_base("42@x") == "u-42"
    assert username_base("@x") == "user" and username_base("---") == "user"
    assert username_base("a" * 80) == "a" * 32


def test_usernames_are_minted_once_and_never_handed_out_again(fleet, create_user):
    first = create_user("member", email="sam@north.example")
    second = create_user("member", email="sam@south.example")
    assert first.username == "sam" and second.username.startswith("sam-") and len(second.username) == 8
    people_service.remove(fleet["operator"], first)
    third = create_user("member", email="Sam@elsewhere.example")
    assert third.username not in ("sam", second.username)  # the removed person's name stays theirs
    assert db.session.execute(db.select(UsernameClaim.id).filter_by(username="sam")).first() is not None
    email = third.email
    third.email = "renamed@elsewhere.example"
    db.session.commit()
    assert db.session.execute(db.select(User.username).filter_by(email="renamed@elsewhere.example")
                              ).scalar_one() == third.username != email


# -- grants ---------------------------------------------------------------------------------------------------------


def test_grant_revoke_and_expiry(fleet, create_user):
    person = create_user("member")
    n1, north = fleet["hubs"]["nhub1"], fleet["north"]
    own = memberships.grant(person, hub=n1, source="operator", created_by=fleet["operator"])
    again = memberships.grant(person, hub=n1, source="operator", role="hub-admin")
    assert again.id == own.id and again.role == "hub-admin"  # the same key: the same grant, updated
    everywhere = memberships.grant(person, institution=north, source="rule", ref="idp:1",
                                   expires_at=utcnow() + timedelta(days=1))
    db.session.commit()
    assert [m.id for m in memberships.active_memberships(person)] == [own.id, everywhere.id]
    with pytest.raises(ValueError):
        memberships.grant(person, hub=n1, institution=north, source="rule")
    with pytest.raises(ValueError):
        memberships.grant(person, source="rule")
    everywhere.expires_at = utcnow() - timedelta(seconds=1)
    memberships.revoke(own, fleet["operator"])
    memberships.revoke(own, fleet["operator"])  # again: nothing more
    db.session.commit()
    assert memberships.active_memberships(person) == []
    assert db.session.query(AuditEvent).filter_by(action="membership.revoke").count() == 1
    renewed = memberships.grant(person, hub=n1, source="operator")  # a revoked grant stays revoked, for the record
    db.session.commit()
    assert renewed.id != own.id and own.revoked_at is not None


def test_the_database_refuses_a_membership_of_both_or_neither(fleet, create_user):
    person = create_user("member")
    for hub_id, institution_id in ((fleet["hubs"]["nhub1"].id, fleet["north"].id), (None, None)):
        db.session.add(Membership(user_id=person.id, hub_id=hub_id, institution_id=institution_id, source="rule"))
        with pytest.raises(Exception, match="(?i)check"):
            db.session.flush()
        db.session.rollback()


# -- what a member sees ---------------------------------------------------------------------------------------------


def test_a_member_sees_only_their_hubs(fleet, create_user, browser, client, api_headers):
    member = create_user("member", email="mia@north.example")
    memberships.grant(member, hub=fleet["hubs"]["nhub1"], source="operator")
    memberships.grant(member, institution=fleet["south"], source="rule", ref="idp:7")
    db.session.commit()
    web = browser(member)
    landing = web.get("/me/hubs")
    html = landing.get_data(as_text=True)
    assert landing.status_code == 200
    assert {"my-hub-nhub1", "my-hub-shub1"} <= set(_ids(html)) and "my-hub-nhub2" not in html
    assert 'href="/me/hubs"' in html and 'href="/"' not in html and ">Institutions<" not in html
    for page in ("/hubs/nhub1", "/hubs/nhub2", "/hubs/shub1", "/institutions/north"):
        assert web.get(page).status_code == 404, page
    assert web.get("/").status_code == 403
    headers = api_headers(member)
    assert [row["hub"] for row in client.get("/api/v1/me/hubs", headers=headers).get_json()] == ["nhub1", "shub1"]
    assert client.get("/api/v1/hubs/nhub1", headers=headers).status_code == 404
    assert client.get("/api/v1/hubs", headers=headers).status_code == 403


def _ids(html: str) -> list[str]:
    return [part.split('"')[0] for part in html.split('id="')[1:]]


def test_a_member_lands_on_my_hubs_after_logging_in(fleet, create_user, browser):
    member = create_user("member")
    web = browser()
    token = csrf_from(web.get("/login").get_data(as_text=True))
    response = web.post("/login", data={"email": member.email, "password": PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/me/hubs"
    admin = browser()
    token = csrf_from(admin.get("/login").get_data(as_text=True))
    response = admin.post("/login", data={"email": fleet["admin"].email, "password": PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/"


def test_an_admin_invited_elsewhere_sees_it_in_my_hubs_but_not_in_the_fleet(fleet, client, api_headers, browser):
    admin = fleet["admin"]
    link = make_link(client, api_headers(fleet["operator"]), "shub1")["link"]
    web = browser(admin)
    assert join(web, link).headers["Location"] == "/me/hubs"
    rows = {row["hub"]: row for row in client.get("/api/v1/me/hubs", headers=api_headers(admin)).get_json()}
    assert {slug: (row["role"], row["source"]) for slug, row in rows.items()} == {
        "nhub1": ("institution admin", "institution"), "nhub2": ("institution admin", "institution"),
        "shub1": ("member", "invitation")}
    fleet_page = web.get("/").get_data(as_text=True)
    assert "nhub1" in fleet_page and "/hubs/shub1" not in fleet_page
    assert web.get("/hubs/shub1").status_code == 404
    operator_rows = client.get("/api/v1/me/hubs", headers=api_headers(fleet["operator"])).get_json()
    assert operator_rows == []  # the fleet is not an operator's own: only memberships are


def test_my_hubs_rows_show_role_source_expiry_server_and_launch(fleet, create_user, browser, client, api_headers):
    member = create_user("member", email="lee@north.example")
    hubs = fleet["hubs"]
    until = (utcnow() + timedelta(days=3)).replace(microsecond=0)
    memberships.grant(member, hub=hubs["nhub1"], source="operator", role="hub-admin", expires_at=until)
    memberships.grant(member, hub=hubs["nhub1"], source="invitation", ref="99")  # a weaker grant of the same hub
    memberships.grant(member, hub=hubs["nhub2"], source="rule", ref="idp:1")
    memberships.grant(member, hub=hubs["shub1"], source="invitation", ref="5")
    seen = utcnow().replace(microsecond=0)
    db.session.add_all([
        ServerSnapshot(hub_id=hubs["nhub1"].id, username=member.username, state="running", started=seen,
                       last_activity=seen, seen_at=seen),
        ServerSnapshot(hub_id=hubs["nhub2"].id, username=member.username, state="stopped", last_activity=seen,
                       seen_at=seen),
        ServerSnapshot(hub_id=hubs["nhub1"].id, username="someone-else", state="running", seen_at=seen)])
    hubs["nhub2"].url = None
    hubs["shub1"].state = "failed"
    db.session.commit()
    rows = {row["hub"]: row for row in client.get("/api/v1/me/hubs", headers=api_headers(member)).get_json()}
    assert list(rows) == ["nhub1", "nhub2", "shub1"]
    n1 = rows["nhub1"]
    assert (n1["role"], n1["source"], n1["server_state"], n1["institution"], n1["institution_name"]) == \
        ("hub-admin", "operator", "running", "north", "North College")
    assert n1["expires_at"].startswith(until.isoformat()) and n1["last_activity"].startswith(seen.isoformat())
    assert n1["launch_url"] == "http://nhub1.fake.invalid/hub/user-redirect/lab" and n1["launch_reason"] == ""
    assert (rows["nhub2"]["server_state"], rows["nhub2"]["launch_url"], rows["nhub2"]["launch_reason"]) == \
        ("stopped", None, "The hub has no address yet.")
    assert (rows["shub1"]["server_state"], rows["shub1"]["launch_url"], rows["shub1"]["launch_reason"]) == \
        (None, None, "The hub is failed, not running.")
    html = browser(member).get("/me/hubs").get_data(as_text=True)
    assert 'href="http://nhub1.fake.invalid/hub/user-redirect/lab"' in html and 'data-server="running"' in html
    assert html.count("disabled") == 2 and "The hub has no address yet." in html and 'data-role="hub-admin"' in html


def test_my_hubs_never_calls_a_hub_and_takes_two_queries(app, fleet, create_user):
    """Loaded with every hub's URL pointing nowhere: the page reads the console's tables only."""
    from sqlalchemy import event
    member = create_user("member")
    for hub in fleet["hubs"].values():
        memberships.grant(member, hub=hub, source="operator")
    admin = fleet["admin"]
    memberships.grant(admin, hub=fleet["hubs"]["shub1"], source="operator")
    db.session.commit()
    assert member.username and admin.institution_id  # loaded before counting
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        assert len(memberships.my_hubs(member)) == 3
        assert len(statements) == 1
        assert len(memberships.my_hubs(admin)) == 3
        assert len(statements) == 3
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)


# -- invitations ----------------------------------------------------------------------------------------------------


def test_an_invitation_link_makes_a_logged_in_person_a_member(fleet, create_user, client, api_headers, browser):
    made = make_link(client, api_headers(fleet["admin"]), "nhub1", max_uses=2)
    assert made["invitation"]["hub"] == "nhub1" and made["link"].endswith(f"/join/{made['token']}")
    member = create_user("member", email="kim@south.example")
    web = browser(member)
    page = web.get(path_of(made["link"]))
    assert page.status_code == 200 and "Join nhub1" in page.get_data(as_text=True)
    assert memberships_of(member) == []  # opening the link grants nothing: the button does
    response = join(web, made["link"])
    assert response.status_code == 302 and response.headers["Location"] == "/me/hubs"
    landing = web.get("/me/hubs").get_data(as_text=True)
    assert "You are now a member of nhub1." in landing and "my-hub-nhub1" in landing
    (membership,) = memberships_of(member)
    assert (membership.hub.slug, membership.source, membership.ref) == ("nhub1", "invitation",
                                                                        str(made["invitation"]["id"]))
    again = join(web, made["link"])  # the same person again: no second use, no second membership
    assert again.status_code == 302 and "already" in web.get("/me/hubs").get_data(as_text=True)
    assert len(memberships_of(member)) == 1
    assert db.session.get(Invitation, made["invitation"]["id"]).use_count == 1


def test_a_visitor_is_sent_to_log_in_and_back(fleet, create_user, client, api_headers, browser):
    link = path_of(make_link(client, api_headers(fleet["operator"]), "nhub2")["link"])
    visitor = browser()
    response = visitor.get(link)
    assert response.status_code == 302 and response.headers["Location"] == f"/login?next={link}"
    member = create_user("member")
    token = csrf_from(visitor.get(response.headers["Location"]).get_data(as_text=True))
    logged_in = visitor.post(f"/login?next={link}", data={"email": member.email, "password": PASSWORD,
                                                           "csrf_token": token})
    assert logged_in.headers["Location"] == link
    assert join(visitor, link).headers["Location"] == "/me/hubs"
    assert [m.hub.slug for m in memberships_of(member)] == ["nhub2"]


def test_twenty_people_racing_for_five_uses_make_exactly_five_members(app, fleet, create_user):
    _, token = memberships.invite(fleet["operator"], fleet["hubs"]["nhub1"], 3600, 5)
    ids = [create_user("member").id for _ in range(20)]
    db.session.commit()  # the test's own session holds no transaction while the threads write
    barrier = threading.Barrier(len(ids))
    outcomes = [None] * len(ids)

    def go(index):
        with app.app_context():
            try:
                user = db.session.get(User, ids[index])
                db.session.commit()  # hold no transaction while waiting
                barrier.wait(60)
                memberships.join(user, token)
                outcomes[index] = "joined"
            except Gone as exc:
                outcomes[index] = exc.description
            except Exception as exc:  # noqa: BLE001  (shown in the assertion below)
                outcomes[index] = repr(exc)
                barrier.abort()
            finally:
                db.session.remove()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(ids))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    db.session.expire_all()
    assert outcomes.count("joined") == 5, outcomes
    assert all(o.startswith("This invitation is used up") for o in outcomes if o != "joined")
    assert db.session.query(Membership).filter_by(hub_id=fleet["hubs"]["nhub1"].id).count() == 5
    assert db.session.execute(db.select(Invitation.use_count).where(Invitation.hub_id.is_not(None))
                              ).scalar_one() == 5


def test_two_browsers_for_the_last_use_one_wins(app, fleet, create_user, client, api_headers):
    for round_ in range(2):
        link = path_of(make_link(client, api_headers(fleet["operator"]), "shub1")["link"])
        browsers = [Browser(app, create_user("member")) for _ in range(2)]
        forms = [{"csrf_token": csrf_from(b.get(link).get_data(as_text=True))} for b in browsers]
        barrier, statuses = threading.Barrier(2), [0, 0]

        def go(i):
            barrier.wait()
            statuses[i] = browsers[i].post(link, data=forms[i]).status_code

        threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(statuses) == [302, 410], statuses
    assert db.session.query(Membership).count() == 2


def test_expired_used_up_revoked_and_unknown_links_are_refused(fleet, create_user, client, api_headers, browser):
    headers = api_headers(fleet["operator"])
    member = create_user("member")
    web = browser(member)
    expired = make_link(client, headers, "nhub1")
    db.session.get(Invitation, expired["invitation"]["id"]).expires_at = utcnow() - timedelta(minutes=1)
    used = make_link(client, headers, "nhub1")
    assert join(browser(create_user("member")), used["link"]).status_code == 302
    revoked = make_link(client, headers, "nhub1")
    db.session.commit()
    operator_web = browser(fleet["operator"])
    token = csrf_from(operator_web.get("/hubs/nhub1").get_data(as_text=True))
    response = operator_web.post(f"/people/invitations/{revoked['invitation']['id']}/revoke",
                                 data={"csrf_token": token})
    assert response.headers["Location"] == "/hubs/nhub1"
    account = people_service.invite(fleet["operator"], "institution_admin", "north")[1]
    cases = [(expired["link"], 410, "This invitation expired on"), (used["link"], 410, "This invitation is used up"),
             (revoked["link"], 410, "This invitation was revoked"), ("/join/not-a-token", 404, "is not valid"),
             (f"/join/{account}", 404, "is not valid")]  # an account invitation is not a hub's
    for link, status, message in cases:
        for method in ("GET", "POST"):
            data = {"csrf_token": csrf_from(web.get("/me/hubs").get_data(as_text=True))} if method == "POST" else None
            answer = web.open(path_of(link), method=method, data=data)
            assert answer.status_code == status and message in answer.get_data(as_text=True), (link, method)
    assert memberships_of(member) == []
    # and a hub's link does not open the account invitation page
    assert browser().get(f"/invitations/{used['token']}").status_code == 404


def test_the_hub_page_lists_members_and_invitations_and_revokes(fleet, create_user, client, api_headers, browser):
    admin_headers = api_headers(fleet["admin"])
    made = make_link(client, admin_headers, "nhub1", max_uses=3)
    member = create_user("member", email="rio@north.example")
    join(browser(member), made["link"])
    web = browser(fleet["admin"])
    page = web.get("/hubs/nhub1").get_data(as_text=True)
    (membership,) = memberships_of(member)
    assert f'id="membership-{membership.id}"' in page and member.username in page and ">invitation<" in page
    assert f'id="hub-invitation-{made["invitation"]["id"]}"' in page and "1 of 3" in page
    assert made["token"] not in page  # the link itself was shown once, when made
    assert "hub-members" not in browser(fleet["south_admin"]).get("/hubs/nhub1").get_data(as_text=True)
    token = csrf_from(page)
    response = web.post(f"/hubs/nhub1/members/{membership.id}/revoke", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/hubs/nhub1"
    assert memberships_of(member)[0].revoked_at is not None
    assert client.get("/api/v1/me/hubs", headers=api_headers(member)).get_json() == []
    assert f'id="membership-{membership.id}"' not in web.get("/hubs/nhub1").get_data(as_text=True)
    # over the API: the person's every active membership of the hub ends; again: nothing left to end
    join(browser(member), made["link"])
    memberships.grant(member, hub=fleet["hubs"]["nhub1"], source="operator")
    db.session.commit()
    assert client.delete(f"/api/v1/hubs/nhub1/members/{member.id}", headers=admin_headers).get_json() == {"ended": 2}
    assert client.delete(f"/api/v1/hubs/nhub1/members/{member.id}", headers=admin_headers).get_json() == {"ended": 0}
    assert client.delete(f"/api/v1/hubs/nhub2/members/{member.id}", headers=admin_headers).status_code == 404
    assert client.delete(f"/api/v1/hubs/nhub1/members/{member.id}",
                         headers=api_headers(fleet["south_admin"])).status_code == 404
    assert all(m.revoked_at is not None for m in memberships_of(member))


def test_invitations_and_revocations_are_audited(fleet, create_user, client, api_headers, browser):
    made = make_link(client, api_headers(fleet["admin"]), "nhub2", expires_in=7200, max_uses=4)
    member = create_user("member")
    join(browser(member), made["link"])
    client.delete(f"/api/v1/hubs/nhub2/members/{member.id}", headers=api_headers(fleet["operator"]))
    client.delete(f"/api/v1/invitations/{made['invitation']['id']}", headers=api_headers(fleet["admin"]))
    events = {e.action: e for e in db.session.execute(db.select(AuditEvent)).scalars()}
    created = events["hub-invitation.create"]
    assert (created.actor, created.institution_id, created.detail["max_uses"], created.detail["hub"]) == \
        ("admin@north.example", fleet["north"].id, 4, "nhub2")
    redeemed = events["hub-invitation.redeem"]
    assert (redeemed.actor, redeemed.target) == (member.email, f"{member.username} in nhub2")
    ended = events["membership.revoke"]
    assert (ended.actor, ended.target, ended.detail["source"]) == ("ops@example.org", f"{member.username} in nhub2",
                                                                   "invitation")
    assert events["invitation.revoke"].actor == "admin@north.example"
    assert made["token"] not in str([(e.target, e.detail) for e in events.values()])


def test_bad_input_gets_field_errors_and_changes_nothing(fleet, client, api_headers, browser):
    headers = api_headers(fleet["admin"])
    for body, field in (({"expires_in": 60, "max_uses": 1}, "expires_in"),
                        ({"expires_in": 91 * 86400, "max_uses": 1}, "expires_in"),
                        ({"expires_in": 3600, "max_uses": 0}, "max_uses"),
                        ({"expires_in": 3600, "max_uses": 1001}, "max_uses"),
                        ({"expires_in": "3600", "max_uses": 1}, "expires_in"),
                        ({"max_uses": 1}, "expires_in")):
        response = client.post("/api/v1/hubs/nhub1/invitations", json=body, headers=headers)
        assert response.status_code == 422 and field in str(response.get_json()["errors"]), body
    web = browser(fleet["admin"])
    token = csrf_from(web.get("/hubs/nhub1").get_data(as_text=True))
    for form, field in (({"expires_in": "999999999999999", "max_uses": "1"}, "expires_in"),
                        ({"expires_in": "3600", "max_uses": "lots"}, "max_uses"),
                        ({"expires_in": "", "max_uses": "-1"}, "max_uses")):
        response = web.post("/hubs/nhub1/invitations", data={"csrf_token": token, **form})
        html = response.get_data(as_text=True)
        assert response.status_code == 422 and f'id="{field}-error"' in html, form
    assert db.session.query(Invitation).count() == 0
    assert db.session.query(AuditEvent).filter(AuditEvent.action.like("hub-invitation%")).count() == 0
    # and a good one shows its link once, never cached
    made = web.post("/hubs/nhub1/invitations", data={"csrf_token": token, "expires_in": "3600", "max_uses": "2"})
    assert made.status_code == 201 and made.headers["Cache-Control"] == "no-store"
    assert "/join/" in made.get_data(as_text=True)


def test_only_the_hubs_admins_and_operators_invite(fleet, create_user, client, api_headers):
    body = {"expires_in": 3600, "max_uses": 1}
    assert client.post("/api/v1/hubs/nhub1/invitations", json=body,
                       headers=api_headers(fleet["south_admin"])).status_code == 404
    member = create_user("member")
    memberships.grant(member, hub=fleet["hubs"]["nhub1"], source="operator", role="hub-admin")
    db.session.commit()
    # a hub admin by membership is not an admin of the console: the hub is not among what they may manage
    assert client.post("/api/v1/hubs/nhub1/invitations", json=body, headers=api_headers(member)).status_code == 404
    assert client.post("/api/v1/hubs/shub1/invitations", json=body,
                       headers=api_headers(fleet["operator"])).status_code == 201


def test_the_migration_gives_existing_accounts_usernames(ctx):
    """Accounts made before usernames get one each, distinct, claimed for good."""
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import text
    downgrade(revision="0010")
    for email in ("ann@north.example", "Ann@south.example", "9lives@x.example"):
        db.session.execute(text("INSERT INTO \"user\" (email, password_hash, role, created_at) "
                                "VALUES (:email, 'x', 'operator', CURRENT_TIMESTAMP)"), {"email": email})
    db.session.commit()
    upgrade()
    names = dict(db.session.execute(db.select(User.email, User.username)).all())
    second = db.session.execute(db.select(User.id).filter_by(email="Ann@south.example")).scalar_one()
    assert names == {"ann@north.example": "ann", "Ann@south.example": f"ann-{second}", "9lives@x.example": "u-9lives"}
    assert set(db.session.execute(db.select(UsernameClaim.username)).scalars()) == set(names.values())
    db.session.add(User(email="ann@west.example", password_hash="x", role="member"))
    db.session.commit()
    assert db.session.execute(db.select(User.username).filter_by(email="ann@west.example")).scalar_one() \
        not in names.values()
