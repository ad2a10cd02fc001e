"""Institution self-service through the API and pages, over the fake backend."""
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo
from hypothesis import HealthCheck, given, settings

from console.cli import main
from console.extensions import db
from console.models import AuditEvent, Hub, Institution, Operation, Rollout
from console.services import releases
from tenants.layering import RELEASE_DEFAULTS
from tests.conftest import csrf_from
from tests.tenants.strategies import auth_configs, environments

SECRET = "s3cr3t-marker-7f1c9a"
OIDC = {"authenticator_class": "generic-oauth", "client_id": "hub-client", "client_secret": SECRET,
        "authorize_url": "https://idp.north.edu/auth", "token_url": "https://idp.north.edu/token",
        "userdata_url": "https://idp.north.edu/me", "allowed_groups": ["students"], "manage_groups": True}
ENV = {"image": "quay.io/jupyter/scipy-notebook:2025-01-06", "cpu_limit": 2, "mem_limit": "4G"}


@pytest.fixture
def north(create_institution, create_cluster, create_user, api_headers, client, run_worker):
    """Institution north with two running hubs; returns (admin headers, operator headers, admin user)."""
    institution = create_institution("north", "North College")
    institution.policy = {"open_login_allowed": True}  # these tests use the dummy login's simple rules
    create_cluster("fast", backend="fake")
    operator = api_headers(create_user("operator"))
    for slug in ("north-a", "north-b"):
        client.post("/api/v1/hubs", json={"slug": slug, "institution": "north", "cluster": "fast"}, headers=operator)
    run_worker()
    admin = create_user("institution_admin", institution=institution)
    return api_headers(admin), operator, admin


def put_config(client, headers, auth, environment=ENV, slug="north"):
    return client.put(f"/api/v1/institutions/{slug}/config", json={"auth": auth, "environment": environment},
                      headers=headers)


def drive(app, run_worker, rollout_id, passes=30):
    """Step the rollout driver and the worker until the rollout stops running; returns the rollout."""
    for _ in range(passes):
        with app.app_context():
            releases.advance()
            db.session.remove()
        run_worker()
        rollout = db.session.get(Rollout, rollout_id)
        db.session.refresh(rollout)
        if rollout.state != "running":
            return rollout
    return rollout


def hub(slug):
    row = db.session.execute(db.select(Hub).filter_by(slug=slug)).unique().scalar_one()
    db.session.refresh(row)
    return row


def test_admin_applies_config_and_every_hub_is_reconfigured(app, client, north, run_worker):
    admin, _, _ = north
    response = put_config(client, admin, OIDC)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["rollout"] and body["auth"]["authenticator_class"] == "closed"  # stored only once every hub took it
    assert drive(app, run_worker, body["rollout"]).state == "done"
    reconfigured = db.session.execute(db.select(Operation).filter_by(kind="reconfigure")
                                      .order_by(Operation.id)).unique().scalars().all()
    assert [(op.hub.slug, op.outcome) for op in reconfigured] == [("north-a", "succeeded"), ("north-b", "succeeded")]
    body = client.get("/api/v1/institutions/north/config", headers=admin).get_json()
    assert body["secrets_set"] == ["client_secret"]
    assert "client_secret" not in body["auth"] and body["auth"]["allowed_groups"] == ["students"]
    assert all("config_rollout" not in hub(slug).spec for slug in ("north-a", "north-b"))
    rendered = client.get("/api/v1/hubs/north-a/rendered?target=z2jh", headers=admin).get_json()["config"]
    section = rendered["hub"]["config"]["GenericOAuthenticator"]
    assert section["client_id"] == "hub-client" and section["client_secret"] == "********"
    assert rendered["singleuser"]["cpu"]["limit"] == 2
    local = client.get("/api/v1/hubs/north-a/rendered?target=local", headers=admin).get_json()["config"]
    assert local["JupyterHub"]["authenticator_class"] == "generic-oauth"
    assert client.get("/api/v1/hubs/north-a/rendered?target=helm", headers=admin).status_code == 422
    [event] = db.session.execute(db.select(AuditEvent).filter_by(action="institution.config")).scalars()
    assert "client_secret" in event.detail["changed"] and SECRET not in json.dumps(event.detail)


