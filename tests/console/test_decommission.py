"""Decommission and archives at the service and route level, with the fake backend (whose archives are real files).

Who may ask, approve and refuse; the typed confirmation; refusal during a rollout or with an operation in flight;
idempotent approval; an archive that fails leaves the hub running; a worker that dies half-way is followed by one
that finishes with one archive; retention purges; restore into a new hub gives its users their files back.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import timedelta

import pytest

from clusters.testing import FakeBackend
from console.extensions import db
from console.models import (Archive, AuditEvent, DecommissionRequest, Hub, Operation, Rollout, RolloutHub, utcnow)
from console.services import decommission, monitoring, operations
from console.worker import Worker
from tests.conftest import csrf_from


@pytest.fixture
def fleet(tmp_path, client, create_institution, create_cluster, create_user, api_headers, run_worker):
    """Institution north with hub north-lab (running on a fake cluster whose archives go to tmp_path), whose users
    ada and bob wrote files; north's admin, an operator and south's admin, with API headers each."""
    north, south = create_institution("north"), create_institution("south")
    create_cluster("fast", backend="fake", archives=str(tmp_path / "archives"))
    operator = create_user("operator", email="ops@example.org")
    people = {"operator": operator, "admin": create_user("institution_admin", institution=north),
              "stranger": create_user("institution_admin", institution=south)}
    headers = {role: api_headers(user) for role, user in people.items()}
    created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "fast"},
                          headers=headers["operator"])
    assert created.status_code == 202
    run_worker()
    FakeBackend.write_home("north-lab", "ada", "notes.txt", "ada's notes")
    FakeBackend.write_home("north-lab", "bob", "thesis.md", "bob's thesis")
    return {"people": people, "headers": headers, "archives": tmp_path / "archives"}


def hub_row(slug="north-lab") -> Hub:
    return db.session.execute(db.select(Hub).filter_by(slug=slug).order_by(Hub.id.desc()).limit(1)
                              ).unique().scalar_one()


def decide(client, headers, **body):
    return client.post("/api/v1/hubs/north-lab/decommission", json=body, headers=headers)


def test_an_institution_admin_asks_an_operator_approves_and_the_archive_holds_both_homes(client, fleet, run_worker):
    headers = fleet["headers"]
    assert decide(client, headers["admin"], action="request").status_code == 422  # a reason is required
    assert decide(client, headers["admin"], action="request", reason="  ").status_code == 422
    assert decide(client, headers["stranger"], action="request", reason="x").status_code == 404
    asked = decide(client, headers["admin"], action="request", reason="the course ended")
    assert asked.status_code == 200 and asked.get_json()["state"] == "pending"
    assert decide(client, headers["admin"], action="request", reason="again").get_json()["id"] == asked.get_json()["id"]
    # the admin may not approve, nor see archives; a wrong slug changes nothing
    assert decide(client, headers["admin"], action="approve", confirm="north-lab").status_code == 403
    wrong = decide(client, headers["operator"], action="approve", confirm="north")
    assert wrong.status_code == 422 and "confirm" in wrong.get_json()["errors"]["json"]
    assert db.session.execute(db.select(Operation).filter_by(kind="decommission")).first() is None
    assert db.session.get(DecommissionRequest, asked.get_json()["id"]).state == "pending"

    approved = decide(client, headers["operator"], action="approve", confirm="north-lab").get_json()
    assert approved["state"] == "running" and approved["operation"]
    again = decide(client, headers["operator"], action="approve", confirm="north-lab").get_json()
    assert again["operation"] == approved["operation"]  # idempotent: one operation
    run_worker()

    hub = hub_row()
    assert hub.state == "deleted" and FakeBackend.homes("north-lab") == {}
    done = db.session.get(DecommissionRequest, approved["id"])
    assert done.state == "done" and done.archive is not None
    listed = client.get("/api/v1/archives", headers=headers["operator"]).get_json()
    assert [a["hub"] for a in listed] == ["north-lab"]
    entry = listed[0]
    assert {u["name"]: u["files"] for u in entry["users"]} == {"ada": 1, "bob": 1}
    path = fleet["archives"] / "north-lab-hub1-op{}.tar.gz".format(approved["operation"])
    assert entry["location"] == str(path) and entry["size"] == path.stat().st_size
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        assert {"manifest.json", "jupyterhub.sqlite", "homes/ada/notes.txt", "homes/bob/thesis.md"} <= names
        assert tar.extractfile("homes/bob/thesis.md").read() == b"bob's thesis"
        manifest = json.loads(tar.extractfile("manifest.json").read())
        database = tar.extractfile("jupyterhub.sqlite").read()
    assert manifest["database"]["sha256"] == hashlib.sha256(database).hexdigest() == entry["database"]["sha256"]
    retain = db.session.get(Archive, entry["id"]).retain_until - utcnow()
    assert timedelta(days=89) < retain <= timedelta(days=90)
    assert client.get("/api/v1/archives", headers=headers["admin"]).status_code == 403
    actions = set(db.session.execute(db.select(AuditEvent.action)).scalars())
    assert {"hub.decommission_request", "hub.decommission", "archive.create"} <= actions


def test_on_the_pages_an_admin_asks_an_operator_approves_and_downloads_the_archive(client, fleet, login, run_worker,
                                                                                 own_g_per_request):
    login(client, fleet["people"]["admin"])
    page = client.get("/hubs/north-lab").get_data(as_text=True)
    assert 'id="decommission-request"' in page and 'id="decommission-approve"' not in page
    token = csrf_from(page)
    empty = client.post("/hubs/north-lab/decommission", data={"csrf_token": token, "reason": ""})
    assert empty.status_code == 422 and 'id="reason-error"' in empty.get_data(as_text=True)
    assert client.post("/hubs/north-lab/decommission", data={"csrf_token": token, "reason": "done"}).status_code == 302
    assert client.post("/hubs/north-lab/decommission/approve",
                       data={"csrf_token": token, "confirm": "north-lab"}).status_code == 403
    operator = client.application.test_client()
    login(operator, fleet["people"]["operator"])
    page = operator.get("/hubs/north-lab").get_data(as_text=True)
    assert 'id="decommission-approve"' in page and 'id="decommission-refuse"' in page and "“done”" in page
    token = csrf_from(page)
    wrong = operator.post("/hubs/north-lab/decommission/approve", data={"csrf_token": token, "confirm": "x"})
    assert wrong.status_code == 422 and 'id="confirm-error"' in wrong.get_data(as_text=True)
    assert operations.pending(hub_row()) is None
    approved = operator.post("/hubs/north-lab/decommission/approve", data={"csrf_token": token, "confirm": "north-lab"})
    assert approved.status_code == 302 and "/operations/" in approved.headers["Location"]
    run_worker()

    archive = db.session.execute(db.select(Archive)).unique().scalar_one()
    assert client.get(f"/archives/download?archive={archive.id}").status_code == 403
    assert client.get("/archives").status_code == 403
    listing = operator.get("/archives").get_data(as_text=True)
    assert "north-lab" in listing and archive.sha256[:12] in listing
    with operator.get(f"/archives/download?archive={archive.id}") as got:  # streamed: closed when read
        assert got.status_code == 200 and got.headers["X-Archive-SHA256"] == archive.sha256
        data = got.data
    assert hashlib.sha256(data).hexdigest() == archive.sha256
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "homes/ada/notes.txt" in tar.getnames()
    assert operator.get("/archives/download?archive=999").status_code == 422
    assert db.session.execute(db.select(AuditEvent).filter_by(action="archive.download")).first() is not None


def test_refusal_and_approval_refused_during_a_rollout_or_an_operation_change_nothing(client, fleet):
    headers, hub = fleet["headers"], hub_row()
    assert decide(client, headers["operator"], action="refuse").status_code == 409  # nothing pending
    decide(client, headers["admin"], action="request", reason="not needed")
    assert decide(client, headers["admin"], action="refuse").status_code == 403
    refused = decide(client, headers["operator"], action="refuse", note="the term is not over").get_json()
    assert refused["state"] == "refused" and refused["note"] == "the term is not over"
    assert hub_row().state == "running" and operations.pending(hub_row()) is None

    rollout = Rollout(kind="release", target={"hubs": ["north-lab"]}, state="paused", created_by="ops@example.org")
    db.session.add(rollout)
    db.session.flush()
    db.session.add(RolloutHub(rollout_id=rollout.id, hub_id=hub.id, wave=0))
    db.session.commit()
    in_rollout = decide(client, headers["operator"], action="approve", confirm="north-lab", reason="r")
    assert in_rollout.status_code == 409 and "rollout" in in_rollout.get_json()["message"]
    rollout.state = "aborted"
    operations.enqueue(hub, "restart", "ops@example.org")
    db.session.commit()
    busy = decide(client, headers["operator"], action="approve", confirm="north-lab", reason="r")
    assert busy.status_code == 409 and "restart" in busy.get_json()["message"]
    assert db.session.execute(db.select(DecommissionRequest.state)).scalars().all() == ["refused"]
    assert db.session.execute(db.select(Operation).filter_by(kind="decommission")).first() is None


def test_an_archive_that_fails_removes_nothing(client, fleet, run_worker):
    FakeBackend.fail_archive("north-lab")
    approved = decide(client, fleet["headers"]["operator"], action="approve", confirm="north-lab",
                      reason="r").get_json()
    run_worker()
    op = db.session.get(Operation, approved["operation"])
    assert op.state == "failed" and "nothing was removed" in op.error
    hub = hub_row()
    assert hub.state == "running" and hub.desired == "running"
    assert FakeBackend.homes("north-lab")["ada"] == {"notes.txt": "ada's notes"}
    asked = db.session.get(DecommissionRequest, approved["id"])
    assert asked.state == "failed" and "no space left" in asked.note
    assert db.session.execute(db.select(Archive)).first() is None
    # once the cause is gone, approving again carries it out
    again = decide(client, fleet["headers"]["operator"], action="approve", confirm="north-lab", reason="r")
    assert again.status_code == 200
    run_worker()
    assert hub_row().state == "deleted"


class Crash(BaseException):
    """The worker process dying at a given line of the operation's log (nothing after it runs)."""


