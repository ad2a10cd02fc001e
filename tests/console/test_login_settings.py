"""Each authenticator's documented example goes through the API and through the config form (fake backend)."""
import json

import pytest
import yaml

from console.extensions import db
from console.models import Institution
from tenants.auth import KINDS, SECRET_FIELDS
from tests.conftest import csrf_from
from tests.tenants.test_authenticator_settings import DOCUMENTED

ENV = {"image": "quay.io/jupyter/scipy-notebook:2025-01-06"}


@pytest.fixture
def west(create_institution, create_user, api_headers):
    """Institution west, no hub yet (a config is adopted at once); returns (admin headers, admin user)."""
    institution = create_institution("west", "West College")
    institution.policy = {"open_login_allowed": True}  # the dummy example is a demo login
    admin = create_user("institution_admin", institution=institution)
    return api_headers(admin), admin


def form_fields(auth: dict) -> dict:
    """The config form's fields as an admin types them: lists one per line, mappings as YAML, ticked boxes."""
    fields = {}
    for name, value in auth.items():
        if isinstance(value, bool):
            if value:
                fields[f"auth.{name}"] = "on"
        elif isinstance(value, list):
            fields[f"auth.{name}"] = "\n".join(value)
        elif isinstance(value, dict):
            fields[f"auth.{name}"] = yaml.safe_dump(value)
        else:
            fields[f"auth.{name}"] = str(value)
    return fields


@pytest.mark.parametrize("kind", sorted(DOCUMENTED))
def test_a_documented_example_is_applied_through_the_api(client, west, kind):
    headers, _ = west
    response = client.put("/api/v1/institutions/west/config", headers=headers,
                          json={"auth": {"authenticator_class": kind, **DOCUMENTED[kind]}, "environment": ENV})
    assert response.status_code == 200, response.get_json()
    body = client.get("/api/v1/institutions/west/config", headers=headers).get_json()
    assert body["auth"]["authenticator_class"] == kind
    secrets = [v for k, v in DOCUMENTED[kind].items() if k in SECRET_FIELDS]
    assert not any(secret in json.dumps(body) for secret in secrets)  # write-only


@pytest.mark.parametrize("kind", sorted(DOCUMENTED))
def test_a_documented_example_typed_into_the_form_previews(client, west, login, kind):
    _, admin = west
    login(client, admin)
    page = client.get("/institutions/west/config").get_data(as_text=True)
    token = csrf_from(page)
    switched = client.post("/institutions/west/config", data={"csrf_token": token, "action": "switch",
                                                              "auth.authenticator_class": kind})
    text = switched.get_data(as_text=True)
    assert switched.status_code == 200 and "<details>" in text and "More settings" in text  # closed at first
    # the form is generated from the derived fields: every one has an input, the documented settings among them
    assert all(f'name="auth.{field.name}"' in text for field in KINDS[kind].fields)
    assert all(f'name="auth.{name}"' in text for name in DOCUMENTED[kind])
    form = {"csrf_token": token, "action": "preview", "auth.authenticator_class": kind,
            **form_fields(DOCUMENTED[kind]), "environment.image": ENV["image"]}
    preview = client.post("/institutions/west/config", data=form)
    assert preview.status_code == 200, preview.get_data(as_text=True)[:3000]


def test_a_field_the_class_refuses_is_shown_beside_it_and_more_settings_open(client, west, login):
    _, admin = west
    login(client, admin)
    token = csrf_from(client.get("/institutions/west/config").get_data(as_text=True))
    idps = {"https://idp.example.edu": {"username_derivation": {"username_claim": "email",
                                                                "action": "strip_idp_domain"}}}
    form = {"csrf_token": token, "action": "preview", "auth.authenticator_class": "cilogon", "auth.client_id": "c",
            "auth.client_secret": "a-long-client-secret", "auth.allow_all": "on", "auth.idps": yaml.safe_dump(idps),
            "auth.auth_refresh_age": "soon", "environment.image": ENV["image"]}
    refused = client.post("/institutions/west/config", data=form)
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422 and "Enter a whole number." in text
    assert "<details open>" in text  # auth_refresh_age sits under More settings, opened to show its error
    assert "strip_idp_domain" in text  # the YAML as typed is kept
    # once every value parses, the class itself checks them: its reason beside the field
    refused = client.post("/institutions/west/config", data={**form, "auth.auth_refresh_age": "600"})
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422 and 'id="auth.idps-error"' in text
    assert "CILogonOAuthenticator refuses it: &#39;domain&#39; is a required property" in text
    west_row = db.session.execute(db.select(Institution).filter_by(slug="west")).scalar_one()
    assert not west_row.auth  # nothing applied
