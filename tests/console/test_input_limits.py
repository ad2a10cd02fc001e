"""Input that once answered 500, and bodies too large to read: each gets a 4xx with a field error, and nothing is
written (the audit log and the rows stay as they were)."""
import json
import re

import pytest

from console.extensions import db
from console.models import AuditEvent, Hub, Institution, Operation, OperationLog, Release, Rollout
from console.security import safe_next
from tenants.fields import Invalid, as_list, as_number, as_quantity
from tests.conftest import csrf_from

BIG = 99999999999999999999999  # beyond 64 bits


@pytest.fixture
def fleet(create_institution, create_cluster, create_user, api_headers, client, run_worker):
    north = create_institution("north")
    north.policy = {"open_login_allowed": True}  # the dummy login is among the forms probed
    create_cluster("fast", backend="fake")
    operator = create_user("operator")
    headers = api_headers(operator)
    created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "fast"},
                          headers=headers)
    assert created.status_code == 202
    run_worker()
    admin = create_user("institution_admin", institution=north)
    return {"operator": operator, "operator_headers": headers, "admin": admin, "admin_headers": api_headers(admin),
            "operation": created.get_json()["operation"]}


def snapshot():
    """What a refused request must leave unchanged."""
    db.session.expire_all()
    institution = db.session.execute(db.select(Institution).filter_by(slug="north")).scalar_one()
    return (db.session.query(AuditEvent).count(), db.session.query(Operation).count(),
            db.session.query(Hub).count(), db.session.query(Release).count(), db.session.query(Rollout).count(),
            json.dumps([institution.auth, institution.environment, institution.policy, institution.blackouts],
                       sort_keys=True, default=str))


def send(client, method, path, headers, raw: str | bytes):
    return client.open(path, method=method, headers={**headers, "Content-Type": "application/json"}, data=raw)


def field_errors(response) -> dict:
    """{dotted field: messages}: marshmallow nests a list's errors by index, services name the field dotted."""
    body = response.get_json()
    assert body is not None, response.get_data(as_text=True)[:300]
    flat, stack = {}, [("", body["errors"]["json"])]
    while stack:
        prefix, errors = stack.pop()
        for key, value in errors.items():
            if isinstance(value, dict):
                stack.append((f"{prefix}{key}.", value))
            else:
                flat[f"{prefix}{key}"] = value
    return flat


def names(errors: dict, field: str) -> bool:
    return any(key == field or key.endswith("." + field) for key in errors)


DEEP = "[" * 100_000 + "]" * 100_000
HUB = '{"slug": %s, "institution": "north", "cluster": "fast"}'


