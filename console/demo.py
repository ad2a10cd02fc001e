"""``hubfleet demo``: a fleet to look at on one machine, with real local JupyterHubs."""
from __future__ import annotations

import secrets

from console.extensions import db
from console.models import OPERATOR, Cluster, Hub, Institution, User
from console.services import clusters as cluster_service
from console.services import hubs as hub_service
from console.services.institutions import create_institution
from console.services.users import create_user, set_password

OPERATOR_EMAIL = "operator@demo.hubfleet"
INSTITUTIONS = [
    # (slug, name, hub slug, admin email)
    ("north-college", "North Valley College", "north-lab", "admin@north-college.demo"),
    ("lakeside-university", "Lakeside University", "lakeside-lab", "admin@lakeside-university.demo"),
]


def _account(email: str, role: str, institution: str | None) -> tuple[str, str]:
    """Make sure the account exists with a fresh password; returns (email, password)."""
    password = secrets.token_urlsafe(12)
    existing = db.session.execute(db.select(User).filter_by(email=email)).unique().scalar_one_or_none()
    if existing:
        set_password(existing, password)
    else:
        create_user(email, role, institution, password, actor="demo")
    return email, password


def seed(app) -> list[tuple[str, str, str]]:
    """Create (or keep) the demo's cluster (through Terraform), institutions, hubs and accounts.

    Returns [(who, email, password)].

    Safe to run again: existing rows are kept, passwords are renewed and printed.
    """
    accounts = [("operator", *_account(OPERATOR_EMAIL, OPERATOR, None))]
    operator = db.session.execute(db.select(User).filter_by(email=OPERATOR_EMAIL)).unique().scalar_one()
    cluster = provision_local_cluster(app, operator)
    for slug, name, hub_slug, admin_email in INSTITUTIONS:
        if not db.session.execute(db.select(Institution.id).filter_by(slug=slug)).first():
            create_institution(operator, slug, name)
        accounts.append((f"{name} admin", *_account(admin_email, "institution_admin", slug)))
        live = db.session.execute(db.select(Hub.id).where(Hub.slug == hub_slug, Hub.state != "deleted")).first()
        if not live:
            hub_service.create_hub(operator, hub_slug, slug, cluster.name)
    return accounts


def provision_local_cluster(app, operator: User) -> Cluster:
    """The demo's cluster, provisioned the way an operator would: Terraform plan, approval, apply.

    The operations run right here through a worker pass, so the hubs that follow have a ready cluster.
    """
    from console.worker import Worker

    cluster = db.session.execute(db.select(Cluster).filter_by(name="local")).scalar_one_or_none()
    if cluster is not None and cluster.state == "ready":
        return cluster
    if cluster is None:
        first, last = app.config["LOCAL_PORT_RANGE"]
        cluster = cluster_service.provision(operator, "local", {"name": "local", "port_first": first,
                                                                "port_last": last}).cluster
    worker = Worker(app, owner="demo-setup")
    while worker.run_once():
        pass
    db.session.refresh(cluster)
    if cluster.state == "planned":
        cluster_service.approve(operator, cluster)
        while worker.run_once():
            pass
        db.session.refresh(cluster)
    if cluster.state != "ready":
        raise RuntimeError(f"the demo cluster could not be provisioned (it is {cluster.state}); "
                           f"see its operations with `hubfleet serve`")
    return cluster


def banner(host: str, port: int, accounts) -> str:
    lines = ["", f"Hubfleet console: http://{host}:{port}/", ""]
    lines += [f"  {who:<28} {email:<36} password: {password}" for who, email, password in accounts]
    lines += ["", "The two demo hubs start in the background; their URLs appear on the fleet page.",
              "Log into a demo hub with any username and any password (JupyterHub's dummy authenticator).",
              "Ctrl-C stops the console and the demo hubs; run the same command again to bring them back.", ""]
    return "\n".join(lines)


def stop_hubs(app) -> None:
    """Stop the demo cluster's hub processes, keeping their data for the next run."""
    with app.app_context():
        for hub in db.session.execute(db.select(Hub).where(Hub.state != "deleted")).unique().scalars():
            if hub.cluster.backend == "local" and hub.backend_state:
                hub_service.backend_for(hub.cluster).stop(hub.backend_state, lambda line: None)
