"""The `hubfleet` command's account and token verbs, run through click against the test database."""
import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from console.cli import main
from console.extensions import db
from console.models import AuditEvent, User


@pytest.fixture
def hubfleet(app):
    def run(*args, stdin=None):
        return CliRunner().invoke(main, list(args), input=stdin, obj=ScriptInfo(create_app=lambda: app))

    return run


def test_user_create_and_token_create(hubfleet, client, create_institution):
    create_institution("north")
    result = hubfleet("user", "create", "--email", "Ops@Example.org", "--role", "operator", "--password-stdin",
                      stdin="a long enough password\n")
    assert result.exit_code == 0, result.output
    result = hubfleet("user", "create", "--email", "admin@north.edu", "--role", "institution_admin",
                      "--institution", "north", "--password-stdin", stdin="another long password\n")
    assert result.exit_code == 0, result.output
    assert db.session.execute(db.select(User.role).filter_by(email="admin@north.edu")).scalar_one() \
        == "institution_admin"

    result = hubfleet("token", "create", "--user", "ops@example.org")
    assert result.exit_code == 0
    token = result.output.strip()
    assert token.startswith("hf_") and "\n" not in token
    assert client.get("/api/v1/hubs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # Neither the password nor the token is kept in the clear or audited.
    audit = " ".join(str(e.detail) for e in db.session.execute(db.select(AuditEvent)).scalars())
    assert "long enough" not in audit and token not in audit


@pytest.mark.parametrize("args,stdin,field", [
    (["--email", "not-an-email", "--role", "operator"], "a long enough password\n", "email"),
    (["--email", "a@b.org", "--role", "institution_admin", "--institution", "nowhere"], "a long enough password\n",
     "institution"),
    (["--email", "a@b.org", "--role", "operator"], "short\n", "password"),
])
def test_user_create_refuses_bad_input(hubfleet, ctx, args, stdin, field):
    result = hubfleet("user", "create", *args, "--password-stdin", stdin=stdin)
    assert result.exit_code == 2
    assert f"error: {field}:" in result.output
    assert db.session.query(User).count() == 0


def test_token_for_unknown_user(hubfleet, ctx):
    result = hubfleet("token", "create", "--user", "ghost@example.org")
    assert result.exit_code == 2 and "no account" in result.output