@pytest.mark.parametrize("method,path,raw,status,field", [
    # 100,000-deep JSON
    ("PUT", "/api/v1/institutions/north/config", '{"auth": %s, "environment": {}}' % DEEP, 422, "_schema"),
    ("POST", "/api/v1/hubs", DEEP, 422, "_schema"),
    # 40 levels: parsed, but deeper than any schema goes
    ("PUT", "/api/v1/institutions/north/blackouts", "[" * 40 + "]" * 40, 422, ".".join("0" * 32)),
    # lone surrogates, in a value and in a key
    ("POST", "/api/v1/hubs", HUB % '"\\ud800"', 422, "slug"),
    ("PUT", "/api/v1/institutions/north/blackouts", '[{"start": "2030-01-01T00:00", "end": "2030-01-02T00:00", '
                                                    '"reason": "a\\udfffb"}]', 422, "0.reason"),
    ("PUT", "/api/v1/institutions/north/config", '{"auth": {"\\ud800": 1}, "environment": {}}', 422, "auth"),
    # NUL characters, which PostgreSQL does not store
    ("POST", "/api/v1/hubs", HUB % '"a\\u0000b"', 422, "slug"),
    ("PUT", "/api/v1/institutions/north/config", '{"auth": {"a\\u0000": 1}, "environment": {}}', 422, "auth"),
    # 10**400, 1e400, NaN, and an int JSON itself refuses to read
    ("PUT", "/api/v1/institutions/north/policy", '{"max_users": 1%s}' % ("0" * 400), 422, "max_users"),
    ("PUT", "/api/v1/institutions/north/policy", '{"max_cpu": 1e400}', 422, "max_cpu"),
    ("PUT", "/api/v1/institutions/north/policy", '{"max_cpu": NaN}', 400, "_schema"),
    ("PUT", "/api/v1/institutions/north/policy", '{"max_users": %s}' % ("9" * 5000), 400, "_schema"),
    ("POST", "/api/v1/rollouts", '{"release": "r1", "target": {"channel": "stable"}, "waves": %d}' % BIG, 422,
     "waves"),
    # numbers that fit in 64 bits but not in the domain
    ("PUT", "/api/v1/institutions/north/policy", '{"max_users": 9223372036854775807}', 422, "max_users"),
    ("PUT", "/api/v1/institutions/north/policy", '{"max_memory": "99999999999999999999G"}', 422, "max_memory"),
    ("POST", "/api/v1/rollouts", '{"release": "r1", "target": {"channel": "stable"}, "gate_seconds": %d}' % 2**62,
     422, "gate_seconds"),
    # a string where a list belongs in a rollout target, and the reverse
    ("POST", "/api/v1/rollouts", '{"release": "r1", "target": {"hubs": "north-lab"}}', 422, "target"),
    ("POST", "/api/v1/rollouts", '{"release": "r1", "target": {"channel": ["stable"]}}', 422, "target"),
    ("POST", "/api/v1/rollouts", '{"release": "r1", "target": "north-lab"}', 422, "target"),
    ("POST", "/api/v1/rollouts", '{"release": "r1", "target": {"institution": {"slug": "north"}}}', 422, "target"),
    # a list where a string belongs, and blackouts that are not a list of windows
    ("POST", "/api/v1/hubs", HUB % '["north-two"]', 422, "slug"),
    ("PUT", "/api/v1/institutions/north/blackouts", '{"start": "2030-01-01T00:00"}', 422, "_schema"),
    ("PUT", "/api/v1/institutions/north/blackouts", '["2030-01-01T00:00"]', 422, "0._schema"),
    # not JSON at all
    ("POST", "/api/v1/hubs", '{"slug": ', 400, "_schema"),
    ("POST", "/api/v1/hubs", b'{"slug": "\xff"}', 400, "_schema"),
])
def test_json_out_of_bounds_gets_a_field_error_and_changes_nothing(client, fleet, create_release, method, path, raw,
                                                                     status, field):
    before = snapshot()
    response = send(client, method, path, fleet["operator_headers"], raw)
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert names(field_errors(response), field), field_errors(response)
    assert snapshot() == before


@pytest.fixture
def create_release(ctx):
    db.session.add(Release(name="r1", jupyterhub_version="5.3.0", channel="stable", state="ready", config={}))
    db.session.commit()


def test_a_10_mb_body_is_refused_with_413_before_it_is_read(client, fleet, login):
    before = snapshot()
    body = json.dumps({"slug": "x" * (10 * 1024 * 1024), "institution": "north", "cluster": "fast"})
    response = client.post("/api/v1/hubs", data=body, headers={**fleet["operator_headers"],
                                                                "Content-Type": "application/json"})
    assert response.status_code == 413
    assert "1024 KiB" in field_errors(response)["_schema"][0]
    # The pages say so in words.
    login(client, fleet["operator"])
    token = csrf_from(client.get("/institutions").get_data(as_text=True))
    page = client.post("/institutions", data={"csrf_token": token, "slug": "big", "name": "x" * (10 * 1024 * 1024)})
    assert page.status_code == 413
    assert "larger than the console accepts (1024 KiB)" in page.get_data(as_text=True)
    assert snapshot() == before


