"""The fleet as code: export, an edited document planned and applied (CLI, API), invalid documents, a stale plan;
and drift on the fake backend (reported, reconciled)."""
import copy
import json

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo
from werkzeug.exceptions import Conflict

from clusters.environments import installed_jupyterhub
from console.cli import main
from console.extensions import db
from console.models import AuditEvent, Hub, Institution, Release, Rollout
from console.services import FieldErrors, drift, fleet_code, monitoring
from console.services import hubs as hub_service
from console.services import releases as release_service
from tests.conftest import csrf_from


@pytest.fixture
def fleet(create_institution, create_cluster, create_user):
    """Institutions north (three hubs) and south (one), a fake cluster, a ready release; returns the operator."""
    operator = create_user("operator")
    north = create_institution("north", "North College")
    create_institution("south", "South College")
    north.policy = {"max_cpu": 4}
    db.session.commit()
    create_cluster("fast", backend="fake")
    release_service.create_release(operator, {"name": "r1", "jupyterhub_version": installed_jupyterhub()})
    for slug, institution in (("north-lab", "north"), ("north-two", "north"), ("south-lab", "south")):
        hub_service.create_hub(operator, slug, institution, "fast")
    return operator


def cli(app, *args, input=None):
    result = CliRunner().invoke(main, list(args), obj=ScriptInfo(create_app=lambda: app), input=input)
    db.session.expire_all()  # the command ran in its own session
    return result


def by_key(items, key, value):
    return next(item for item in items if item[key] == value)


def edited(document):
    """The export with one edit of each kind: a new institution, a policy, a blackout, a release, a hub's channel,
    and a hub left out (deleted)."""
    doc = copy.deepcopy(document)
    east = {**copy.deepcopy(by_key(doc["institutions"], "slug", "south")), "slug": "east", "name": "East College"}
    doc["institutions"] = sorted([*doc["institutions"], east], key=lambda i: i["slug"])
    north = by_key(doc["institutions"], "slug", "north")
    north["policy"]["max_cpu"] = 3
    north["blackouts"] = [{"start": "2031-01-01T00:00:00", "end": "2031-01-02T00:00:00", "reason": "exams"}]
    doc["releases"].append({"name": "r2", "jupyterhub_version": installed_jupyterhub(), "channel": "beta",
                            "chart_version": "", "hub_image": "", "config": {}, "notes": "next", "retracted": False})
    by_key(doc["hubs"], "slug", "north-two")["channel"] = "beta"
    doc["hubs"] = [hub for hub in doc["hubs"] if hub["slug"] != "south-lab"]
    return doc


def test_an_edited_export_plans_exactly_its_edits_applies_them_and_exports_back(app, fleet, tmp_path):
    exported = cli(app, "export")
    assert exported.exit_code == 0, exported.output
    document = json.loads(exported.output)
    assert document["version"] == 1 and [i["slug"] for i in document["institutions"]] == ["north", "south"]
    assert [h["slug"] for h in document["hubs"]] == ["north-lab", "north-two", "south-lab"]
    assert fleet_code.plan(fleet, document).empty  # the export itself changes nothing

    doc = edited(document)
    planned = fleet_code.plan(fleet, doc)
    assert [(c.kind, c.name, c.action) for c in planned.changes] == [
        ("institution", "east", "create"), ("institution", "north", "change"), ("release", "r2", "create"),
        ("hub", "north-two", "change"), ("hub", "south-lab", "delete")]
    changes = {c.name: c.fields for c in planned.changes}
    assert set(changes["north"]) == {"policy.max_cpu", "blackouts"}
    assert changes["north"]["policy.max_cpu"] == {"before": 4, "after": 3}
    assert changes["north-two"] == {"channel": {"before": "stable", "after": "beta"}}
    assert set(changes["east"]) == {"name"}

    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(doc))
    result = cli(app, "apply", str(path), "--user", fleet.email, "--yes")
    assert result.exit_code == 0, result.output
    assert "Create (2):" in result.output and "Change (2):" in result.output and "Delete (1):" in result.output
    assert "policy.max_cpu: 4 -> 3" in result.output
    assert "Plan: 2 to create, 2 to change, 1 to delete." in result.output

    assert fleet_code.plan(fleet, doc).empty
    assert json.loads(cli(app, "export").output) == doc
    assert db.session.execute(db.select(Hub).filter_by(slug="south-lab")).unique().scalar_one().desired == "deleted"
    applied = db.session.execute(db.select(AuditEvent).where(AuditEvent.actor == f"apply:{fleet.email}")).scalars()
    assert sorted((e.target, e.detail["change"]) for e in applied) == [
        ("hub north-two", "change"), ("hub south-lab", "delete"), ("institution east", "create"),
        ("institution north", "change"), ("release r2", "create")]
    again = cli(app, "apply", str(path), "--user", fleet.email)
    assert again.exit_code == 0 and "Nothing to change" in again.output


