"""API tokens: a name, scopes no wider than their owner, an expiry, last-used time, revocation; pages, API and CLI."""
import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo
from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from console.cli import main
from console.extensions import db
from console.models import ApiToken, AuditEvent, utcnow
from console.services.tokens import new_api_token
from tests.conftest import csrf_from

pytestmark = pytest.mark.usefixtures("own_g_per_request")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def make_token(user, **kwargs) -> str:
    token = new_api_token(user, **kwargs)
    db.session.commit()
    return token


@pytest.fixture
def admin(create_institution, create_user):
    return create_user("institution_admin", institution=create_institution("north"))


def test_create_use_and_revoke_a_token_through_the_api(client, admin):
    parent = make_token(admin)
    created = client.post("/api/v1/tokens", headers=bearer(parent),
                          json={"name": "nightly report", "scopes": ["read"], "expires_days": 30})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    token = body.pop("token")
    assert token.startswith("hf_")
    assert body["name"] == "nightly report" and body["scopes"] == ["read"] and body["status"] == "active"
    assert body["last_used_at"] is None

    assert client.get("/api/v1/hubs", headers=bearer(token)).status_code == 200
    listed = client.get("/api/v1/tokens", headers=bearer(parent)).get_json()
    assert [t["name"] for t in listed] == ["nightly report", "token"]
    assert listed[0]["last_used_at"] is not None
    assert all("token" not in t for t in listed)  # the token itself is shown once, at creation

    assert client.delete(f"/api/v1/tokens/{body['id']}", headers=bearer(parent)).status_code == 204
    refused = client.get("/api/v1/hubs", headers=bearer(token))
    assert refused.status_code == 401 and refused.get_json()["message"] == "this token has been revoked"
    assert client.get(f"/api/v1/tokens/{body['id']}", headers=bearer(parent)).get_json()["status"] == "revoked"

    events = db.session.execute(db.select(AuditEvent).where(AuditEvent.action.like("token.%"))
                                .order_by(AuditEvent.id)).scalars().all()
    assert [e.action for e in events] == ["token.create", "token.revoke"]
    assert events[0].detail["scopes"] == ["read"] and events[0].institution_id == admin.institution_id
    assert not any(token in f"{e.target} {e.detail}" or parent in f"{e.target} {e.detail}" for e in events)


def test_an_expired_token_gets_401(client, admin):
    token = make_token(admin, expires_at=utcnow() - timedelta(seconds=1))
    refused = client.get("/api/v1/hubs", headers=bearer(token))
    assert refused.status_code == 401
    assert refused.get_json()["message"] == "this token has expired"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/v1/hubs", headers=bearer(make_token(admin))).status_code == 200


@pytest.mark.parametrize("scopes,message", [
    (["hub.create"], "Your role does not allow hub.create"),
    (["read", "release.manage"], "Your role does not allow release.manage"),
    (["hub.fly"], "Unknown scope 'hub.fly'"),
    ([], "Length must be between 1 and 64."),
])
def test_a_token_can_do_no_more_than_its_owner(client, admin, scopes, message):
    response = client.post("/api/v1/tokens", headers=bearer(make_token(admin)),
                           json={"name": "too much", "scopes": scopes})
    assert response.status_code == 422
    assert message in str(response.get_json()["errors"]["json"]["scopes"])
    assert db.session.execute(db.select(ApiToken).filter_by(name="too much")).first() is None


def test_groups_are_clipped_to_the_owner_and_scopes_limit_the_api(client, admin, create_user, create_cluster):
    create_cluster("fast")
    # "write" for an institution admin is what an institution admin may do: creating a hub stays an operator's.
    writer = make_token(admin, scopes=["write"])
    assert client.post("/api/v1/hubs", headers=bearer(writer),
                       json={"slug": "lab", "institution": "north", "cluster": "fast"}).status_code == 403
    operator = create_user("operator")
    reader = make_token(operator, scopes=["read"])
    assert client.get("/api/v1/hubs", headers=bearer(reader)).status_code == 200
    refused = client.post("/api/v1/hubs", headers=bearer(reader),
                          json={"slug": "lab", "institution": "north", "cluster": "fast"})
    assert refused.status_code == 403
    assert refused.get_json()["message"] == "this token's scopes do not include hub.create"
    creator = make_token(operator, scopes=["hub.create"])
    assert client.post("/api/v1/hubs", headers=bearer(creator),
                       json={"slug": "lab", "institution": "north", "cluster": "fast"}).status_code == 202
    assert client.get("/api/v1/hubs", headers=bearer(creator)).status_code == 403  # no hub.view


