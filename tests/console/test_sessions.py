"""Sessions end at logout and at a password change; logins are throttled per account and per address; cookies are
Secure over https; passwords are hashed at OWASP's argon2id cost."""
import re
import threading
from datetime import timedelta

import pytest
from argon2 import PasswordHasher

from console import create_app
from console.extensions import db
from console.services import sessions
from console.passwords import check_password
from console.models import AuditEvent, LoginThrottle, User, UserSession, utcnow
from tests.conftest import PASSWORD, csrf_from

pytestmark = pytest.mark.usefixtures("own_g_per_request")
NEW_PASSWORD = "a brand new passphrase"
COOKIE = "session"


@pytest.fixture
def config(config):
    # A short cap so the delay's growth reaches it in a few steps.
    return {**config, "LOGIN_DELAY_MAX_SECONDS": 32}


@pytest.fixture
def another_app(config):
    """``another_app(**settings)``: one more console app over the test's database, as another process would be."""
    made = []

    def make(**settings):
        made.append(create_app({**config, **settings}))
        return made[-1]

    yield make
    for other in made:
        with other.app_context():
            db.engine.dispose()


def post_login(client, email, password, **kwargs):
    token = csrf_from(client.get("/login", **kwargs).get_data(as_text=True))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token}, **kwargs)


def copy_cookie(source, target):
    target.set_cookie(COOKIE, source.get_cookie(COOKIE).value)
    return target


def logged_in(client) -> bool:
    response = client.get("/")
    assert response.status_code in (200, 302)
    return response.status_code == 200


def retry_after(response) -> int:
    return int(response.headers["Retry-After"])


# -- sessions ----------------------------------------------------------------------------------------------------


def test_logout_ends_the_session_even_for_a_copied_cookie(app, client, create_user, login):
    user = create_user("operator")
    login(client, user)
    thief = copy_cookie(client, app.test_client())
    assert logged_in(thief)

    page = client.get("/").get_data(as_text=True)
    assert client.post("/logout", data={"csrf_token": csrf_from(page)}).status_code == 302
    assert not logged_in(client)
    assert not logged_in(thief)  # the signed cookie is still valid, its session is not
    row = db.session.execute(db.select(UserSession).filter_by(user_id=user.id)).unique().scalar_one()
    assert row.ended_at is not None and row.ended_reason == "logged out"


