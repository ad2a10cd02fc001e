"""Webhooks in the console: a secret shown once, signed deliveries, URL rules on save, Send test, edit and delete,
nothing of another institution's or of the fleet's webhooks shown to an institution admin.

Receivers are real HTTP servers on loopback (tests/loopback.py); the console reaches one only when the test
allow-lists its address (``OUTBOUND_ALLOW``), as an operator would for an internal receiver.
"""
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from console.extensions import db
from console.models import Alert, AuditEvent, Hub, WebhookTarget, utcnow
from console.services import FieldErrors, monitoring, webhooks
from tests.conftest import csrf_from
from tests.loopback import LoopbackServer, json_answer, status_answer

SECRET_RE = re.compile(r'value="(whsec_[A-Za-z0-9_-]+)"')


@pytest.fixture
def people(create_institution, create_user):
    north, south = create_institution("north"), create_institution("south")
    return SimpleNamespace(north=north, south=south, operator=create_user("operator"),
                           north_admin=create_user("institution_admin", institution=north),
                           south_admin=create_user("institution_admin", institution=south))


@pytest.fixture
def receiver(app):
    with LoopbackServer(status_answer(204)) as server:
        app.config["OUTBOUND_ALLOW"] = [server.address]
        yield server


def signed_by(hit, secret: str) -> bool:
    """How a receiver checks a notice (docs/monitoring.md): HMAC-SHA256 of "<timestamp>.<raw body>"."""
    stamp = hit.headers["X-Hubfleet-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, hit.headers["X-Hubfleet-Signature"]) and abs(time.time() - int(stamp)) < 300


def post(client, path, **data):
    token = csrf_from(client.get("/alerts").get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **data})


def add(client, url, institution=""):
    """Add a webhook through the form; (its id, its secret as the page showed it)."""
    response = post(client, "/alerts/webhooks", url=url, institution=institution)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    [secret] = SECRET_RE.findall(response.get_data(as_text=True))
    webhook_id = db.session.execute(db.select(db.func.max(WebhookTarget.id))).scalar_one()
    return webhook_id, secret


def test_the_secret_is_shown_once_and_every_delivery_is_signed_with_it(client, login, people, receiver):
    login(client, people.north_admin)
    url = receiver.url("/hooks/T0/B0/path-token?key=query-token")
    webhook_id, secret = add(client, url, "north")
    stored = db.session.get(WebhookTarget, webhook_id)
    assert secret not in stored.secret and webhooks.signing_secret(stored) == secret  # encrypted at rest
    for path in ("/alerts", f"/alerts/webhooks/{webhook_id}"):
        page = client.get(path).get_data(as_text=True)
        assert secret not in page and "path-token" not in page and "query-token" not in page
        assert f"http://{receiver.address}" in page  # shown by its origin

    tested = post(client, f"/alerts/webhooks/{webhook_id}/test")
    assert tested.status_code == 302
    assert "The test notice was delivered." in client.get(tested.location).get_data(as_text=True)
    [hit] = receiver.hits
    assert hit.path == "/hooks/T0/B0/path-token?key=query-token" and hit.method == "POST"
    assert json.loads(hit.body) == {"event": "test", "alert": None}
    assert signed_by(hit, secret) and not signed_by(hit, webhooks.new_secret())

    renewed = post(client, f"/alerts/webhooks/{webhook_id}/secret")
    [new] = SECRET_RE.findall(renewed.get_data(as_text=True))
    assert new != secret and renewed.headers["Cache-Control"] == "no-store"
    post(client, f"/alerts/webhooks/{webhook_id}/test")
    assert signed_by(receiver.hits[-1], new) and not signed_by(receiver.hits[-1], secret)

    events = db.session.execute(db.select(AuditEvent).where(AuditEvent.action.like("webhook.%"))
                                .order_by(AuditEvent.id)).scalars().all()
    assert [e.action for e in events] == ["webhook.add", "webhook.test", "webhook.secret", "webhook.test"]
    recorded = " ".join(f"{e.target} {e.detail}" for e in events)
    assert "token" not in recorded and secret not in recorded and new not in recorded


def _hub(people, create_cluster) -> Hub:
    hub = Hub(slug="north-lab", institution=people.north, cluster=create_cluster(), state="running",
              health="down", url="http://127.0.0.1:1/")
    db.session.add(hub)
    db.session.commit()
    return hub


