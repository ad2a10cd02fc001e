"""Contacts of institutions and hubs, and alert email: add, change and remove them (API and pages) with field errors
and nothing of another institution's reachable; who receives a hub's alerts; each alert and recovery emailed once
through a real SMTP server on loopback (aiosmtpd, tests/smtp.py), a server that is down tried again later; the fleet
page and the alerts list naming whom to call."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from markupsafe import escape
from sqlalchemy import event

from console.extensions import db
from console.models import Alert, AuditEvent, Contact, Hub, utcnow
from console.services import alert_email, contacts, monitoring
from tests.conftest import csrf_from
from tests.smtp import PASSWORD, USERNAME, free_port, local_smtp


@pytest.fixture
def smtp_server(app):
    """A real SMTP server on loopback that the app sends through (tests/smtp.py); its inbox."""
    with local_smtp(app) as inbox:
        yield inbox


@pytest.fixture
def world(client, create_institution, create_cluster, create_user, api_headers, run_worker):
    """North (hubs north-lab and north-gpu) and South (south-lab) on the fake backend; an operator and each
    institution's admin, with API headers."""
    north, south = create_institution("north", "North College"), create_institution("south", "South College")
    create_cluster("fast", backend="fake")
    operator = create_user("operator", email="ops@example.org")
    headers = api_headers(operator)
    for slug, institution in (("north-lab", "north"), ("north-gpu", "north"), ("south-lab", "south")):
        assert client.post("/api/v1/hubs", json={"slug": slug, "institution": institution, "cluster": "fast"},
                           headers=headers).status_code == 202
    run_worker()
    north_admin = create_user("institution_admin", institution=north, email="admin@north.example.org")
    south_admin = create_user("institution_admin", institution=south, email="admin@south.example.org")
    return SimpleNamespace(north=north, south=south, operator=operator, north_admin=north_admin,
                           south_admin=south_admin, as_operator=headers, as_north=api_headers(north_admin),
                           as_south=api_headers(south_admin))


def hub(slug) -> Hub:
    return db.session.execute(db.select(Hub).filter_by(slug=slug)).unique().scalar_one()


def add_contact(institution, kind="technical", name="Ada Lovelace", email="ada@north.example.org", **values):
    """A contact written straight to the database (the rule tests need no audit trail)."""
    hub_slug = values.pop("hub", None)
    contact = Contact(institution_id=institution.id, hub_id=hub(hub_slug).id if hub_slug else None, kind=kind,
                      name=name, email=email, **values)
    db.session.add(contact)
    db.session.commit()
    return contact


def contact_count() -> int:
    return db.session.query(Contact).count()


# -- the API -------------------------------------------------------------------------------------------------------

def test_contacts_are_added_changed_and_removed_over_the_api(client, world):
    url = "/api/v1/institutions/north/contacts"
    created = client.post(url, json={"kind": "technical", "name": "Ada Lovelace", "email": "ada@north.example.org",
                                     "phone": "+1 (555) 010-0100 x12"}, headers=world.as_north)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert {k: body[k] for k in ("kind", "name", "email", "phone", "receives_alerts", "hub")} == {
        "kind": "technical", "name": "Ada Lovelace", "email": "ada@north.example.org",
        "phone": "+1 (555) 010-0100 x12", "receives_alerts": True, "hub": None}
    own = client.post(url, json={"kind": "administrative", "name": "Grace Hopper", "email": "grace@north.example.org",
                                 "hub": "north-lab", "receives_alerts": False}, headers=world.as_operator)
    assert own.status_code == 201 and own.get_json()["hub"] == "north-lab"
    listed = client.get(url, headers=world.as_north).get_json()
    assert [(c["name"], c["hub"]) for c in listed] == [("Ada Lovelace", None), ("Grace Hopper", "north-lab")]

    item = f"{url}/{body['id']}"
    changed = client.patch(item, json={"phone": "", "receives_alerts": False, "hub": "north-gpu"},
                           headers=world.as_north)
    assert changed.status_code == 200, changed.get_json()
    assert (changed.get_json()["phone"], changed.get_json()["receives_alerts"], changed.get_json()["hub"]) == \
        ("", False, "north-gpu")
    assert client.delete(item, headers=world.as_north).status_code == 204
    assert client.patch(item, json={"name": "x"}, headers=world.as_north).status_code == 404
    assert [c["name"] for c in client.get(url, headers=world.as_north).get_json()] == ["Grace Hopper"]
    actions = db.session.execute(db.select(AuditEvent.action, AuditEvent.detail).where(
        AuditEvent.action.like("contact.%")).order_by(AuditEvent.id)).all()
    assert [a for a, _ in actions] == ["contact.add", "contact.add", "contact.edit", "contact.remove"]
    assert actions[2][1]["changed"] == ["hub_id", "phone", "receives_alerts"]