def test_secrets_are_references_read_from_the_environment_and_never_written(app, fleet, monkeypatch):
    document = fleet_code.export_document()
    south = by_key(document["institutions"], "slug", "south")
    south["config"]["auth"] = {"authenticator_class": "github", "client_id": "south-hub",
                               "client_secret": {"env": "SOUTH_GITHUB_SECRET"}, "allowed_users": ["ada"]}
    with pytest.raises(FieldErrors) as refused:
        fleet_code.plan(fleet, document)
    assert refused.value.errors == {"institutions[1].config.auth.client_secret":
                                    "The environment variable SOUTH_GITHUB_SECRET is not set where this is applied."}
    monkeypatch.setenv("SOUTH_GITHUB_SECRET", "s3cret-value-from-env")
    planned = fleet_code.plan(fleet, document)
    assert planned.changes[0].fields["config.auth.client_secret"] == {"before": None, "after": "(changed)"}
    fleet_code.apply(fleet, document, planned.digest)
    exported = fleet_code.dumps(fleet_code.export_document())
    assert '"secret": "stored"' in exported and "s3cret-value-from-env" not in exported
    assert "s3cret-value-from-env" not in json.dumps([e.detail for e in db.session.execute(
        db.select(AuditEvent)).scalars()])
    # the change rolls out to south-lab; meanwhile the console wants it, so planning it again changes nothing
    by_key(document["institutions"], "slug", "south")["config"]["auth"]["client_secret"] = {"secret": "stored"}
    assert fleet_code.plan(fleet, document).empty


def test_invalid_documents_are_refused_with_field_paths_and_change_nothing(app, fleet, client, api_headers):
    document = fleet_code.export_document()
    before = fleet_code.fleet_digest()
    north = 0

    def broken(change):
        doc = copy.deepcopy(document)
        change(doc)
        return doc

    cases = {
        "wrong types": (lambda d: d["hubs"][0].update(pinned="yes", channel=3),
                        {"hubs[0].pinned": "Use true or false.", "hubs[0].channel": "Choose stable or beta."}),
        "unknown institution": (lambda d: d["hubs"].append({"slug": "west-lab", "institution": "west",
                                                            "cluster": "fast"}),
                                {"hubs[3].institution": "There is no institution 'west'."}),
        "a policy the config violates": (lambda d: d["institutions"][north]["policy"].update(max_cpu=1),
                                         {"institutions[0].config.environment.cpu_limit": None}),
        "an inline secret": (lambda d: d["institutions"][north]["config"].update(auth={
            "authenticator_class": "github", "client_id": "x", "client_secret": "inline", "allowed_users": ["ada"]}),
            {"institutions[0].config.auth.client_secret": None}),
        "duplicate slugs": (lambda d: d["hubs"].append(dict(d["hubs"][1])),
                            {"hubs[3].slug": "'north-two' appears twice in the document."}),
        "a left-out institution": (lambda d: d["institutions"].pop(1),
                                   {"institutions.south": None}),
        "a wrong version and an unknown field": (lambda d: d.update(version=2, clusters=[]),
                                                 {"version": None, "clusters": None}),
    }
    for name, (change, expected) in cases.items():
        with pytest.raises(FieldErrors) as refused:
            fleet_code.plan(fleet, broken(change))
        assert set(refused.value.errors) == set(expected), name
        for path, message in expected.items():
            assert message is None or refused.value.errors[path] == message, (name, refused.value.errors)
        with pytest.raises(FieldErrors):
            fleet_code.apply(fleet, broken(change), before)
    assert "(the document's policy)" in _errors(fleet, broken(cases["a policy the config violates"][0]))[
        "institutions[0].config.environment.cpu_limit"]

    answer = client.post("/api/v1/fleet/plan", json=broken(cases["wrong types"][0]), headers=api_headers(fleet))
    assert answer.status_code == 422
    assert answer.get_json()["errors"]["json"]["hubs[0].pinned"] == ["Use true or false."]
    assert fleet_code.fleet_digest() == before


def _errors(user, document):
    try:
        fleet_code.plan(user, document)
    except FieldErrors as exc:
        return exc.errors
    raise AssertionError("the document was accepted")


def test_a_stale_plan_is_refused_and_the_api_is_for_operators(app, fleet, client, api_headers, create_user):
    operator = api_headers(fleet)
    document = client.get("/api/v1/fleet", headers=operator).get_json()
    doc = edited(document)
    planned = client.post("/api/v1/fleet/plan", json=doc, headers=operator).get_json()
    assert planned["summary"] == {"create": 2, "change": 2, "delete": 1}
    # someone changes the fleet in between: the plan no longer says what applying would do
    hub_service.set_release_policy(fleet, hub_service.list_hubs(fleet)[0], canary=True)
    stale = client.post("/api/v1/fleet/apply", json={"document": doc, "digest": planned["digest"]}, headers=operator)
    assert stale.status_code == 409 and "plan again" in stale.get_json()["message"]
    with pytest.raises(Conflict):
        fleet_code.apply(fleet, doc, planned["digest"])
    assert db.session.execute(db.select(Institution).filter_by(slug="east")).scalar_one_or_none() is None

    north = db.session.execute(db.select(Institution).filter_by(slug="north")).scalar_one()
    admin = api_headers(create_user("institution_admin", institution=north))
    assert client.get("/api/v1/fleet", headers=admin).status_code == 403
    assert client.post("/api/v1/fleet/plan", json=doc, headers=admin).status_code == 403
    assert client.post("/api/v1/fleet/apply", json={"document": doc, "digest": "x"}, headers=admin).status_code == 403

    fresh = client.post("/api/v1/fleet/plan", json=doc, headers=operator).get_json()
    done = client.post("/api/v1/fleet/apply", json={"document": doc, "digest": fresh["digest"]}, headers=operator)
    assert done.status_code == 200, done.get_json()
    # the document says what the fleet is: north-lab is no canary there, so it is one no more
    assert [c["name"] for c in done.get_json()["applied"]] == ["east", "north", "r2", "north-lab", "north-two",
                                                               "south-lab"]
    assert client.post("/api/v1/fleet/plan", json=doc, headers=operator).get_json()["changes"] == []