def test_rollout_goes_canary_first_and_a_second_apply_waits(app, client, north, run_worker):
    admin, operator, _ = north
    assert client.patch("/api/v1/hubs/north-b", json={"canary": True}, headers=operator).status_code == 200
    first = put_config(client, admin, {"authenticator_class": "dummy", "allowed_users": ["ada", "Bob"]})
    assert first.status_code == 200
    again = put_config(client, admin, {"authenticator_class": "dummy", "allowed_users": ["cy"]})
    assert again.status_code == 409 and "still rolling out" in again.get_data(as_text=True)
    rollout = drive(app, run_worker, first.get_json()["rollout"])
    assert rollout.state == "done"
    order = db.session.execute(db.select(Operation).filter_by(kind="reconfigure").order_by(Operation.id)
                               ).unique().scalars().all()
    assert [op.hub.slug for op in order] == ["north-b", "north-a"]  # the canary first
    assert "preflight with JupyterHub" in " ".join(line.line for line in order[0].lines)
    assert client.get("/api/v1/institutions/north/config", headers=admin).get_json()["auth"]["allowed_users"] == [
        "ada", "Bob"]


def test_preflight_refusal_halts_with_the_hub_untouched(app, client, north, run_worker):
    """A hub-level override the hub's JupyterHub refuses (memory in Gi) is caught by the preflight on that hub."""
    admin, _, _ = north
    canary = hub("north-a")
    canary.spec = {**canary.spec, "overrides": {"environment": {"mem_limit": "4Gi"}}}
    db.session.commit()
    before = {slug: (hub(slug).backend_state, hub(slug).state) for slug in ("north-a", "north-b")}
    response = put_config(client, admin, {"authenticator_class": "dummy", "allowed_users": ["ada"]})
    rollout = drive(app, run_worker, response.get_json()["rollout"])
    assert rollout.state == "halted" and "4Gi is not a valid memory specification" in rollout.reason
    [op] = db.session.execute(db.select(Operation).filter_by(kind="reconfigure")).unique().scalars().all()
    assert op.hub.slug == "north-a" and op.outcome == "failed" and "the hub was not touched" in op.error
    assert {slug: (hub(slug).backend_state, hub(slug).state) for slug in before} == before  # still running
    assert "config_rollout" not in hub("north-a").spec
    assert client.get("/api/v1/institutions/north/config", headers=admin).get_json()["auth"] == RELEASE_DEFAULTS[
        "auth"]
    # Fixed (the override goes), the next Apply supersedes the halted rollout and goes through.
    canary = hub("north-a")
    canary.spec = {k: v for k, v in canary.spec.items() if k != "overrides"}
    db.session.commit()
    again = put_config(client, admin, {"authenticator_class": "dummy", "allowed_users": ["ada"]})
    assert again.status_code == 200 and db.session.get(Rollout, rollout.id).state == "aborted"
    assert drive(app, run_worker, again.get_json()["rollout"]).state == "done"
    assert client.get("/api/v1/institutions/north/config", headers=admin).get_json()["auth"]["allowed_users"] == [
        "ada"]


def test_a_username_jupyterhub_refuses_is_a_field_error(app, client, north):
    admin, _, _ = north
    before = snapshot(app)
    response = put_config(client, admin, {"authenticator_class": "dummy", "allowed_users": ["ada", "../etc"],
                                          "admin_users": ["%2e%2e"]})
    assert response.status_code == 422
    errors = response.get_json()["errors"]["json"]
    assert errors == {"auth.allowed_users": ["JupyterHub refuses the username '../etc': it contains '/'."],
                      "auth.admin_users": ["JupyterHub refuses the username '%2e%2e': it is only dots."]}
    assert snapshot(app) == before