@pytest.mark.parametrize("at", ["archived north-lab", "the archive is complete"])
def test_a_worker_that_dies_half_way_is_followed_by_one_that_finishes_with_one_archive(client, fleet, run_worker, app,
                                                                                      at):
    approved = decide(client, fleet["headers"]["operator"], action="approve", confirm="north-lab",
                      reason="r").get_json()
    op = operations.claim_next("dying-worker", 30)
    assert op.id == approved["operation"]

    def log(line):
        operations.append_log(op, line)
        if line.startswith(at):
            raise Crash(line)

    with pytest.raises(Crash):
        decommission.run(Worker(app, owner="dying-worker"), op, log)
    db.session.rollback()
    op = db.session.get(Operation, approved["operation"])
    op.lease_expires = utcnow() - timedelta(seconds=1)  # the dead worker's lease runs out
    db.session.commit()
    run_worker()
    op = db.session.get(Operation, approved["operation"])
    assert op.state == "succeeded" and op.attempts == 2
    assert hub_row().state == "deleted"
    archives = db.session.execute(db.select(Archive)).unique().scalars().all()
    assert len(archives) == 1 and archives[0].manifest["users"][0]["name"] == "ada"
    assert sorted(p.name for p in fleet["archives"].iterdir()) == [archives[0].location.rsplit("/", 1)[1]]