def test_password_change_ends_the_other_sessions_and_keeps_this_one(app, client, create_user, login):
    user = create_user("institution_admin", institution=None)
    login(client, user)
    laptop = login(app.test_client(), user)
    stolen = copy_cookie(laptop, app.test_client())
    token = csrf_from(client.get("/account/password").get_data(as_text=True))

    response = client.post("/account/password", data={
        "current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    assert "1 other session ended" in client.get(response.headers["Location"]).get_data(as_text=True)
    assert logged_in(client)
    assert not logged_in(laptop) and not logged_in(stolen)
    assert post_login(app.test_client(), user.email, PASSWORD).status_code == 401
    assert post_login(app.test_client(), user.email, NEW_PASSWORD).status_code == 302

    events = db.session.execute(db.select(AuditEvent).filter_by(action="user.password_change")).scalars().all()
    assert [e.detail for e in events] == [{"sessions_ended": 1}]
    assert NEW_PASSWORD not in str(events[0].detail) and PASSWORD not in events[0].target


@pytest.mark.parametrize("form,field,message", [
    ({"current_password": "not my password", "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
     "current_password", "That is not your current password."),
    ({"current_password": PASSWORD, "new_password": "short", "confirm": "short"},
     "new_password", "Use at least 10 characters."),
    ({"current_password": PASSWORD, "new_password": "x" * 1025, "confirm": "x" * 1025},
     "new_password", "Use at most 1024 characters."),
    ({"current_password": PASSWORD, "new_password": PASSWORD, "confirm": PASSWORD},
     "new_password", "different from the current one"),
    ({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD + "!"},
     "confirm", "The two new passwords differ."),
])
def test_password_change_refuses_bad_input_and_changes_nothing(app, client, create_user, login, form, field,
                                                               message):
    user = create_user("operator")
    before = user.password_hash
    login(client, user)
    other = login(app.test_client(), user)
    token = csrf_from(client.get("/account/password").get_data(as_text=True))

    response = client.post("/account/password", data={**form, "csrf_token": token})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', page)
    assert message in page
    db.session.expire_all()
    assert db.session.get(User, user.id).password_hash == before
    assert logged_in(other)
    assert not db.session.execute(db.select(AuditEvent).filter_by(action="user.password_change")).first()


def test_sessions_page_lists_ones_sessions_and_ends_them(app, client, create_user, login):
    user = create_user("operator")
    someone = create_user("operator")
    login(client, user)
    phone = app.test_client()
    phone.environ_base.update(HTTP_USER_AGENT="PhoneBrowser/1.0")
    login(phone, user)
    login(app.test_client(), someone)

    page = client.get("/account/sessions").get_data(as_text=True)
    assert page.count('name="session_id"') == 2 and "PhoneBrowser/1.0" in page and "this browser" in page
    phone_id = db.session.execute(db.select(UserSession.id).filter_by(user_agent="PhoneBrowser/1.0")).scalar_one()
    theirs = db.session.execute(db.select(UserSession.id).filter_by(user_id=someone.id)).scalar_one()

    # Another person's session is not ours to end.
    response = client.post("/account/sessions/end", data={"session_id": theirs, "csrf_token": csrf_from(page)})
    assert response.status_code == 422 and "not yours" in response.get_data(as_text=True)
    response = client.post("/account/sessions/end", data={"session_id": phone_id, "csrf_token": csrf_from(page)})
    assert response.status_code == 302
    assert not logged_in(phone) and logged_in(client)
    assert db.session.execute(db.select(AuditEvent).filter_by(action="session.end")).scalar_one().detail == \
        {"session": phone_id, "current": False}

    again = login(app.test_client(), user)
    response = client.post("/account/sessions/end-others", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302 and not logged_in(again) and logged_in(client)


def test_a_session_unused_for_the_idle_time_ends(app, client, create_user, login):
    login(client, create_user("operator"))
    assert logged_in(client)
    db.session.execute(db.update(UserSession).values(last_seen_at=utcnow() - timedelta(hours=25)))
    db.session.commit()
    assert not logged_in(client)


def test_last_seen_is_written_at_most_once_a_minute(app, client, create_user, login):
    login(client, create_user("operator"))
    an_hour_ago = utcnow() - timedelta(hours=1)
    db.session.execute(db.update(UserSession).values(last_seen_at=an_hour_ago))
    db.session.commit()
    client.get("/")
    first = db.session.execute(db.select(UserSession.last_seen_at)).scalar_one()
    assert first > an_hour_ago
    client.get("/")
    assert db.session.execute(db.select(UserSession.last_seen_at)).scalar_one() == first


# -- cookies -----------------------------------------------------------------------------------------------------


def _session_cookie(response) -> str:
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{COOKIE}=")]
    assert cookies, response.headers
    return cookies[-1]


def test_session_cookie_is_httponly_samesite_and_secure_over_https(app, create_user):
    user = create_user("operator")
    plain = _session_cookie(post_login(app.test_client(), user.email, PASSWORD))
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Secure" not in plain
    secure = _session_cookie(post_login(app.test_client(), user.email, PASSWORD, base_url="https://console.test"))
    assert "HttpOnly" in secure and "SameSite=Lax" in secure and "Secure" in secure


@pytest.mark.parametrize("proxies,secure", [(0, False), (1, True)])
def test_forwarded_proto_is_believed_only_behind_a_configured_proxy(another_app, proxies, secure):
    client = another_app(PROXY_COUNT=proxies).test_client()
    response = client.get("/login", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"})
    assert ("Secure" in _session_cookie(response)) is secure


# -- throttling --------------------------------------------------------------------------------------------------


@pytest.fixture
def still_clock(monkeypatch):
    """The throttle's clock stands still: the first wait is one second, which a slow machine could otherwise let run
    out between two attempts of a test."""
    now = utcnow()
    monkeypatch.setattr(sessions, "utcnow", lambda: now)


def test_twenty_wrong_passwords_slow_that_account_and_no_other(app, client, create_user, still_clock):
    victim = create_user("operator")
    bystander = create_user("operator")
    answers = [post_login(client, victim.email, "wrong password") for _ in range(20)]

    assert [r.status_code for r in answers] == [401] * 5 + [429] * 15
    refused = answers[-1].get_data(as_text=True)
    assert re.search(r"Too many failed logins for this account\. Try again in \d+ seconds?\.", refused)
    assert 1 <= retry_after(answers[-1]) <= 32
    # Even the right password waits its turn; another account from the same address does not.
    assert post_login(client, victim.email, PASSWORD).status_code == 429
    assert post_login(app.test_client(), bystander.email, PASSWORD).status_code == 302


def _wait_out(scope="account"):
    """Let the wait pass: the row's blocked_until moves to the past, as the clock would have moved."""
    db.session.execute(db.update(LoginThrottle).filter_by(scope=scope)
                       .values(blocked_until=sessions.utcnow() - timedelta(seconds=1)))
    db.session.commit()


def test_the_wait_doubles_up_to_the_cap_and_a_success_resets_it(app, client, create_user, still_clock):
    user = create_user("operator")
    for _ in range(5):
        assert post_login(client, user.email, "wrong password").status_code == 401
    waits = []
    for _ in range(8):
        refused = post_login(client, user.email, "wrong password")
        assert refused.status_code == 429
        waits.append(retry_after(refused))
        _wait_out()
        assert post_login(client, user.email, "wrong password").status_code == 401
    assert waits == [1, 2, 4, 8, 16, 32, 32, 32]

    _wait_out()
    assert post_login(client, user.email, PASSWORD).status_code == 302
    # The count started again: five more free failures.
    assert [post_login(app.test_client(), user.email, "nope").status_code for _ in range(6)] == [401] * 5 + [429]


def test_unknown_accounts_are_throttled_like_known_ones(client, still_clock):
    statuses = [post_login(client, "nobody@example.org", "guess").status_code for _ in range(7)]
    assert statuses == [401] * 5 + [429, 429]


def test_an_address_is_throttled_across_accounts_and_others_are_not(another_app, create_user, still_clock):
    app = another_app(LOGIN_FAILURES_PER_ADDRESS=8)
    user = create_user("operator")
    sprayer = app.test_client()
    sprayer.environ_base.update(REMOTE_ADDR="203.0.113.9")
    statuses = [post_login(sprayer, f"guess{i}@example.org", "Summer2026!").status_code for i in range(10)]
    assert statuses == [401] * 8 + [429, 429]
    refused = post_login(sprayer, user.email, PASSWORD)
    assert refused.status_code == 429
    assert "Too many failed logins from your address." in refused.get_data(as_text=True)

    elsewhere = app.test_client()
    elsewhere.environ_base.update(REMOTE_ADDR="198.51.100.20")
    assert post_login(elsewhere, "guess0@example.org", "again").status_code == 401
    assert post_login(elsewhere, user.email, PASSWORD).status_code == 302


def test_ipv6_addresses_of_one_network_count_together(app, another_app, still_clock):
    app = another_app(LOGIN_FAILURES_PER_ADDRESS=3)
    statuses = []
    for host in range(5):
        client = app.test_client()
        client.environ_base.update(REMOTE_ADDR=f"2001:db8:1:2::{host + 1:x}")
        statuses.append(post_login(client, f"guess{host}@example.org", "x").status_code)
    assert statuses == [401] * 3 + [429, 429]


def test_the_count_holds_across_console_processes(another_app, create_user, still_clock):
    """Two app instances over one database, as two web processes would be."""
    user = create_user("operator")
    first, second = another_app(), another_app()
    for _ in range(5):
        assert post_login(first.test_client(), user.email, "wrong").status_code == 401
    assert post_login(second.test_client(), user.email, PASSWORD).status_code == 429


def test_parallel_attempts_cannot_slip_past_the_count(app, create_user, still_clock):
    user = create_user("operator")
    clients = [app.test_client() for _ in range(12)]
    tokens = [csrf_from(c.get("/login").get_data(as_text=True)) for c in clients]
    start = threading.Barrier(len(clients))
    statuses = []

    def attempt(client, token):
        start.wait()
        with app.app_context():
            statuses.append(client.post("/login", data={"email": user.email, "password": "wrong",
                                                        "csrf_token": token}).status_code)

    threads = [threading.Thread(target=attempt, args=pair) for pair in zip(clients, tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [401] * 5 + [429] * 7


def test_wrong_current_passwords_count_as_failed_logins(app, client, create_user, login, still_clock):
    user = create_user("operator")
    login(client, user)
    token = csrf_from(client.get("/account/password").get_data(as_text=True))
    form = {"current_password": "guess", "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD, "csrf_token": token}
    statuses = [client.post("/account/password", data=form).status_code for _ in range(6)]
    assert statuses == [422] * 5 + [429]
    assert "Too many failed logins for this account" in client.post("/account/password", data=form) \
        .get_data(as_text=True)


# -- hashing -----------------------------------------------------------------------------------------------------


def test_passwords_are_hashed_at_owasp_cost_and_old_hashes_are_rehashed_at_login(app, client, create_user):
    user = create_user("operator")
    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    user.password_hash = PasswordHasher().hash(PASSWORD)  # argon2-cffi's default: 64 MiB, 3 passes, 4 lanes
    db.session.commit()
    assert "m=65536" in user.password_hash

    assert post_login(client, user.email, PASSWORD).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, user.id).password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_a_lone_surrogate_is_a_wrong_password_not_an_error(create_user):
    user = create_user("operator")
    assert check_password(user, "\ud800") is False
    assert check_password(user, PASSWORD) is True