def test_blank_secret_keeps_the_stored_one(app, client, north, run_worker):
    admin, _, _ = north
    drive(app, run_worker, put_config(client, admin, OIDC).get_json()["rollout"])
    response = put_config(client, admin, {**OIDC, "client_secret": "", "allowed_groups": ["staff"]})
    assert response.status_code == 200 and response.get_json()["secrets_set"] == ["client_secret"]
    assert drive(app, run_worker, response.get_json()["rollout"]).state == "done"
    from console.crypto import decrypt_json

    institution = db.session.execute(db.select(Institution).filter_by(slug="north")).scalar_one()
    db.session.refresh(institution)
    assert decrypt_json(institution.auth_secrets) == {"client_secret": SECRET}


def snapshot(app):
    """Everything a refused change must leave alone: the institution's rows, operations, audit, files."""
    db.session.expire_all()
    institution = db.session.execute(db.select(Institution).filter_by(slug="north")).scalar_one()
    files = sorted((str(p), p.stat().st_mtime_ns) for p in Path(app.config["DATA_DIR"]).rglob("*")
                   if p.is_file() and not p.name.startswith("console.sqlite"))
    return (institution.auth, institution.environment, institution.auth_secrets, institution.policy,
            db.session.query(Operation).count(), db.session.query(AuditEvent).count(), files)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(auth=auth_configs(), environment=environments)
def test_every_refused_config_changes_nothing(app, client, north, auth, environment):
    admin, _, _ = north
    before = snapshot(app)
    response = put_config(client, admin, auth, environment)
    if response.status_code in (200, 409):
        return  # valid (409: an earlier example's rollout is still under way): covered by the render property test
    assert response.status_code == 422
    errors = response.get_json()["errors"]["json"]
    assert errors and all(k.startswith(("auth.", "environment.")) for k in errors)
    assert snapshot(app) == before


def test_policy_is_the_operators(client, north):
    admin, operator, _ = north
    bad = client.put("/api/v1/institutions/north/policy", json={"max_cpu": "many"}, headers=operator)
    assert bad.status_code == 422 and "policy.max_cpu" in bad.get_json()["errors"]["json"]
    ok = client.put("/api/v1/institutions/north/policy", json={"max_cpu": 1, "max_memory": "2G"}, headers=operator)
    assert ok.status_code == 200 and ok.get_json()["max_cpu"] == 1
    # The admin's next change must fit the new policy, and the error names the limit.
    refused = put_config(client, admin, OIDC, {**ENV, "cpu_limit": 2})
    assert refused.get_json()["errors"]["json"] == {
        "environment.cpu_limit": ["At most 1 CPU per user (the operator's policy)."],
        "environment.mem_limit": ["At most 2G of memory per user (the operator's policy)."]}


def test_an_admin_of_another_institution_can_neither_read_nor_change(client, north, create_institution,
                                                                     create_user, api_headers, login):
    admin, operator, _ = north
    put_config(client, admin, OIDC)
    other = api_headers(create_user("institution_admin", institution=create_institution("south")))
    before = client.get("/api/v1/institutions/north/config", headers=admin).get_json()
    assert client.get("/api/v1/institutions/north/config", headers=other).status_code == 404
    assert put_config(client, other, {**OIDC, "allow_all": True}).status_code == 404
    assert client.get("/api/v1/institutions/north/policy", headers=other).status_code == 404
    assert client.put("/api/v1/institutions/north/policy", json={"max_cpu": 64}, headers=other).status_code == 404
    assert client.get("/api/v1/hubs/north-a/rendered", headers=other).status_code == 404
    assert client.get("/api/v1/institutions/north/config", headers=admin).get_json() == before