BAD_BODIES = [
    ({"kind": "technical", "name": "Ada", "email": "not an address"}, "email"),
    ({"kind": "technical", "name": "   ", "email": "ada@north.example.org"}, "name"),
    ({"kind": "technical", "name": "Ada\r\nBcc: x@evil.example", "email": "ada@north.example.org"}, "name"),
    ({"kind": "technical", "name": "Ada", "email": "ada@north.example.org", "phone": "call me maybe"}, "phone"),
    ({"kind": "technical", "name": "Ada", "email": "ada@north.example.org", "hub": "south-lab"}, "hub"),
    ({"kind": "technical", "name": "Ada", "email": "ada@north.example.org", "hub": "no-such-hub"}, "hub"),
    ({"kind": "billing", "name": "Ada", "email": "ada@north.example.org"}, "kind"),
    ({"name": "Ada", "email": "ada@north.example.org"}, "kind"),
    ({"kind": "technical", "name": "Ada", "email": "ada@north.example.org", "receives_alerts": "maybe"},
     "receives_alerts"),
]


def test_bad_input_is_a_field_error_and_changes_nothing(client, world):
    url = "/api/v1/institutions/north/contacts"
    for body, field in BAD_BODIES:
        response = client.post(url, json=body, headers=world.as_north)
        assert response.status_code == 422, (body, response.get_json())
        assert field in response.get_json()["errors"]["json"], body
    assert contact_count() == 0
    contact = add_contact(world.north, phone="555 0100")
    response = client.patch(f"{url}/{contact.id}", json={"name": "Ada King", "email": "ada@"}, headers=world.as_north)
    assert response.status_code == 422 and list(response.get_json()["errors"]["json"]) == ["email"]
    db.session.expire_all()
    assert (contact.name, contact.email) == ("Ada Lovelace", "ada@north.example.org")
    assert not db.session.query(AuditEvent).filter(AuditEvent.action.like("contact.%")).count()


def test_another_institutions_admin_reaches_none_of_its_contacts(client, world, login):
    contact = add_contact(world.north)
    north_url = "/api/v1/institutions/north/contacts"
    south = world.as_south
    assert client.get(north_url, headers=south).status_code == 404
    assert client.post(north_url, json={"kind": "technical", "name": "Mallory", "email": "m@south.example.org"},
                       headers=south).status_code == 404
    assert client.patch(f"{north_url}/{contact.id}", json={"name": "Mallory"}, headers=south).status_code == 404
    assert client.delete(f"{north_url}/{contact.id}", headers=south).status_code == 404
    # Through their own institution's address, North's contact is not found either.
    own_url = f"/api/v1/institutions/south/contacts/{contact.id}"
    assert client.patch(own_url, json={"name": "Mallory"}, headers=south).status_code == 404
    assert client.delete(own_url, headers=south).status_code == 404
    login(client, world.south_admin)
    token = csrf_from(client.get("/").get_data(as_text=True))
    for path in (f"/institutions/north/contacts/{contact.id}", f"/institutions/south/contacts/{contact.id}"):
        assert client.get(path).status_code == 404
        assert client.post(path, data={"csrf_token": token, "kind": "technical", "name": "Mallory",
                                       "email": "m@south.example.org"}).status_code == 404
        assert client.post(f"{path}/delete", data={"csrf_token": token}).status_code == 404
    assert client.post("/institutions/north/contacts", data={
        "csrf_token": token, "kind": "technical", "name": "Mallory", "email": "m@south.example.org"}
    ).status_code == 404
    assert "Ada Lovelace" not in client.get("/hubs/south-lab").get_data(as_text=True)
    db.session.expire_all()
    assert contact.name == "Ada Lovelace" and contact_count() == 1


