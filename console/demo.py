"""``hubfleet demo``: a fleet to look at on one machine, with real local JupyterHubs.

The demo alone opts into JupyterHub's dummy login (any username, any password): its institutions configure it as an
institution admin would, and its cluster serves on 127.0.0.1 only.  Any other new hub is closed until its
institution configures a login.
"""
from __future__ import annotations

import secrets

from console.extensions import db
from console.models import OPERATOR, Cluster, Hub, Institution, User
from console.services import clusters as cluster_service
from console.services import config as config_service
from console.services import hubs as hub_service
from console.services.institutions import create_institution
from console.services.users import create_user, set_password

OPERATOR_EMAIL = "operator@demo.hubfleet"
INSTITUTIONS = [
    # (slug, name, hub slug, admin email)
    ("north-college", "North Valley College", "north-lab", "admin@north-college.demo"),
    ("lakeside-university", "Lakeside University", "lakeside-lab", "admin@lakeside-university.demo"),
]
DEMO_LOGIN = {"authenticator_class": "dummy", "allow_all": True}
DEMO_IP = "127.0.0.1"


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
        institution = db.session.execute(db.select(Institution).filter_by(slug=slug)).scalar_one()
        if not institution.auth:
            config_service.set_policy(operator, institution, {**config_service.policy_of(institution),
                                                              "open_login_allowed": True})
            config_service.apply(operator, institution, DEMO_LOGIN, {})
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
        return _on_loopback(cluster)
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
    return _on_loopback(cluster)


def _on_loopback(cluster: Cluster) -> Cluster:
    """Keep the demo's hubs, with their dummy login, on 127.0.0.1 where nobody else reaches them."""
    settings = {**(cluster.settings or {}), "ip": DEMO_IP}
    if settings != cluster.settings:
        cluster.settings = settings
        db.session.commit()
    return cluster


def banner(host: str, port: int, accounts) -> str:
    lines = ["", f"Hubfleet console: http://{host}:{port}/", ""]
    lines += [f"  {who:<28} {email:<36} password: {password}" for who, email, password in accounts]
    lines += ["", "The two demo hubs start in the background; their URLs appear on the fleet page.",
              f"Demo hubs serve on {DEMO_IP} only, with JupyterHub's dummy login: any username and any password "
              f"get in.",
              "Outside the demo a new hub admits nobody until its institution configures a login.",
              "Ctrl-C stops the console and the demo hubs; run the same command again to bring them back.", ""]
    return "\n".join(lines)


def stop_hubs(app) -> None:
    """Stop the demo cluster's hub processes, keeping their data for the next run."""
    with app.app_context():
        for hub in db.session.execute(db.select(Hub).where(Hub.state != "deleted")).unique().scalars():
            if hub.cluster.backend == "local" and hub.backend_state:
                hub_service.backend_for(hub.cluster).stop(hub.backend_state, lambda line: None)
