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


def _serve_single(app, host: str, port: int) -> None:
    """Serve in this one process, the worker and the monitor in its threads (the demo: one person, one command);
    they are stopped before this returns."""
    from waitress import serve

    from console.worker import start_in_process

    background, stop = start_in_process(app)
    try:
        serve(app, host=host, port=port, threads=8, ident="hubfleet")
    finally:
        stop.set()  # before the demo stops its hubs: the monitor must not restart them
        background.join(30)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Web processes (default: the SERVE_WORKERS setting, else 1 per CPU, at least 2, at most 8).")
@click.option("--worker/--no-worker", default=None,
              help="Run `hubfleet worker` and `hubfleet monitor` as child processes, restarted when they exit "
                   "(default: the SERVE_WORKER setting); --no-worker when they run elsewhere.")
@with_appcontext
def serve(host, port, workers, worker):
    """Migrate the database and serve the console with several web processes (gunicorn)."""
    from console import serving

    _configure_logging()
    _upgrade_database()
    app = current_app._get_current_object()
    serving.serve(app, host, port, app.config["SERVE_WORKER"] if worker is None else worker, workers)


def _run_background(operations: bool, monitor: bool) -> None:
    """Run until SIGTERM or Ctrl-C; the current step is finished and the monitor's lease given up first."""
    from console.worker import start_in_process

    _configure_logging()
    background, stop = start_in_process(current_app._get_current_object(), operations, monitor)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while background.is_alive() and not stop.wait(1):
            pass
    except KeyboardInterrupt:
        stop.set()
    background.join(60)


@main.command()
@click.option("--monitor/--no-monitor", default=True, show_default=True,
              help="Also run the fleet monitor in this process (`hubfleet serve` runs it as `hubfleet monitor`).")
@with_appcontext
def worker(monitor):
    """Run the reconciler (and the fleet monitor) as a separate process (stops on SIGTERM or Ctrl-C)."""
    _run_background(operations=True, monitor=monitor)


@main.command()
@with_appcontext
def monitor():
    """Run only the fleet monitor (probes, supervision, alerts) as a separate process; a lease in the database makes
    one such process the monitor at a time."""
    _run_background(operations=False, monitor=True)


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
    # the demo's hubs reach the console where it serves (federated login's issuer), unless one was configured
    app.config["PUBLIC_URL"] = app.config["PUBLIC_URL"] or f"http://{host}:{port}"
    _exit_on_sigterm()
    accounts = demo_seed.seed(app)
    click.echo(demo_seed.banner(host, port, accounts))
    try:
        _serve_single(app, host, port)
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
@click.option("--name", default="cli", show_default=True, help="What uses the token.")
@click.option("--scope", "scopes", multiple=True, default=["write"], show_default=True,
              help='"read", "write" or an action such as hub.view (repeat for several); never more than the account '
                   'may do.')
@click.option("--expires-days", default=90, show_default=True, type=int, help="Days until it expires (at most 365).")
@with_appcontext
def token_create(email, name, scopes, expires_days):
    """Create an API token for an account and print it (only the token)."""
    from console.extensions import db
    from console.models import User
    from console.services import FieldErrors
    from console.services.tokens import create_token

    account = db.session.execute(db.select(User).filter_by(email=email.strip().lower())).unique().scalar_one_or_none()
    if account is None:
        click.echo(f"error: no account {email!r}", err=True)
        sys.exit(2)
    try:
        _, value = create_token(account, name, list(scopes), expires_days, actor="cli")
    except FieldErrors as exc:
        for field, message in exc.errors.items():
            click.echo(f"error: {field}: {message}", err=True)
        sys.exit(2)
    click.echo(value)


@main.command("export")
@with_appcontext
def export():
    """Print the fleet as a document `hubfleet apply` takes: institutions (policy, config, blackouts), releases and
    hubs, as JSON (secrets only as references, never a value)."""
    from console.services import fleet_code

    click.echo(fleet_code.dumps(fleet_code.export_document()), nl=False)


@main.command("apply")
@click.argument("file", type=click.File("r"))
@click.option("--user", "email", required=True, help="The operator account the changes are made as.")
@click.option("--yes", is_flag=True, help="Apply without asking (after printing the plan).")
@with_appcontext
def apply(file, email, yes):
    """Plan a fleet document (FILE, or - for standard input) against the fleet, print what it creates, changes and
    deletes, and apply it once confirmed.  Exits 2 with the field errors of an invalid document, changing
    nothing."""
    from console.fleet_cli import run_apply

    sys.exit(run_apply(file, email, yes))


@main.group()
def secrets():
    """Secrets at rest."""


@secrets.command("rotate")
@with_appcontext
def secrets_rotate():
    """Re-encrypt every stored secret with the first of ENCRYPTION_KEYS."""
    from console.crypto import rotate
    from console.extensions import db
    from console.models import ConfigDraft, Institution, InstitutionIdp, LoginState, WebhookTarget

    count = 0
    for model, column in ((Institution, "auth_secrets"), (ConfigDraft, "auth_secrets"), (WebhookTarget, "secret"),
                          (InstitutionIdp, "client_secret"), (LoginState, "data")):
        for row in db.session.execute(db.select(model)).unique().scalars():
            if getattr(row, column):
                setattr(row, column, rotate(getattr(row, column)))
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
