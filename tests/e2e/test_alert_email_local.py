"""Alert email from a real local hub: the hub's JupyterHub and proxy are killed, the monitor finds it down, and the
alert reaches the institution's technical contact by email through a real SMTP server on loopback (aiosmtpd)."""
import signal
from pathlib import Path

import pytest

from clusters.local import LocalBackend
from console.extensions import db
from console.models import Hub
from tests.helpers import wait_for
from tests.smtp import PASSWORD, local_smtp

pytestmark = pytest.mark.timeout(180)
ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def smtp_server(app):
    """A real SMTP server on loopback that the app sends through (tests/smtp.py); its inbox."""
    with local_smtp(app) as inbox:
        yield inbox


@pytest.fixture
def watched_fleet(app, local_fleet, smtp_server):
    """The in-process worker and monitor over the local cluster, probing every 3 s, alerting after 2 s down, and
    restarting nothing (``MAX_RESTARTS`` 0: a killed hub stays down); yields (operator headers, the SMTP inbox)."""
    from console.worker import start_in_process

    app.config.update(PROBE_SECONDS=3, RECHECK_SECONDS=1, PROBE_TIMEOUT=1.5, ALERT_DOWN_SECONDS=2, MAX_RESTARTS=0,
                      PUBLIC_URL="https://console.example.org")
    background, stop = start_in_process(app)
    yield local_fleet, smtp_server
    stop.set()
    background.join(60)
    backend = LocalBackend(str(Path(app.config["DATA_DIR"]) / "clusters" / "local" / "hubs"))
    for hub_dir in backend.root.glob("*"):  # the hub goes with the test
        if hub_dir.is_dir():
            backend._stop(hub_dir, lambda line: None)


def kill_hub(slug: str) -> None:
    db.session.rollback()  # read what the worker committed last
    hub_dir = Path(db.session.execute(db.select(Hub.backend_state).filter_by(slug=slug)).scalar_one()["dir"])
    [main] = [p for p in LocalBackend.iter_processes(hub_dir) if str(hub_dir / "jupyterhub_config.py") in p.cmdline()]
    for proc in [main, *main.children()]:
        proc.send_signal(signal.SIGKILL)


@ONE_DATABASE
def test_a_down_hubs_alert_reaches_the_institutions_contact_by_email(client, watched_fleet):
    headers, inbox = watched_fleet
    for contact in ({"kind": "technical", "name": "North Desk", "email": "desk@north.example.org",
                     "phone": "+1 555 0100"},
                    {"kind": "administrative", "name": "North Dean", "email": "dean@north.example.org"}):
        assert client.post("/api/v1/institutions/north/contacts", json=contact, headers=headers).status_code == 201
    assert client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                       headers=headers).status_code == 202
    wait_for(lambda: client.get("/api/v1/hubs/north-lab", headers=headers).get_json()["health"] == "healthy", 90,
             what="the new hub healthy")
    url = client.get("/api/v1/hubs/north-lab", headers=headers).get_json()["url"]

    kill_hub("north-lab")
    wait_for(lambda: inbox.messages, 30, interval=0.2, what="the alert email")
    [mail] = inbox.messages
    assert inbox.recipients == [["desk@north.example.org"]]  # the technical contact; not the administrative one
    assert mail["Subject"] == "[Hubfleet] north-lab is down" and mail["To"] == "North Desk <desk@north.example.org>"
    text = mail.get_content()
    for expected in ("The hub north-lab of North is down", "Institution: North (north)", url,
                     "https://console.example.org/hubs/north-lab", "Technical: North Desk",
                     "Administrative: North Dean"):
        assert expected in text, expected
    assert PASSWORD not in text
    assert client.get("/api/v1/hubs/north-lab", headers=headers).get_json()["health"] == "down"
