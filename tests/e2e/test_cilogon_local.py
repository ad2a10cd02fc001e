"""CILogon's real-world login shape renders into a real local JupyterHub that starts.

The institution admin applies, through the API, CILogonOAuthenticator's own documented ``idps`` (IdPs with the
``strip_idp_domain`` and ``prefix`` username actions, one IdP's ``allow_all`` and ``default``, another's
``allowed_domains``) with settings OAuthenticator offers beyond the console's former list; the worker reconfigures the
hub, which restarts with them and answers /hub/health.  CILogon needs no network to start.
"""
import json
from pathlib import Path

import httpx
import pytest

from console.extensions import db
from console.models import Hub
from console.services.institutions import ensure_local_cluster
from tests.e2e.test_oidc_login import wait_op
from tests.helpers import wait_for
from tests.tenants.test_authenticator_settings import DOCUMENTED

# One database: storing a config is tested on both by the console's own tests; the real hub is the point here.
pytestmark = [pytest.mark.timeout(240), pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def test_cilogon_documented_idps_start_a_real_hub(app, ctx, client, create_institution, create_user, api_headers,
                                                 worker_thread):
    institution = create_institution("north", "North College")
    ensure_local_cluster("local", app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"], "127.0.0.1")
    operator = api_headers(create_user("operator"))
    admin = create_user("institution_admin", institution=institution)
    wait_op(client, operator, client.post("/api/v1/hubs", json={
        "slug": "north-lab", "institution": "north", "cluster": "local"}, headers=operator).get_json()["operation"])
    auth = {"authenticator_class": "cilogon", **DOCUMENTED["cilogon"], "login_service": "North CILogon",
            "auth_refresh_age": 900, "extra_authorize_params": {"skin": "north"}, "allow_existing_users": True}
    response = client.put("/api/v1/institutions/north/config", headers=api_headers(admin), json={
        "auth": auth, "environment": {"image": "quay.io/jupyter/scipy-notebook:2025-01-06", "cull_timeout": 0}})
    assert response.status_code == 200, response.get_json()

    op_id = wait_for(lambda: client.get("/api/v1/hubs", headers=operator) and db.session.execute(
        db.text("SELECT max(id) FROM operation WHERE kind = 'reconfigure'")).scalar(), 30,
        what="the reconfigure operation")
    wait_op(client, operator, op_id)
    state = db.session.execute(db.select(Hub.backend_state).filter_by(slug="north-lab")).scalar_one()
    settings = json.loads((Path(state["dir"]) / "settings.json").read_text())
    section = settings["CILogonOAuthenticator"]
    assert section["allowed_idps"] == DOCUMENTED["cilogon"]["idps"] and section["auth_refresh_age"] == 900
    assert settings["JupyterHub"]["authenticator_class"] == "cilogon"
    assert httpx.get(f"{state['url']}hub/health", timeout=10).status_code == 200
    login_page = httpx.get(f"{state['url']}hub/login", timeout=10).text
    assert "Sign in with North CILogon" in login_page
