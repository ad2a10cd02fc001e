"""The hub page's log with a real local JupyterHub: its own startup lines, no secret of its config, and no server path
for an institution admin."""
import json
from pathlib import Path

import pytest

from console.extensions import db
from console.models import Hub
from console.services import config as config_service
from console.services.troubleshooting import PATH_MASK, secret_values
from tests.console.test_people import Browser
from tests.e2e.test_local_hubs import wait_operation
from tests.helpers import wait_for

# One database: what these steps store is tested on SQLite and PostgreSQL by the console's own tests; the real hubs
# are the point here, and they run the same on either.
pytestmark = [pytest.mark.timeout(240), pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def test_a_real_hubs_log_shows_its_startup_and_none_of_its_secrets(app, client, local_fleet, worker_thread,
                                                                  create_user):
    headers = local_fleet
    created = client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "local"},
                          headers=headers)
    admin_password = created.get_json()["first_admin"]["password"]
    wait_operation(client, headers, created.get_json()["operation"])
    hub = db.session.execute(db.select(Hub).filter_by(slug="north-lab")).unique().scalar_one()
    settings = json.loads((Path(hub.backend_state["dir"]) / "settings.json").read_text())
    # the spec's secrets (the first admin's hash) and the tokens the backend gave the hub's console services
    secrets = secret_values(config_service.hub_spec(hub).secrets) + [
        service["api_token"] for service in settings["JupyterHub"]["services"] if service.get("api_token")]
    assert len(secrets) >= 3

    def started():
        body = client.get("/api/v1/hubs/north-lab/log", headers=headers).get_json()
        return body if any("JupyterHub is now running at" in line for line in body["lines"]) else None

    body = wait_for(started, 30, what="JupyterHub's startup lines in the log")
    text = "\n".join(body["lines"])
    assert body["source"] == str(Path(hub.backend_state["dir"]) / "hub.log")
    assert any("Running JupyterHub version" in line for line in body["lines"])
    assert app.config["DATA_DIR"] in text  # operators see where things are
    for secret in secrets + [admin_password]:
        assert secret not in text

    admin = Browser(app, create_user("institution_admin", institution=hub.institution))
    fragment = admin.get("/hubs/north-lab/log", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "JupyterHub is now running at" in fragment and PATH_MASK in fragment
    assert app.config["DATA_DIR"] not in fragment and 'id="hub-log-source"' not in fragment
    for secret in secrets + [admin_password]:
        assert secret not in fragment
    wait_operation(client, headers, client.delete("/api/v1/hubs/north-lab", headers=headers).get_json()["operation"])