def test_the_cli_asks_before_applying_and_a_no_changes_nothing(app, fleet, tmp_path):
    doc = edited(fleet_code.export_document())
    before = fleet_code.fleet_digest()
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(doc))
    declined = cli(app, "apply", str(path), "--user", fleet.email, input="n\n")
    assert declined.exit_code == 1 and "Apply these changes? [y/N]" in declined.output
    assert "Nothing was changed." in declined.output and fleet_code.fleet_digest() == before
    doc["hubs"][0]["cluster"] = "elsewhere"
    path.write_text(json.dumps(doc))
    invalid = cli(app, "apply", str(path), "--user", fleet.email, "--yes")
    assert invalid.exit_code == 2
    assert "error: hubs[0].cluster: A hub does not move (it runs on fast)" in invalid.output
    assert fleet_code.fleet_digest() == before
    assert db.session.execute(db.select(Release).filter_by(name="r2")).scalar_one_or_none() is None


def test_drift_is_reported_and_reconciled(app, fleet, client, create_user, login, run_worker):
    run_worker()
    hub = db.session.execute(db.select(Hub).filter_by(slug="north-lab")).unique().scalar_one()
    assert drift.of(hub).state == drift.IN_SYNC  # the worker kept the digest the hub reported when it came up
    # the hub's running configuration changes behind the console's back (the fake hub keeps it in its state)
    hub.backend_state = {**hub.backend_state, "config": "edited by hand", "config_digest": "0" * 64}
    db.session.commit()
    monitoring.probe_fleet([hub])  # the monitor's sweep reads it
    db.session.commit()
    found = drift.of(hub)
    assert (found.state, found.running) == (drift.DRIFTED, "0" * 64)

    admin = create_user("institution_admin", institution=hub.institution)
    south_admin = create_user("institution_admin",
                              institution=db.session.execute(db.select(Institution).filter_by(slug="south")).scalar_one())
    login(client, admin)
    page = client.get("/hubs/north-lab").get_data(as_text=True)
    assert 'data-status="drifted"' in page and "Reconcile</button>" not in page  # operators reconcile
    token = csrf_from(page)
    assert client.post("/hubs/north-lab/reconcile", data={"csrf_token": token}).status_code == 403
    login(client, south_admin)
    token = csrf_from(client.get("/fleet/drift").get_data(as_text=True))
    assert client.post("/hubs/north-lab/reconcile", data={"csrf_token": token}).status_code == 404

    login(client, fleet)
    report = client.get("/fleet/drift").get_data(as_text=True)
    assert 'data-hub="north-lab" data-drift="drifted"' in report and "1 drifted" in report
    reconciled = client.post("/hubs/north-lab/reconcile", data={"csrf_token": csrf_from(report)})
    assert reconciled.status_code == 302
    run_worker()
    db.session.refresh(hub)
    assert drift.of(hub).state == drift.IN_SYNC
    assert 'data-hub="north-lab" data-drift="in-sync"' in client.get("/fleet/drift").get_data(as_text=True)


def test_a_pinned_hubs_new_release_is_taken_there_by_a_rollout(app, fleet):
    release_service.create_release(fleet, {"name": "r2", "jupyterhub_version": installed_jupyterhub()})
    document = fleet_code.export_document()
    hub = by_key(document["hubs"], "slug", "north-lab")
    hub.update(pinned=True, release="nope")
    assert _errors(fleet, document) == {"hubs[0].release": "There is no release 'nope' ready now."}
    hub["release"] = "r2"
    planned = fleet_code.plan(fleet, document)
    assert [(c.name, c.fields) for c in planned.changes] == [
        ("north-lab", {"pinned": {"before": False, "after": True}, "release": {"before": "r1", "after": "r2"}})]
    fleet_code.apply(fleet, document, planned.digest)
    rollout = db.session.execute(db.select(Rollout)).unique().scalar_one()
    assert (rollout.release.name, rollout.target, rollout.state) == ("r2", {"hubs": ["north-lab"]}, "running")
    # the hub runs r1 until the rollout takes it to r2, which is what the console wants from now on
    assert fleet_code.export_document() == document and fleet_code.plan(fleet, document).empty