# -- who receives a hub's alerts -----------------------------------------------------------------------------------

def test_a_hubs_own_contacts_receive_its_alerts_else_the_institutions_technical_ones(world):
    tech = add_contact(world.north, name="Tech Desk", email="desk@north.example.org")
    add_contact(world.north, name="Night Tech", email="night@north.example.org", receives_alerts=False)
    add_contact(world.north, kind="administrative", name="Dean", email="dean@north.example.org")
    lab_admin = add_contact(world.north, kind="administrative", name="Lab Head", email="head@north.example.org",
                            hub="north-lab")
    add_contact(world.north, name="Lab Quiet", email="quiet@north.example.org", hub="north-lab",
                receives_alerts=False)
    south_tech = add_contact(world.south, name="South Desk", email="desk@south.example.org")
    lab, gpu, south_lab = hub("north-lab"), hub("north-gpu"), hub("south-lab")

    got = contacts.recipients_by_hub([lab, gpu, south_lab])
    assert got == {lab.id: [lab_admin], gpu.id: [tech], south_lab.id: [south_tech]}
    # Whom to call: technical contacts, whether or not they receive email; the hub's own first.
    called = contacts.technical_by_hub([lab, gpu])
    assert [c.name for c in called[lab.id]] == ["Lab Quiet"]
    assert [c.name for c in called[gpu.id]] == ["Night Tech", "Tech Desk"]
    # A hub whose own contacts all decline alerts falls back on the institution's.
    db.session.delete(lab_admin)
    db.session.commit()
    assert contacts.recipients_by_hub([lab]) == {lab.id: [tech]}


# -- email ---------------------------------------------------------------------------------------------------------

def open_alert(slug="north-lab", reason="no answer to 3 probes in a row (connection refused)") -> Alert:
    alert = Alert(hub=hub(slug), kind="down", reason=reason, started_at=utcnow() - timedelta(minutes=2))
    db.session.add(alert)
    db.session.commit()
    return alert


def test_a_down_hubs_alert_and_recovery_are_emailed_once_to_its_contacts(app, world, smtp_server):
    app.config["PUBLIC_URL"] = "https://console.example.org"
    add_contact(world.north, name="Tech Desk", email="desk@north.example.org", phone="+1 555 0100")
    add_contact(world.north, kind="administrative", name="Dean", email="dean@north.example.org")
    add_contact(world.south, name="South Desk", email="desk@south.example.org")
    db.session.execute(db.update(Hub).where(Hub.slug == "north-lab").values(url="http://127.0.0.1:18001/"))
    alert = open_alert()

    monitoring.deliver()
    [mail] = smtp_server.messages
    assert smtp_server.recipients == [["desk@north.example.org"]]
    assert smtp_server.logins == [(USERNAME, PASSWORD)]
    assert mail["Subject"] == "[Hubfleet] north-lab is down"
    assert mail["From"] == "alerts@hubfleet.example.org" and mail["To"] == "Tech Desk <desk@north.example.org>"
    text = mail.get_content()
    for expected in ("north-lab", "North College (north)", "Alert:       down",
                     "no answer to 3 probes in a row (connection refused)",
                     alert.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"), "http://127.0.0.1:18001/",
                     "https://console.example.org/hubs/north-lab",
                     "Technical: Tech Desk (desk@north.example.org, +1 555 0100)",
                     "Administrative: Dean (dean@north.example.org)"):
        assert expected in text, expected
    assert "South Desk" not in text
    assert all(PASSWORD.encode() not in raw for raw in smtp_server.raw)
    db.session.expire_all()
    assert alert.emailed_at is not None and alert.email_error == ""

    monitoring.deliver()  # nothing new: nothing sent
    assert len(smtp_server.messages) == 1
    alert.resolved_at = utcnow()
    db.session.commit()
    monitoring.deliver()
    assert [m["Subject"] for m in smtp_server.messages][1:] == ["[Hubfleet] north-lab has recovered"]
    assert "Recovered:" in smtp_server.messages[1].get_content()
    monitoring.deliver()
    assert len(smtp_server.messages) == 2