def test_archives_are_purged_after_their_retention_or_by_hand(client, fleet, run_worker, login, create_institution):
    decide(client, fleet["headers"]["operator"], action="approve", confirm="north-lab", reason="r")
    run_worker()
    archive = db.session.execute(db.select(Archive)).unique().scalar_one()
    monitoring.compact(archive.retain_until - timedelta(minutes=1))
    assert archive.state == "kept"
    monitoring.compact(archive.retain_until + timedelta(minutes=1))
    db.session.refresh(archive)
    assert archive.state == "purged" and archive.purged_at is not None
    assert not any(fleet["archives"].iterdir())
    event = db.session.execute(db.select(AuditEvent).filter_by(action="archive.purge")).scalar_one()
    assert event.actor == decommission.SYSTEM_ACTOR
    login(client, fleet["people"]["operator"])
    page = client.get("/archives").get_data(as_text=True)
    assert f'id="archive-{archive.id}" data-state="purged"' in page
    token = csrf_from(page)
    restored = client.post("/archives/restore", data={"csrf_token": token, "archive": archive.id,
                                                      "slug": "north-again", "institution": "north",
                                                      "cluster": "fast"})
    assert restored.status_code == 409

    # another hub's archive, purged by hand before its date; purging twice changes nothing
    client.post("/api/v1/hubs", json={"slug": "south-lab", "institution": "north", "cluster": "fast"},
                headers=fleet["headers"]["operator"])
    run_worker()
    client.post("/api/v1/hubs/south-lab/decommission", json={"action": "approve", "confirm": "south-lab",
                                                            "reason": "r"}, headers=fleet["headers"]["operator"])
    run_worker()
    second = db.session.execute(db.select(Archive).filter_by(hub_slug="south-lab")).unique().scalar_one()
    assert client.post("/archives/purge", data={"csrf_token": token}).status_code == 422
    assert client.post("/archives/purge", data={"csrf_token": token, "archive": second.id}).status_code == 302
    assert client.post("/archives/purge", data={"csrf_token": token, "archive": second.id}).status_code == 302
    db.session.refresh(second)
    assert second.state == "purged" and not any(fleet["archives"].iterdir())
    assert len(db.session.execute(db.select(AuditEvent).filter_by(action="archive.purge")).all()) == 2