def test_a_token_makes_tokens_only_within_its_own_scopes(client, admin):
    reader = make_token(admin, scopes=["read", "token.manage"])
    response = client.post("/api/v1/tokens", headers=bearer(reader), json={"name": "wider", "scopes": ["write"]})
    assert response.status_code == 422
    assert "within its own scopes" in response.get_json()["errors"]["json"]["scopes"][0]
    narrower = client.post("/api/v1/tokens", headers=bearer(reader), json={"name": "ok", "scopes": ["hub.view"]})
    assert narrower.status_code == 201
    # Without token.manage a token cannot reach the token endpoints at all.
    assert client.get("/api/v1/tokens", headers=bearer(make_token(admin, scopes=["read"]))).status_code == 403


@pytest.mark.parametrize("body,field", [
    ({"name": "x", "scopes": ["read"], "expires_days": 0}, "expires_days"),
    ({"name": "x", "scopes": ["read"], "expires_days": 366}, "expires_days"),
    ({"name": "x", "scopes": ["read"], "expires_days": "90"}, "expires_days"),
    ({"name": "x", "scopes": ["read"], "expires_days": 10 ** 400}, "expires_days"),
    ({"name": "", "scopes": ["read"]}, "name"),
    ({"name": "   ", "scopes": ["read"]}, "name"),
    ({"name": "x" * 101, "scopes": ["read"]}, "name"),
    ({"name": "x", "scopes": "read"}, "scopes"),
    ({"name": "x", "scopes": ["read"] * 65}, "scopes"),
    ({"scopes": ["read"]}, "name"),
])
def test_bad_token_requests_get_field_errors(client, admin, body, field):
    response = client.post("/api/v1/tokens", headers=bearer(make_token(admin)), json=body)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]["json"]
    assert db.session.query(ApiToken).count() == 1


def test_the_default_expiry_is_90_days(client, admin):
    created = client.post("/api/v1/tokens", headers=bearer(make_token(admin)),
                          json={"name": "default", "scopes": ["read"]}).get_json()
    row = db.session.get(ApiToken, created["id"])
    assert timedelta(days=89, hours=23) < row.expires_at - utcnow() <= timedelta(days=90)


def test_last_used_is_written_at_most_once_a_minute(client, admin):
    token = make_token(admin)
    client.get("/api/v1/hubs", headers=bearer(token))
    first = db.session.execute(db.select(ApiToken.last_used_at)).scalar_one()
    assert first is not None
    client.get("/api/v1/hubs", headers=bearer(token))
    assert db.session.execute(db.select(ApiToken.last_used_at)).scalar_one() == first
    db.session.execute(db.update(ApiToken).values(last_used_at=first - timedelta(minutes=2)))
    db.session.commit()
    client.get("/api/v1/hubs", headers=bearer(token))
    assert db.session.execute(db.select(ApiToken.last_used_at)).scalar_one() > first - timedelta(minutes=1)


def test_an_institution_admin_cannot_see_or_revoke_another_persons_token(app, client, admin, create_user,
                                                                          create_institution, login):
    colleague = create_user("institution_admin", institution=admin.institution)
    stranger = create_user("institution_admin", institution=create_institution("south"))
    operator = create_user("operator")
    mine = make_token(admin)
    for other in (colleague, stranger, operator):
        theirs = make_token(other, name="theirs")
        theirs_id = db.session.execute(db.select(ApiToken.id).filter_by(user_id=other.id)).scalar_one()
        assert client.get(f"/api/v1/tokens/{theirs_id}", headers=bearer(mine)).status_code == 404
        assert client.delete(f"/api/v1/tokens/{theirs_id}", headers=bearer(mine)).status_code == 404
        assert all(t["id"] != theirs_id for t in client.get("/api/v1/tokens", headers=bearer(mine)).get_json())
        assert client.get("/api/v1/hubs", headers=bearer(theirs)).status_code == 200

    browser = login(app.test_client(), admin)
    page = browser.get("/account/tokens").get_data(as_text=True)
    assert "theirs" not in page
    response = browser.post("/account/tokens/revoke", data={"token_id": theirs_id, "csrf_token": csrf_from(page)})
    assert response.status_code == 404
    assert db.session.get(ApiToken, theirs_id).revoked_at is None