def test_an_smtp_server_that_is_down_is_tried_again_later(app, world, client, login, smtp_server):
    add_contact(world.north)
    working_port = app.config["SMTP_PORT"]
    app.config["SMTP_PORT"] = free_port()  # nothing listens there
    alert = open_alert()
    now = utcnow()
    assert alert_email.email_alerts(now) == 0
    db.session.expire_all()
    assert alert.emailed_at is None and alert.email_error == alert_email.NOT_SENT and alert.email_tried_at == now
    login(client, world.north_admin)
    page = client.get("/alerts").get_data(as_text=True)
    assert escape(alert_email.NOT_SENT) in page and str(app.config["SMTP_PORT"]) not in page
    assert "127.0.0.1" not in page

    app.config["SMTP_PORT"] = working_port
    assert alert_email.email_alerts(now + alert_email.RETRY_AFTER / 2) == 0  # resting: not tried yet
    assert smtp_server.messages == []
    assert alert_email.email_alerts(now + alert_email.RETRY_AFTER) == 1
    db.session.expire_all()
    assert alert.emailed_at is not None and alert.email_error == "" and len(smtp_server.messages) == 1


def test_nothing_is_emailed_while_email_is_off_or_nobody_receives_the_hubs_alerts(app, world, smtp_server):
    add_contact(world.north, name="Lab Tech", email="lab@north.example.org", hub="north-lab")
    host, app.config["SMTP_HOST"] = app.config["SMTP_HOST"], ""
    lab_alert, gpu_alert = open_alert("north-lab"), open_alert("north-gpu")
    monitoring.deliver()
    assert smtp_server.messages == []
    db.session.expire_all()
    assert lab_alert.emailed_at is None and lab_alert.email_error == ""

    app.config["SMTP_HOST"] = host  # on: north-gpu has nobody (North has no technical contact); it waits
    monitoring.deliver()
    assert smtp_server.recipients == [["lab@north.example.org"]]
    add_contact(world.north, name="Late Desk", email="late@north.example.org")
    monitoring.deliver()
    assert smtp_server.recipients[1:] == [["late@north.example.org"]]
    db.session.expire_all()
    assert lab_alert.emailed_at is not None and gpu_alert.emailed_at is not None

    # The lab's contact leaves (its alerts now go to North's technical desk); then it recovers: Late Desk hears.
    db.session.execute(db.delete(Contact).where(Contact.name == "Lab Tech"))
    lab_alert.resolved_at = utcnow()
    db.session.commit()
    monitoring.deliver()
    assert smtp_server.recipients[2:] == [["late@north.example.org"]]
    assert smtp_server.messages[2]["Subject"] == "[Hubfleet] north-lab has recovered"
    # A recovery nobody receives is not kept waiting.
    db.session.execute(db.delete(Contact))
    gpu_alert.resolved_at = utcnow()
    db.session.commit()
    monitoring.deliver()
    assert len(smtp_server.messages) == 3
    db.session.expire_all()
    assert gpu_alert.recovery_emailed_at is not None