def test_config_form_preview_then_apply(app, client, north, login, run_worker):
    _, _, admin_user = north
    login(client, admin_user)
    page = client.get("/institutions/north/config").get_data(as_text=True)
    token = csrf_from(page)
    assert 'name="auth.authenticator_class"' in page
    # Switch the provider: the form now shows generic-oauth's fields.
    switched = client.post("/institutions/north/config", data={"csrf_token": token, "action": "switch",
                                                               "auth.authenticator_class": "generic-oauth"})
    assert switched.status_code == 200 and 'name="auth.token_url"' in switched.get_data(as_text=True)
    form = {"csrf_token": token, "action": "preview", **{f"auth.{k}": v for k, v in OIDC.items()
                                                         if k != "allowed_groups"},
            "auth.allowed_groups": "students\nstaff", "auth.manage_groups": "on", "environment.image": ENV["image"],
            "environment.cpu_limit": "9"}
    refused = client.post("/institutions/north/config", data=form)
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422 and 'id="environment.cpu_limit-error"' in text
    assert "At most 4 CPUs per user" in text and 'value="9"' in text  # the input is kept
    assert SECRET not in text and "A new value was entered" in text  # the typed secret is kept, not shown
    form["environment.cpu_limit"] = "2"
    form["auth.client_secret"] = ""  # already kept in the draft
    preview = client.post("/institutions/north/config", data=form)
    text = preview.get_data(as_text=True)
    assert preview.status_code == 200 and "north-a" in text and "+GenericOAuthenticator:" in text
    assert SECRET not in text and "******** (changed)" in text and "hub by hub: north-a, then north-b" in text
    assert db.session.query(Operation).filter_by(kind="reconfigure").count() == 0  # preview changes nothing
    applied = client.post("/institutions/north/config/apply", data={"csrf_token": token}, follow_redirects=True)
    text = applied.get_data(as_text=True)
    assert "Applying hub by hub, north-a first, then north-b." in text
    assert 'id="config-rollout" hx-get="/institutions/north/config/rollout"' in text  # polls while it runs
    assert "client_secret: none" in text or "Secrets</dt><dd>none" in text  # not stored before every hub took it
    rollout = db.session.execute(db.select(Rollout).filter_by(kind="config")).unique().scalar_one()
    assert drive(app, run_worker, rollout.id).state == "done"
    panel = client.get("/institutions/north/config/rollout", headers={"HX-Request": "true"})
    assert panel.headers.get("HX-Refresh") == "true" and "Every hub took the change" in panel.get_data(as_text=True)
    assert panel.get_data(as_text=True).count('data-status="upgraded">Applied<') == 2
    detail = client.get("/institutions/north").get_data(as_text=True)
    assert "client_secret: set" in detail and SECRET not in detail
    assert "not applied yet" not in client.get("/institutions/north/config").get_data(as_text=True)  # draft cleared


def test_discovery_errors_are_field_errors(client, north, login):
    _, _, admin_user = north
    login(client, admin_user)
    token = csrf_from(client.get("/institutions/north/config").get_data(as_text=True))
    response = client.post("/institutions/north/config", data={
        "csrf_token": token, "action": "discover", "auth.authenticator_class": "generic-oauth",
        "discovery_url": "http://127.0.0.1:9/"})
    assert response.status_code == 422
    assert re.findall(r'id="discovery_url-error">([^<]*)<', response.get_data(as_text=True)) == [
        "Could not fetch the discovery document from that URL."]


