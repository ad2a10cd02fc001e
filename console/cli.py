"""The ``hubfleet`` command."""
from __future__ import annotations

import logging
import signal
import sys

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from console import create_app


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe request drowns everything else


def _exit_on_sigterm() -> None:
    # SystemExit unwinds the main thread like Ctrl-C does, so `finally` blocks run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


@click.group(cls=FlaskGroup, create_app=create_app, add_version_option=False, load_dotenv=False)
def main():
    """Hubfleet: run many JupyterHubs for many institutions."""


def _upgrade_database() -> None:
    from flask_migrate import upgrade

    upgrade()


def _serve(app, host: str, port: int, with_worker: bool) -> None:
    """Serve until stopped; the in-process worker and monitor are stopped before this returns."""
    from waitress import serve

    from console.worker import start_in_process

    background, stop = start_in_process(app) if with_worker else (None, None)
    try:
        serve(app, host=host, port=port, threads=8, ident="hubfleet")
    finally:
        if background is not None:
            stop.set()  # before the demo stops its hubs: the monitor must not restart them
            background.join(30)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--worker/--no-worker", default=None,
              help="Run the reconciler in this process (default: the WORKER_IN_PROCESS setting).")
@with_appcontext
def serve(host, port, worker):
    """Migrate the database and serve the console."""
    _configure_logging()
    _upgrade_database()
    _exit_on_sigterm()
    app = current_app._get_current_object()
    _serve(app, host, port, app.config["WORKER_IN_PROCESS"] if worker is None else worker)


@main.command()
@with_appcontext
def worker():
    """Run the reconciler and the fleet monitor as a separate process (stops on SIGTERM or Ctrl-C)."""
    from console.worker import start_in_process

    _configure_logging()
    background, stop = start_in_process(current_app._get_current_object())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while background.is_alive() and not stop.wait(1):
            pass
    except KeyboardInterrupt:
        stop.set()
    background.join(60)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@with_appcontext
def demo(host, port):
    """Migrate, seed two institutions with a local hub each, and serve the console with its worker."""
    from console import demo as demo_seed

    _configure_logging()
    _upgrade_database()
    app = current_app._get_current_object()
    _exit_on_sigterm()
    accounts = demo_seed.seed(app)
    click.echo(demo_seed.banner(host, port, accounts))
    try:
        _serve(app, host, port, with_worker=True)
    finally:
        demo_seed.stop_hubs(app)


@main.group()
def user():
    """Console accounts."""


@user.command("create")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(["operator", "institution_admin"]))
@click.option("--institution", help="The institution's slug (institution_admin only).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_appcontext
def user_create(email, role, institution, password_stdin):
    """Create a console account."""
    from console.services import FieldErrors
    from console.services.users import create_user

    if not password_stdin:
        raise click.UsageError("pass --password-stdin and the password on standard input")
    password = sys.stdin.readline().rstrip("\n")
    try:
        created = create_user(email, role, institution, password)
    except FieldErrors as exc:
        for field, message in exc.errors.items():
            click.echo(f"error: {field}: {message}", err=True)
        sys.exit(2)
    click.echo(f"created {created.role} {created.email}")


@main.group()
def token():
    """API tokens."""


@token.command("create")
@click.option("--user", "email", required=True, help="The account's email.")
@with_appcontext
def token_create(email):
    """Create an API token for an account and print it (only the token)."""
    from console.extensions import db
    from console.models import User
    from console.security import new_api_token

    account = db.session.execute(db.select(User).filter_by(email=email.strip().lower())).unique().scalar_one_or_none()
    if account is None:
        click.echo(f"error: no account {email!r}", err=True)
        sys.exit(2)
    value = new_api_token(account)
    db.session.commit()
    click.echo(value)


@main.command("export")
@with_appcontext
def export():
    """Print every institution's config and policy and every hub as JSON (no secret is ever included)."""
    import json

    from console.services.config import export_fleet

    click.echo(json.dumps(export_fleet(), indent=2, sort_keys=True, default=str))


@main.group()
def secrets():
    """Secrets at rest."""


@secrets.command("rotate")
@with_appcontext
def secrets_rotate():
    """Re-encrypt every stored secret with the first of ENCRYPTION_KEYS."""
    from console.crypto import rotate
    from console.extensions import db
    from console.models import ConfigDraft, Institution

    count = 0
    for model in (Institution, ConfigDraft):
        for row in db.session.execute(db.select(model)).scalars():
            if row.auth_secrets:
                row.auth_secrets = rotate(row.auth_secrets)
                count += 1
    db.session.commit()
    click.echo(f"re-encrypted {count} secret bundle(s)")


@main.group()
def cluster():
    """Clusters hubs run on."""


@cluster.command("add-local")
@click.option("--name", required=True)
@with_appcontext
def cluster_add_local(name):
    """Register a local cluster: hubs as JupyterHub processes on this machine."""
    from console.services.institutions import ensure_local_cluster

    app = current_app
    made = ensure_local_cluster(name, app.config["DATA_DIR"], app.config["LOCAL_PORT_RANGE"],
                                app.config["LOCAL_HUB_IP"])
    click.echo(f"cluster {made.name} ({made.backend}) ready")


if __name__ == "__main__":
    main()