def test_ids_beyond_64_bits_are_not_found(client, fleet, login):
    headers = fleet["operator_headers"]
    for path in (f"/api/v1/operations/{BIG}", f"/api/v1/rollouts/{BIG}", f"/api/v1/operations/{2**63}"):
        response = client.get(path, headers=headers)
        assert response.status_code == 404, path
    assert client.post(f"/api/v1/rollouts/{BIG}/start", headers=headers).status_code == 404
    assert client.get(f"/api/v1/operations/{2**31}", headers=headers).status_code == 404  # beyond PostgreSQL's int
    assert client.post(f"/api/v1/rollouts/{2**40}/hubs/north-lab/retry", headers=headers).status_code == 404
    assert client.get(f"/api/v1/operations/{2**31 - 1}", headers=headers).status_code == 404  # fits: not there
    login(client, fleet["operator"])
    for path in (f"/operations/{BIG}", f"/rollouts/{BIG}", f"/operations/{'9' * 5000}", f"/rollouts/{2**40}"):
        assert client.get(path).status_code == 404, path


@pytest.mark.parametrize("target", ["/%0A/evil.example", "/\t/evil.example", "%2F%09%2Fevil.example",
                                    "//evil.example", "/\\evil.example", "https://evil.example/",
                                    "/%0d%0aSet-Cookie:x=1", "javascript:alert(1)", " /fleet", "/\u2028/evil"])