def test_the_test_email_goes_to_whoever_asks_and_a_failure_names_no_server_to_admins(app, world, client, login,
                                                                                     smtp_server):
    login(client, world.operator)
    page = client.get("/alerts").get_data(as_text=True)
    assert "Send a test email to ops@example.org" in page and "127.0.0.1:" in page
    response = client.post("/alerts/test-email", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302
    assert "A test email was sent to ops@example.org." in client.get("/alerts").get_data(as_text=True)
    assert smtp_server.recipients == [["ops@example.org"]]
    assert smtp_server.messages[0]["Subject"] == "[Hubfleet] test email"

    app.config["SMTP_PORT"] = port = free_port()
    response = client.post("/alerts/test-email", data={"csrf_token": csrf_from(page)})
    assert f"Not sent via 127.0.0.1:{port}, none" in client.get("/alerts").get_data(as_text=True)
    login(client, world.north_admin)
    page = client.get("/alerts").get_data(as_text=True)
    assert "127.0.0.1" not in page
    client.post("/alerts/test-email", data={"csrf_token": csrf_from(page)})
    page = client.get("/alerts").get_data(as_text=True)
    assert escape(alert_email.TEST_NOT_SENT) in page and str(port) not in page
    assert [e.detail["sent"] for e in db.session.query(AuditEvent).filter_by(action="email.test")] == \
        [True, False, False]


# -- pages ---------------------------------------------------------------------------------------------------------

def test_contacts_are_managed_on_the_institution_and_hub_pages(client, world, login):
    login(client, world.north_admin)
    page = client.get("/institutions/north").get_data(as_text=True)
    assert 'id="contacts"' in page and "No contacts yet" in page
    token = csrf_from(page)
    form = {"csrf_token": token, "kind": "technical", "name": "Tech Desk", "email": "desk@north.example.org",
            "phone": "+1 555 0100", "hub": "", "receives_alerts": "on"}
    added = client.post("/institutions/north/contacts", data=form)
    assert added.status_code == 302 and added.location == "/institutions/north"
    refused = client.post("/institutions/north/contacts", data={**form, "email": "desk at north", "phone": "desk"})
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert 'id="email-error"' in html and 'id="phone-error"' in html and 'value="desk at north"' in html
    assert contact_count() == 1

    lab = client.post("/institutions/north/contacts",
                      data={**form, "name": "Lab Tech", "email": "lab@north.example.org", "hub": "north-lab"})
    assert lab.location == "/hubs/north-lab"
    hub_page = client.get("/hubs/north-lab").get_data(as_text=True)
    assert "Lab Tech" in hub_page and "Tech Desk" in hub_page and 'id="hub-contact-add"' in hub_page
    [lab_contact] = db.session.execute(db.select(Contact).filter_by(name="Lab Tech")).unique().scalars()
    edit_url = f"/institutions/north/contacts/{lab_contact.id}"
    assert "Lab Tech" in client.get(edit_url).get_data(as_text=True)
    unticked = {k: v for k, v in form.items() if k != "receives_alerts"}
    saved = client.post(edit_url, data={**unticked, "name": "Lab Tech", "email": "lab@north.example.org",
                                        "hub": "north-lab"})
    assert saved.status_code == 302
    db.session.expire_all()
    assert lab_contact.receives_alerts is False
    assert client.post(f"{edit_url}/delete", data={"csrf_token": token}).location == "/hubs/north-lab"
    assert contact_count() == 1


def test_the_fleet_page_and_alerts_name_whom_to_call_with_one_query(client, world, login, app):
    add_contact(world.north, name="Tech Desk", email="desk@north.example.org", phone="+1 555 0100")
    add_contact(world.north, name="Lab Tech", email="lab@north.example.org", hub="north-lab")
    open_alert("north-gpu")
    login(client, world.operator)
    statements = []

    def count(conn, cursor, statement, *args):
        if " contact" in statement:
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        page = client.get("/").get_data(as_text=True)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len(statements) == 1
    rows = {slug: page.split(f'id="hub-{slug}"')[1].split("</tr>")[0] for slug in ("north-lab", "north-gpu",
                                                                                  "south-lab")}
    assert "Call Lab Tech" in rows["north-lab"] and "Tech Desk" not in rows["north-lab"]
    assert "Call Tech Desk" in rows["north-gpu"] and "+1 555 0100" in rows["north-gpu"]
    assert "Call" not in rows["south-lab"]
    alerts = client.get("/alerts").get_data(as_text=True)
    assert "Tech Desk · +1 555 0100" in alerts