def test_alerts_go_signed_to_each_webhook_and_a_failure_names_none(app, client, login, people, create_cluster):
    hub = _hub(people, create_cluster)
    with LoopbackServer(status_answer(204)) as fleet_receiver, LoopbackServer(status_answer(200)) as north_receiver:
        app.config["OUTBOUND_ALLOW"] = [fleet_receiver.address, north_receiver.address]
        login(client, people.operator)
        _, fleet_secret = add(client, fleet_receiver.url("/fleet-hook"))
        client.get("/logout")
        login(client, people.north_admin)
        _, north_secret = add(client, north_receiver.url("/north-hook"), "north")
        db.session.add(Alert(hub=hub, kind="down", reason="no answer", started_at=utcnow()))
        db.session.commit()
        assert monitoring.deliver() == 1
    [to_fleet], [to_north] = fleet_receiver.hits, north_receiver.hits
    assert signed_by(to_fleet, fleet_secret) and signed_by(to_north, north_secret)
    assert not signed_by(to_fleet, north_secret)
    assert json.loads(to_north.body)["alert"]["hub"] == "north-lab"

    # Both receivers are gone now: the next notice is taken by none, and the alert says so without naming either.
    alert = db.session.execute(db.select(Alert)).unique().scalar_one()
    alert.resolved_at = utcnow()
    db.session.commit()
    assert monitoring.deliver() == 0
    db.session.expire_all()
    assert alert.recovery_notified_at is None and alert.last_error == monitoring.NOT_DELIVERED
    page = client.get("/alerts").get_data(as_text=True)
    assert monitoring.NOT_DELIVERED in page
    assert fleet_receiver.address not in page and "fleet-hook" not in page  # the fleet's webhook stays the fleet's
    assert north_receiver.address in page
    # A webhook that just failed rests: the next pass asks nobody, and after RETRY_AFTER it is asked again.
    assert webhooks.resting(db.session.get(WebhookTarget, 1), utcnow())
    assert not webhooks.resting(db.session.get(WebhookTarget, 1), utcnow() + webhooks.RETRY_AFTER)


@pytest.mark.parametrize("url", ["ftp://hooks.example.org/x", "http://hooks.example.org/x", "hooks.example.org",
                                 "", "https://127.0.0.1/x", "https://[::1]/x", "https://169.254.169.254/latest",
                                 "https://10.0.0.1/", "https://[::ffff:127.0.0.1]/", "https://x.org/" + "a" * 2000])
def test_a_url_the_console_would_never_request_is_refused_on_save(client, login, people, url):
    login(client, people.north_admin)
    refused = post(client, "/alerts/webhooks", url=url, institution="north")
    assert refused.status_code == 422 and 'id="url-error"' in refused.get_data(as_text=True)
    assert db.session.query(WebhookTarget).count() == 0


def test_editing_to_a_url_that_is_refused_changes_nothing(client, login, people, receiver):
    login(client, people.north_admin)
    webhook_id, _ = add(client, receiver.url("/a"), "north")
    refused = post(client, f"/alerts/webhooks/{webhook_id}", url="http://hooks.example.org/b")
    assert refused.status_code == 422 and 'id="url-error"' in refused.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(WebhookTarget, webhook_id).url == receiver.url("/a")
    assert post(client, f"/alerts/webhooks/{webhook_id}", url="https://hooks.example.org/b").status_code == 302
    db.session.expire_all()
    assert db.session.get(WebhookTarget, webhook_id).url == "https://hooks.example.org/b"


def test_send_test_gives_one_message_whatever_answers(app, client, login, people):
    """A name that resolves to loopback, a 404, a 500, a redirect to a server on loopback: the admin reads one
    message, and the server a redirect points at is never reached."""
    login(client, people.north_admin)
    with LoopbackServer(json_answer({"secret": "inside"})) as inside:
        answers = [status_answer(404), status_answer(500), status_answer(302, inside.url("/")),
                   status_answer(307, inside.url("/"))]
        servers = [LoopbackServer(answer).__enter__() for answer in answers]
        try:
            app.config["OUTBOUND_ALLOW"] = [server.address for server in servers]
            urls = [server.url("/hook") for server in servers] + [
                f"https://localhost:{inside.port}/hook", f"https://LOCALHOST.:{inside.port}/"]
            messages = set()
            for url in urls:
                webhook_id, _ = add(client, url, "north")
                tested = post(client, f"/alerts/webhooks/{webhook_id}/test")
                page = client.get(tested.location).get_data(as_text=True)
                messages |= {m for m in re.findall(r'<p class="notice" role="status">([^<]*)</p>', page)}
            assert messages == {webhooks.FAILED}
            assert [len(server.hits) for server in servers] == [1, 1, 1, 1]
        finally:
            for server in servers:
                server.__exit__(None, None, None)
        assert inside.hits == []