def test_tokens_page_creates_shows_once_lists_and_revokes(app, admin, login):
    browser = login(app.test_client(), admin)
    page = browser.get("/account/tokens")
    assert page.status_code == 200 and "You have no API tokens." in page.get_data(as_text=True)
    html = page.get_data(as_text=True)
    assert 'value="hub.restart"' in html and 'value="hub.create"' not in html  # only what the owner may do

    created = browser.post("/account/tokens", data={"name": "grafana", "scopes": ["read"], "expires_days": "7",
                                                    "csrf_token": csrf_from(html)})
    assert created.status_code == 201 and created.headers["Cache-Control"] == "no-store"
    token = re.search(r'value="(hf_[^"]+)"', created.get_data(as_text=True)).group(1)
    assert browser.get("/api/v1/hubs").status_code == 401  # the cookie never drives the API
    assert app.test_client().get("/api/v1/hubs", headers=bearer(token)).status_code == 200

    listing = browser.get("/account/tokens").get_data(as_text=True)
    assert token not in listing and "grafana" in listing and "UTC" in listing
    token_id = db.session.execute(db.select(ApiToken.id).filter_by(name="grafana")).scalar_one()
    revoked = browser.post("/account/tokens/revoke", data={"token_id": token_id, "csrf_token": csrf_from(listing)})
    assert revoked.status_code == 302
    assert "revoked" in browser.get("/account/tokens").get_data(as_text=True)
    assert app.test_client().get("/api/v1/hubs", headers=bearer(token)).status_code == 401


def test_tokens_page_shows_field_errors_and_keeps_input(app, admin, login):
    browser = login(app.test_client(), admin)
    html = browser.get("/account/tokens").get_data(as_text=True)
    response = browser.post("/account/tokens", data={"name": "kept name", "scopes": ["hub.create"],
                                                     "expires_days": "400", "csrf_token": csrf_from(html)})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert 'value="kept name"' in page
    assert "Enter a number of days from 1 to 365." in page
    assert "Your role does not allow hub.create" in page
    assert db.session.query(ApiToken).count() == 0


@pytest.fixture
def hubfleet(app):
    def run(*args):
        return CliRunner().invoke(main, list(args), obj=ScriptInfo(create_app=lambda: app))

    return run


def test_cli_token_create_takes_a_name_scopes_and_expiry(hubfleet, client, admin):
    result = hubfleet("token", "create", "--user", admin.email, "--name", "backup job", "--scope", "read",
                      "--expires-days", "5")
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    row = db.session.execute(db.select(ApiToken).filter_by(name="backup job")).scalar_one()
    assert row.scopes == ["read"] and timedelta(days=4) < row.expires_at - utcnow() <= timedelta(days=5)
    assert client.get("/api/v1/hubs", headers=bearer(token)).status_code == 200
    assert db.session.execute(db.select(AuditEvent.actor).filter_by(action="token.create")).scalar_one() == "cli"

    result = hubfleet("token", "create", "--user", admin.email, "--expires-days", "500", "--scope", "cluster.manage")
    assert result.exit_code == 2
    assert "error: expires_days:" in result.output and "error: scopes:" in result.output


def test_tokens_from_before_the_migration_keep_working_for_90_days(ctx):
    """A token made before tokens had names, scopes and expiry: the migration gives it all three."""
    downgrade(revision="0006")
    db.session.execute(text("INSERT INTO \"user\" (email, password_hash, role, created_at) "
                            "VALUES ('old@example.org', 'x', 'operator', CURRENT_TIMESTAMP)"))
    user_id = db.session.execute(text("SELECT id FROM \"user\"")).scalar_one()
    db.session.execute(text("INSERT INTO api_token (user_id, token_hash, created_at) "
                            "VALUES (:user_id, :hash, CURRENT_TIMESTAMP)"), {"user_id": user_id, "hash": "0" * 64})
    db.session.commit()
    upgrade()
    row = db.session.execute(db.select(ApiToken)).unique().scalar_one()
    assert row.name == f"token {row.id}" and row.scopes == ["read", "write"] and row.revoked_at is None
    assert timedelta(days=89) < row.expires_at - utcnow() <= timedelta(days=90)
