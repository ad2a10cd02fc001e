"""Usage on Kubernetes hubs end to end: the console's read-only service token reaches the hub through its values
Secret, a monitoring sweep lists the hub's servers with it, and usage counts server-hours and what those servers
request; a hub that refuses the token leaves an open gap, not an error.

The cluster is the emulator with the stand-in Flux of tests/e2e/test_kubernetes_hubs.py (the real z2jh chart
renders the hub's Secret, so the token tested is the one the chart gives the hub pod); the hub's HTTP side is a
fake JupyterHub (tests/fakehubs.py) that lists users only to the token the chart gave the hub.
"""
from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
import yaml

from clusters import lifecycle
from clusters.local import SERVICE_NAME, SERVICE_SCOPES
from console.extensions import db
from console.models import Hub, Institution, ServerSession, utcnow
from console.services import hubs as hub_service
from console.services import monitoring, usage
from tenants.render import MASK
from tests.e2e import test_kubernetes_hubs as k8s
from tests.fakehubs import FakeHubs
from tests.k8s.reference import needs_reference

pytestmark = [pytest.mark.timeout(120), needs_reference]

emulated, fleet = k8s.emulated, k8s.fleet  # the cluster, Flux, institution "north" and a chart release


def sweep() -> None:
    """One monitoring sweep, as the monitor's tick runs it."""
    hubs = monitoring.live_hubs()
    monitoring.record(hubs, monitoring.probe_fleet([hub for hub in hubs if hub.state in lifecycle.SERVING]))
    db.session.commit()


def iso(moment) -> str:
    return moment.isoformat() + "Z"


def yaml_of(secret: dict) -> dict:
    return yaml.safe_load(base64.b64decode(secret["data"]["values.yaml"]))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # usage's queries run on both in tests/console
def test_a_kubernetes_hubs_servers_are_listed_with_its_service_token_and_counted_with_what_they_request(
        app, client, emulated, fleet, run_worker, create_user):
    # a gap: servers unlisted for over 3 minutes; reports below say "now" themselves, so a sweep slowed by a loaded
    # machine never opens one by itself
    app.config.update(PROBE_SECONDS=60, PROBE_TIMEOUT=5)
    headers = fleet(emulated)
    north = db.session.execute(db.select(Institution).filter_by(slug="north")).scalar_one()
    north.environment = {"cpu_guarantee": 0.5, "mem_guarantee": "2G"}  # what each server requests
    db.session.commit()
    op_id = k8s.create(client, headers, "stats")
    assert k8s.until_done(client, headers, run_worker, op_id)["state"] == "succeeded"
    hub = db.session.execute(db.select(Hub).filter_by(slug="stats")).unique().scalar_one()
    where = k8s.hub_names("stats")

    # The token the chart gave the hub pod (its Secret, read by z2jh's jupyterhub_config.py) is the console's.
    chart_secret = emulated.emulator.get("Secret", "hub", where.namespace)
    token = base64.b64decode(chart_secret["data"][f"hub.services.{SERVICE_NAME}.apiToken"]).decode()
    assert token == hub_service.backend_for(hub.cluster).api_token(hub.backend_state)
    values = yaml_of(emulated.emulator.get("Secret", "hubfleet-values", where.namespace))
    assert values["hub"]["services"][SERVICE_NAME]["apiToken"] == token
    [release] = emulated.objects("HelmRelease", where.namespace)
    assert release["spec"]["values"]["hub"]["loadRoles"][SERVICE_NAME]["scopes"] == SERVICE_SCOPES
    # ... and nowhere else: not in the HelmRelease, the hub's state, its manifests or its operation's log
    assert token not in json.dumps(release) and token not in json.dumps(hub.backend_state)
    shown = client.get("/api/v1/hubs/stats/manifests", headers=headers)
    assert shown.status_code == 200 and token not in shown.get_data(as_text=True)
    [masked] = [obj for obj in shown.get_json()["objects"] if obj["kind"] == "Secret"]
    assert masked["stringData"] == {"values.yaml": MASK}
    log = client.get(f"/api/v1/operations/{op_id}", headers=headers).get_json()["log"]
    assert any("applied Secret hubfleet-values" in line for line in log) and token not in json.dumps(log)

    with FakeHubs(1) as fake:
        port = fake.ports[0]
        fake.tokens[port] = token
        started = (utcnow() - timedelta(hours=1)).replace(microsecond=0)
        fake.users[port] = [{"name": "ada", "servers": {"": {"ready": True, "pending": None, "started": iso(started),
                                                             "last_activity": iso(utcnow())}}}]
        db.session.execute(db.update(Hub).where(Hub.id == hub.id).values(url=fake.urls[0]))
        db.session.commit()

        sweep()
        measured = utcnow()
        db.session.expire_all()
        [session] = db.session.execute(db.select(ServerSession).filter_by(hub_id=hub.id)).scalars().all()
        assert (session.username, session.started, session.cpu, session.memory) == ("ada", started, 0.5, 2.0)
        operator = create_user("operator")
        window = (measured - timedelta(hours=3), measured + timedelta(hours=1))
        [row] = usage.report(operator, *window, hub=hub, now=measured)["institutions"][0]["hubs"]
        hours = (measured - started).total_seconds() / 3600
        assert abs(row["server_hours"] - hours) < 1 / 600, (row, hours)
        assert abs(row["cpu_hours"] - 0.5 * hours) < 1 / 600 and abs(row["gb_hours"] - 2.0 * hours) < 1 / 600, row
        assert row["gaps"] == [] and row["active_users"] == 1
        sent = [asked["authorization"] for _, path, asked in fake.user_requests if path.startswith("/hub/api/users?")]
        assert sent and set(sent) == {f"token {token}"}

        # The hub now knows another token (say, a console with a new SECRET_KEY deployed it): it refuses the
        # console's, the sweep still records the hub, and its servers go unlisted.
        fake.tokens[port] = "f" * 64
        listed_at = db.session.get(Hub, hub.id).servers_listed_at
        sweep()
        db.session.expire_all()
        refused = db.session.get(Hub, hub.id)
        assert refused.health == "healthy" and refused.servers_listed_at == listed_at
        assert db.session.execute(db.select(ServerSession).filter_by(hub_id=hub.id)).scalar_one().ended is None
        later = listed_at + usage.gap_after() + timedelta(seconds=5)
        [row] = usage.report(operator, *window, hub=hub, now=later)["institutions"][0]["hubs"]
        assert [(gap["from"], gap["open"]) for gap in row["gaps"]] == [(listed_at.isoformat(), True)]
        assert row["inexact_sessions"] == 1  # counted up to when a sweep last saw it running