def test_restoring_an_archive_makes_a_new_hub_whose_users_find_their_files(client, fleet, run_worker, login,
                                                                            create_cluster):
    decide(client, fleet["headers"]["operator"], action="approve", confirm="north-lab", reason="r")
    run_worker()
    archive = db.session.execute(db.select(Archive)).unique().scalar_one()
    login(client, fleet["people"]["operator"])
    form = client.get(f"/archives/restore?archive={archive.id}").get_data(as_text=True)
    assert 'value="north-lab"' in form  # the archived hub's slug is free again, and offered
    token = csrf_from(form)
    bad = client.post("/archives/restore", data={"csrf_token": token, "archive": archive.id, "slug": "X!",
                                                  "institution": "nowhere", "cluster": ""})
    assert bad.status_code == 422
    assert all(f'id="{field}-error"' in bad.get_data(as_text=True) for field in ("slug", "institution", "cluster"))
    assert db.session.execute(db.select(Hub).filter_by(slug="north-again")).first() is None
    create_cluster("kube", backend="kubernetes")  # it cannot read this archive: a field error, nothing made
    elsewhere = client.post("/archives/restore", data={"csrf_token": token, "archive": archive.id,
                                                        "slug": "north-again", "institution": "north",
                                                        "cluster": "kube"})
    assert elsewhere.status_code == 422 and 'id="cluster-error"' in elsewhere.get_data(as_text=True)
    made = client.post("/archives/restore", data={"csrf_token": token, "archive": archive.id,
                                                  "slug": "north-again", "institution": "north", "cluster": "fast"})
    assert made.status_code == 201  # the institution has no login: the new hub's first admin is shown once
    run_worker()
    hub = hub_row("north-again")
    assert hub.state == "running" and hub.spec["restored_from"] == archive.id
    assert FakeBackend.homes("north-again") == {"ada": {"notes.txt": "ada's notes"},
                                                "bob": {"thesis.md": "bob's thesis"}}
    assert db.session.execute(db.select(AuditEvent).filter_by(action="archive.restore")).first() is not None

    # an archive altered since it was made is refused before anything is put in place
    with open(archive.location, "ab") as out:
        out.write(b"tampered")
    op = decommission.restore(fleet["people"]["operator"], archive, "north-tampered", "north", "fast")
    run_worker()
    op = db.session.get(Operation, op.id)
    assert op.state == "failed" and "does not match its recorded sha256" in op.error
    assert FakeBackend.homes("north-tampered") == {}


def test_a_kubernetes_clusters_archive_location_is_validated(client, fleet, create_cluster):
    kube = create_cluster("kube", backend="kubernetes")
    headers = fleet["headers"]

    def put(name, body, who="operator"):
        return client.put(f"/api/v1/clusters/{name}/archive-location", json=body, headers=headers[who])

    bad = put("kube", {"server": "nfs example", "path": "exports/../x"})
    assert bad.status_code == 422 and set(bad.get_json()["errors"]["json"]) == {"server", "path"}
    assert "archive_nfs" not in (db.session.get(type(kube), kube.id).settings or {})
    assert put("kube", {"server": "nfs.example.org", "path": "/exports"}, who="admin").status_code == 404
    assert put("fast", {"server": "nfs.example.org", "path": "/exports"}).status_code == 409
    saved = put("kube", {"server": "nfs.example.org", "path": "/exports/archives/"})
    assert saved.get_json()["archive_nfs"] == {"server": "nfs.example.org", "path": "/exports/archives"}