def test_login_never_redirects_off_site(client, fleet, target):
    token = csrf_from(client.get("/login").get_data(as_text=True))
    from urllib.parse import quote
    response = client.post(f"/login?next={quote(target, safe='%')}",
                           data={"email": fleet["operator"].email, "password": "correct horse battery",
                                 "csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/", response.headers["Location"]


def test_safe_next_keeps_paths_on_this_site(app):
    with app.test_request_context():
        assert safe_next("/hubs/north-lab?tab=log") == "/hubs/north-lab?tab=log"
        assert safe_next("/\t/evil.example") == "/"
        assert safe_next("/x\ny") == "/"
        assert safe_next("///evil.example") == "/"


def test_text_no_database_stores_is_refused_on_pages_and_in_urls(client, fleet, login):
    login(client, fleet["operator"])
    token = csrf_from(client.get("/institutions").get_data(as_text=True))
    before = snapshot()
    page = client.post("/institutions", data={"csrf_token": token, "slug": "south", "name": "So\x00uth"})
    assert page.status_code == 422
    assert "name: Use text without NUL characters." in page.get_data(as_text=True)
    assert client.get("/hubs/north%00lab").status_code == 422
    assert client.get("/api/v1/hubs/north%00lab", headers=fleet["operator_headers"]).status_code == 422
    assert client.get("/hubs/new?institution=%00").status_code == 422
    assert snapshot() == before


def test_pages_refuse_numbers_out_of_bounds_beside_the_field(client, fleet, login):
    login(client, fleet["operator"])
    token = csrf_from(client.get("/institutions/north/policy").get_data(as_text=True))
    before = snapshot()
    for field, value in (("max_users", "1" + "0" * 400), ("max_users", "9" * 5000), ("max_cpu", "1e400"),
                         ("max_memory", "9" * 100 + "G")):
        form = {"csrf_token": token, "max_cpu": "4", "max_memory": "16G", "allowed_registries": "quay.io/jupyter",
                "max_storage": "50Gi", "max_users": "1000", field: value}
        page = client.post("/institutions/north/policy", data=form)
        assert page.status_code == 422, (field, value)
        assert 'aria-invalid="true"' in page.get_data(as_text=True)
    assert snapshot() == before


def test_a_tampered_profile_key_is_dropped_not_a_crash(client, fleet, login):
    login(client, fleet["admin"])
    token = csrf_from(client.get("/institutions/north/config").get_data(as_text=True))
    for key in ("environment.profiles.x", "environment.profiles." + "9" * 5000 + ".display_name",
                "environment.profiles.\u00b2.display_name"):
        page = client.post("/institutions/north/config", data={"csrf_token": token, "action": "preview",
                                                               "auth.authenticator_class": "dummy", key: "x"})
        assert page.status_code in (200, 422), (key, page.get_data(as_text=True)[-1500:])


def test_user_lists_are_bounded_and_keep_the_first_of_each_name():
    """(Their time over 100,000 names: ``python -m tests.perf.bench_limits``.)"""
    with pytest.raises(Invalid, match="at most 10000 names"):
        as_list("\n".join(f"user{i}" for i in range(100_000)))
    assert as_list("\n".join(f"user{i}" for i in range(10_000)) + "\nuser1") == [f"user{i}" for i in range(10_000)]
    assert as_list("b, a\nb,,c") == ["b", "a", "c"]
    with pytest.raises(Invalid):
        as_number(10**400)
    with pytest.raises(Invalid):
        as_number("1" * 400, integer=True)
    with pytest.raises(Invalid):
        as_quantity("9" * 1000 + "Ti")


def test_a_pasted_roll_of_users_is_answered_at_once(client, fleet, login):
    """20,000 allowed users typed into the config form: a field error and nothing changed (its time:
    ``python -m tests.perf.bench_limits``)."""
    login(client, fleet["admin"])
    token = csrf_from(client.get("/institutions/north/config").get_data(as_text=True))
    before = snapshot()
    page = client.post("/institutions/north/config", data={
        "csrf_token": token, "action": "preview", "auth.authenticator_class": "dummy",
        "auth.allowed_users": "\n".join(f"u{i}" for i in range(20_000))})
    assert page.status_code == 422
    assert "at most 10000 names" in page.get_data(as_text=True)
    assert snapshot()[1:] == before[1:]


# -- every page form, with hostile values in every field ------------------------------------------------------------

HOSTILE = ["a\x00b", "9" * 5000, "1e400", "-" + "9" * 30, "x" * 5000, "/\t/evil.example", "\u202e\ufeff<b>",
           "", "[]", '{"hubs": "x"}']
INPUT_NAME = re.compile(r'<(?:input|select|textarea)[^>]*\bname="([^"]+)"')


def _fill(rule) -> str:
    values = {"slug": "north" if rule.rule.startswith("/institutions/") else "north-lab", "name": "r1"
              if rule.rule.startswith("/releases/") else "fast", "token": "not-a-token"}
    path = rule.rule
    for name in rule.arguments:
        converter = rule._converters[name]
        value = converter.regex.split("|")[0].lstrip("(?:").rstrip(")") if name == "action" else values.get(name, 1)  # ids
        path = re.sub(rf"<[^>]*:?{name}>", str(value), path)
    return path


def test_every_page_form_answers_hostile_values_without_a_server_error(app, client, fleet, login, create_release):
    """Every POST page route gets every field name any page offers, all set to one hostile value at a time (NUL,
    5,000 digits, 1e400, 20,000 characters, control characters...); every GET page gets them as its query.  As an
    operator and as an institution admin: never a 5xx."""
    login(client, fleet["operator"])
    names = {"slug", "name", "institution", "cluster", "confirm", "url", "release", "target_kind", "target_value",
             "blackouts", "kubeconfig", "provider", "action", "next", "discovery_url"}
    for path in ("/", "/hubs/new", "/hubs/north-lab", "/hubs/north-lab/delete", "/institutions",
                 "/institutions/north/config", "/institutions/north/policy", "/clusters/new", "/clusters/register",
                 "/clusters/fast/destroy", "/releases", "/alerts", "/account/password", "/account/tokens",
                 "/account/sessions"):
        names |= set(INPUT_NAME.findall(client.get(path).get_data(as_text=True)))
    for kind in ("generic-oauth", "cilogon", "lti13", "github"):
        client_page = client.get("/institutions/north/config")
        token = csrf_from(client_page.get_data(as_text=True))
        page = client.post("/institutions/north/config", data={"csrf_token": token, "action": "switch",
                                                               "auth.authenticator_class": kind})
        names |= set(INPUT_NAME.findall(page.get_data(as_text=True)))
    names.discard("csrf_token")
    rules = [rule for rule in app.url_map.iter_rules() if not rule.rule.startswith("/api/")
             and rule.endpoint not in ("auth.logout", "static", "account.end_session", "account.end_other_sessions")]
    checked = 0
    for user in (fleet["operator"], fleet["admin"]):
        login(client, user)
        token = csrf_from(client.get("/").get_data(as_text=True))
        for rule in rules:
            path = _fill(rule)
            for value in HOSTILE:
                if "POST" in rule.methods:
                    response = client.post(path, data={"csrf_token": token, **{n: value for n in names}})
                    assert response.status_code < 500, (user.role, path, value[:20], response.status_code)
                    checked += 1
                if "GET" in rule.methods and rule.endpoint != "monitoring.metrics":
                    response = client.get(path, query_string={n: value for n in ("institution", "provider",
                                                                                 "target", "next", "after")})
                    assert response.status_code < 500, (user.role, "GET", path, value[:20], response.status_code)
            if client.get("/").status_code != 200:  # a form ended this session (a password change): log in again
                login(client, user)
                token = csrf_from(client.get("/").get_data(as_text=True))
    assert checked > 200


# -- what an institution admin reads of errors and logs ---------------------------------------------------------------

CRASH = ("JupyterHub is not running: ValueError: cannot read /srv/hubfleet/clusters/fast/hubs/north-lab/"
         "settings.json; last lines of its log:\n"
         "Traceback (most recent call last):\n"
         '  File "/opt/hubfleet/.venv/lib/python3.11/site-packages/jupyterhub/app.py", line 3456, in launch\n'
         "    await self.start()\n"
         "ValueError: cannot read /srv/hubfleet/clusters/fast/hubs/north-lab/settings.json (see "
         "https://jupyterhub.readthedocs.io/en/stable/reference/config.html)")


def test_institution_admins_read_no_server_path_traceback_or_operator_email(client, fleet, login):
    """What the local backend writes when a hub dies (its log's end) and what a failed step records reach the
    hub's institution admin without the server's paths, the traceback or the operator's email; the operator
    reads all of it."""
    hub = db.session.execute(db.select(Hub).filter_by(slug="north-lab")).unique().scalar_one()
    hub.status_message = CRASH
    op = db.session.get(Operation, fleet["operation"])
    op.state, op.outcome = "failed", "failed"
    op.error = f"restart asked by {fleet['operator'].email} failed: [Errno 13] Permission denied: '/srv/hubfleet/key'"
    db.session.add(OperationLog(operation_id=op.id, line=CRASH))
    hub.state = "failed"
    db.session.commit()
    secrets = ("/srv/hubfleet", "/opt/hubfleet", "Traceback", "site-packages", fleet["operator"].email)

    admin_reads = [client.get("/api/v1/hubs/north-lab", headers=fleet["admin_headers"]).get_data(as_text=True),
                   client.get(f"/api/v1/operations/{op.id}", headers=fleet["admin_headers"]).get_data(as_text=True)]
    login(client, fleet["admin"])
    admin_reads += [client.get(path).get_data(as_text=True) for path in
                    ("/", "/hubs/north-lab", f"/operations/{op.id}", "/institutions/north")]
    for text in admin_reads:
        for secret in secrets:
            assert secret not in text
    api = client.get(f"/api/v1/operations/{op.id}", headers=fleet["admin_headers"]).get_json()
    assert api["error"] == "restart asked by an operator failed: [Errno 13] Permission denied: '…/key'"
    assert "ValueError: cannot read …/settings.json (see https://jupyterhub.readthedocs.io/en/stable/reference/" \
           "config.html)" in api["log"][-1]
    status = client.get("/api/v1/hubs/north-lab", headers=fleet["admin_headers"]).get_json()["status"]["reason"]
    assert status and "/srv/hubfleet" not in status and fleet["operator"].email not in status

    operator_reads = client.get(f"/api/v1/operations/{op.id}", headers=fleet["operator_headers"]).get_json()
    assert operator_reads["error"] == op.error and operator_reads["log"][-1] == CRASH


# -- blackout times with a UTC offset ---------------------------------------------------------------------------------

def test_blackout_times_with_an_offset_are_converted_to_utc(client, fleet, login):
    from datetime import datetime

    from console.services.releases import in_blackout
    windows = [{"start": "2030-01-01T10:00:00+05:30", "end": "2030-01-01T12:00:00+05:30", "reason": "exams"},
               {"start": "2030-01-01T22:00-08:00", "end": "2030-01-02T01:30-08:00", "reason": "west coast"},
               {"start": "2030-03-01T09:00", "end": "2030-03-01T10:00Z"}]
    response = client.put("/api/v1/institutions/north/blackouts", json=windows, headers=fleet["admin_headers"])
    assert response.status_code == 200, response.get_json()
    stored = [(w["start"], w["end"]) for w in response.get_json()]
    assert stored == [("2030-01-01T04:30:00", "2030-01-01T06:30:00"), ("2030-01-02T06:00:00", "2030-01-02T09:30:00"),
                      ("2030-03-01T09:00:00", "2030-03-01T10:00:00")]
    institution = db.session.execute(db.select(Institution).filter_by(slug="north")).scalar_one()
    db.session.refresh(institution)
    assert in_blackout(institution, datetime(2030, 1, 1, 5, 0))["reason"] == "exams"  # 10:30 in India
    assert in_blackout(institution, datetime(2030, 1, 1, 10, 0)) is None  # 10:00 UTC is after it
    assert in_blackout(institution, datetime(2030, 1, 2, 7, 0))["reason"] == "west coast"  # 23:00 in California
    # The page's form converts the same way.
    login(client, fleet["admin"])
    token = csrf_from(client.get("/institutions/north").get_data(as_text=True))
    client.post("/institutions/north/blackouts", data={"csrf_token": token,
                                                       "blackouts": "2030-06-01T08:00-08:00 | 2030-06-01T09:00-08:00 "
                                                                    "| maintenance"})
    db.session.refresh(institution)
    assert institution.blackouts == [{"start": "2030-06-01T16:00:00", "end": "2030-06-01T17:00:00",
                                      "reason": "maintenance"}]


def test_blackouts_that_are_not_windows_get_field_errors(client, fleet):
    before = snapshot()
    for body, field in (([{"start": "2030-01-01T10:00+05:30", "end": "2030-01-01T09:00+05:30"}], "end"),
                        ([{"start": "tomorrow", "end": "2030-01-01"}], "blackouts.0"),
                        ([{"start": "2030-01-01", "end": "2030-01-02"}] * 101, "blackouts")):
        response = client.put("/api/v1/institutions/north/blackouts", json=body, headers=fleet["admin_headers"])
        assert response.status_code == 422 and names(field_errors(response), field), response.get_json()
    assert snapshot() == before


def test_the_largest_bodies_allowed_are_refused_on_their_size_before_any_item_is_read(client, fleet):
    """Bodies just under the 1 MiB cap, built to be expensive (10,000 profiles, 10,001 allowed users, 10,000
    blackout windows), every item of them wrong: the only error is the count, so no item was looked at.  Their time
    is measured by ``python -m tests.perf.bench_limits``."""
    headers = fleet["admin_headers"]
    image = "quay.io/jupyter/base-notebook:2025-01-06"
    cases = [
        ("/api/v1/institutions/north/config",
         {"auth": {"authenticator_class": "dummy", "allow_all": True},
          "environment": {"image": image,
                          "profiles": [{"display_name": f"p{i}", "cpu_limit": "lots"} for i in range(10_000)]}},
         {"environment.profiles": ["At most 20 profiles."]}),
        ("/api/v1/institutions/north/config",
         {"auth": {"authenticator_class": "github", "client_id": "x", "client_secret": "y" * 20,
                   "allowed_users": list(range(10_001))}, "environment": {"image": image}},
         {"auth.allowed_users": ["Send at most 10000 items."]}),
        ("/api/v1/institutions/north/blackouts", [{"start": "2030-01-02", "end": "2030-01-01"}] * 10_000,
         {"blackouts": ["At most 100 windows."]}),
    ]
    before = snapshot()
    for path, body, errors in cases:
        data = json.dumps(body)
        assert len(data) < 1024 * 1024
        response = client.put(path, data=data, headers={**headers, "Content-Type": "application/json"})
        assert response.status_code == 422
        assert field_errors(response) == errors, path
    assert snapshot() == before