def test_webhooks_are_edited_tested_and_deleted_by_their_owners_only(client, login, people, receiver):
    login(client, people.operator)
    fleet_id, _ = add(client, receiver.url("/fleet"))
    client.get("/logout")
    login(client, people.north_admin)
    north_id, _ = add(client, receiver.url("/north"), "north")
    assert post(client, "/alerts/webhooks", url=receiver.url("/x"), institution="south").status_code == 404
    assert post(client, "/alerts/webhooks", url=receiver.url("/x")).status_code == 403  # the fleet's: operators
    alerts = client.get("/alerts").get_data(as_text=True)
    assert f'id="webhook-{north_id}"' in alerts and f'id="webhook-{fleet_id}"' not in alerts
    for path in (f"/alerts/webhooks/{fleet_id}",):
        assert client.get(path).status_code == 404
    for suffix in ("", "/test", "/secret", "/delete"):
        assert post(client, f"/alerts/webhooks/{fleet_id}{suffix}", url="https://x.org/").status_code == 404
    client.get("/logout")

    login(client, people.south_admin)
    assert client.get(f"/alerts/webhooks/{north_id}").status_code == 404
    for suffix in ("", "/test", "/secret", "/delete"):
        assert post(client, f"/alerts/webhooks/{north_id}{suffix}", url="https://x.org/").status_code == 404
    assert receiver.hits == []
    client.get("/logout")

    login(client, people.operator)  # an operator manages every webhook
    assert client.get(f"/alerts/webhooks/{north_id}").status_code == 200
    assert post(client, f"/alerts/webhooks/{north_id}/test").status_code == 302 and len(receiver.hits) == 1
    client.get("/logout")
    login(client, people.north_admin)
    assert post(client, f"/alerts/webhooks/{north_id}/delete").status_code == 302
    assert db.session.get(WebhookTarget, north_id) is None and db.session.get(WebhookTarget, fleet_id) is not None
    actions = [(e.action, e.actor) for e in db.session.execute(
        db.select(AuditEvent).where(AuditEvent.action.like("webhook.%")).order_by(AuditEvent.id)).scalars()]
    assert actions == [("webhook.add", people.operator.email), ("webhook.add", people.north_admin.email),
                       ("webhook.test", people.operator.email), ("webhook.delete", people.north_admin.email)]


def test_secrets_rotate_re_encrypts_webhook_secrets(app, client, login, people, receiver):
    from click.testing import CliRunner
    from cryptography.fernet import Fernet
    from flask.cli import ScriptInfo

    from console.cli import main
    from console.crypto import InvalidToken, load_keys

    login(client, people.operator)
    webhook_id, secret = add(client, receiver.url("/fleet"))
    old_key = (Path(app.config["DATA_DIR"]) / "encryption_key").read_text().strip()
    new_key = Fernet.generate_key().decode()
    app.config["ENCRYPTION_KEYS"] = f"{new_key},{old_key}"
    load_keys(app)
    rotated = CliRunner().invoke(main, ["secrets", "rotate"], obj=ScriptInfo(create_app=lambda: app))
    assert rotated.exit_code == 0, rotated.output
    app.config["ENCRYPTION_KEYS"] = new_key  # the old key is dropped: the webhook still signs with its secret
    load_keys(app)
    db.session.expire_all()
    target = db.session.get(WebhookTarget, webhook_id)
    assert webhooks.signing_secret(target) == secret
    app.config["ENCRYPTION_KEYS"] = old_key
    load_keys(app)
    with pytest.raises(InvalidToken):
        webhooks.signing_secret(target)


def test_an_owner_has_at_most_max_per_owner_webhooks(people):
    for i in range(webhooks.MAX_PER_OWNER):
        webhooks.add(people.north_admin, f"https://hooks.example.org/{i}", people.north)
    with pytest.raises(FieldErrors) as refused:
        webhooks.add(people.north_admin, "https://hooks.example.org/one-more", people.north)
    assert "At most" in refused.value.errors["url"]
    webhooks.add(people.operator, "https://hooks.example.org/fleet", None)  # the fleet's are counted apart
    assert db.session.query(WebhookTarget).count() == webhooks.MAX_PER_OWNER + 1
