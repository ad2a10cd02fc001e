"""Institutions and clusters: the things hubs belong to and run on."""
from __future__ import annotations

from werkzeug.exceptions import Forbidden

from console.extensions import db
from console.models import Cluster, Institution, User
from console.services import FieldErrors, audit
from console.services.hubs import SLUG_RE, SLUG_RULE


def create_institution(user: User, slug: str | None, name: str | None) -> Institution:
    """Create an institution; operators only. Raises FieldErrors (nothing written) for bad input."""
    if not user.is_operator:
        raise Forbidden("only operators create institutions")
    slug, name = (slug or "").strip(), (name or "").strip()
    errors = {}
    if not slug:
        errors["slug"] = "A slug is required."
    elif not SLUG_RE.match(slug):
        errors["slug"] = f"Use {SLUG_RULE}."
    elif db.session.execute(db.select(Institution.id).filter_by(slug=slug)).first():
        errors["slug"] = f"An institution named {slug!r} already exists."
    if not name:
        errors["name"] = "A name is required."
    elif len(name) > 200:
        errors["name"] = "Use at most 200 characters."
    if errors:
        raise FieldErrors(errors)
    institution = Institution(slug=slug, name=name)
    db.session.add(institution)
    db.session.flush()
    audit(user.email, "institution.create", slug, institution.id)
    db.session.commit()
    return institution


def ensure_local_cluster(name: str, data_dir: str, port_range, ip: str) -> Cluster:
    """The local cluster called ``name``, created if missing (hubs under ``<data_dir>/clusters/<name>``). Commits."""
    cluster = db.session.execute(db.select(Cluster).filter_by(name=name)).scalar_one_or_none()
    if cluster is None:
        cluster = Cluster(name=name, backend="local", state="ready",
                          settings={"root": f"{data_dir}/clusters/{name}/hubs", "port_range": list(port_range),
                                    "ip": ip})
        db.session.add(cluster)
        db.session.commit()
    return cluster