def test_the_discovery_field_reaches_no_service_on_loopback(app, client, north, login):
    """An institution admin cannot use the discovery field to look around the console's network: a refused address
    (however spelled), a redirect to loopback or an answer that is not a discovery document all read the same, and
    the service on loopback is never asked, until the operator allow-lists it."""
    from tests.loopback import LoopbackServer, json_answer, status_answer

    document = {"authorization_endpoint": "https://idp.example.edu/a", "token_endpoint": "https://idp.example.edu/t",
                "userinfo_endpoint": "https://idp.example.edu/u"}
    _, _, admin_user = north
    login(client, admin_user)
    token = csrf_from(client.get("/institutions/north/config").get_data(as_text=True))

    def discover(url):
        return client.post("/institutions/north/config", data={
            "csrf_token": token, "action": "discover", "auth.authenticator_class": "generic-oauth",
            "discovery_url": url})

    with LoopbackServer(json_answer(document)) as inside, \
            LoopbackServer(status_answer(302, inside.url("/.well-known/openid-configuration"))) as redirector, \
            LoopbackServer(status_answer(404)) as missing:
        app.config["OUTBOUND_ALLOW"] = [redirector.address, missing.address]
        messages = set()
        for url in (inside.url(), f"http://localhost:{inside.port}", f"https://localhost:{inside.port}",
                    f"https://2130706433:{inside.port}", f"https://[::ffff:127.0.0.1]:{inside.port}",
                    "https://169.254.169.254/", redirector.url(), missing.url()):
            response = discover(url)
            assert response.status_code == 422, url
            messages |= set(re.findall(r'id="discovery_url-error">([^<]*)<', response.get_data(as_text=True)))
        assert messages == {"Could not fetch the discovery document from that URL."}
        assert inside.hits == [] and len(redirector.hits) == len(missing.hits) == 1
        app.config["OUTBOUND_ALLOW"] = [inside.address]
        found = discover(inside.url())
        assert found.status_code == 200 and "https://idp.example.edu/t" in found.get_data(as_text=True)


def test_secret_never_leaves_encrypted_storage(app, client, north, login, run_worker, caplog):
    """Pages, API answers, operation logs, audit entries, the export and the database file: no secret anywhere."""
    admin, operator, admin_user = north
    drive(app, run_worker, put_config(client, admin, OIDC).get_json()["rollout"])
    seen = []
    for headers in (admin, operator):
        for path in ("/api/v1/institutions/north/config", "/api/v1/hubs", "/api/v1/hubs/north-a",
                     "/api/v1/hubs/north-a/rendered?target=z2jh", "/api/v1/hubs/north-a/rendered?target=local",
                     "/api/v1/institutions", "/api/v1/openapi.json"):
            seen.append(client.get(path, headers=headers).get_data(as_text=True))
        ops = db.session.execute(db.select(Operation.id)).scalars().all()
        seen += [client.get(f"/api/v1/operations/{i}", headers=headers).get_data(as_text=True) for i in ops]
    login(client, admin_user)
    for path in ("/", "/institutions", "/institutions/north", "/institutions/north/config",
                 "/institutions/north/policy", "/hubs/north-a"):
        seen.append(client.get(path).get_data(as_text=True))
    seen += [json.dumps(e.detail) for e in db.session.execute(db.select(AuditEvent)).scalars()]
    export = CliRunner().invoke(main, ["export"], obj=ScriptInfo(create_app=lambda: app))
    assert export.exit_code == 0 and '"client_secret": {\n            "secret": "stored"' in export.output
    seen.append(export.output)
    seen.append(caplog.text)
    assert not [text[:200] for text in seen if SECRET in text]
    if app.config["DATABASE_URL"].startswith("sqlite"):
        database = app.config["DATABASE_URL"].removeprefix("sqlite:///")
        for path in (database, database + "-wal"):
            if os.path.exists(path):
                assert SECRET.encode() not in Path(path).read_bytes()
    else:
        rows = db.session.execute(db.text("SELECT auth::text, auth_secrets FROM institution")).all()
        assert rows and not any(SECRET in "".join(row) for row in rows)


def test_the_demo_login_needs_the_operators_policy(client, north, create_institution, create_user, api_headers):
    """JupyterHub's dummy login admits anyone: an admin cannot choose it unless the operator's policy allows it."""
    south = create_institution("south")
    admin = api_headers(create_user("institution_admin", institution=south))
    refused = put_config(client, admin, {"authenticator_class": "dummy", "allow_all": True}, slug="south")
    errors = refused.get_json()["errors"]["json"]
    assert refused.status_code == 422 and "operator's policy" in errors["auth.authenticator_class"][0], errors
    assert db.session.get(Institution, south.id).auth == {}
