"""Institutions and clusters: the things hubs belong to and run on."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from console.extensions import db
from console.models import Cluster, Institution, User
from console.permissions import require
from console.services import FieldErrors, audit
from console.services.hubs import SLUG_RE, SLUG_RULE


def create_institution(user: User, slug: str | None, name: str | None) -> Institution:
    """Create an institution (institution.create). Raises FieldErrors (nothing written) for bad input."""
    require(user, "institution.create")
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


MAX_BLACKOUTS = 100


def blackout_time(value: Any) -> datetime:
    """An ISO date-time as naive UTC, how times are stored (``models.utcnow``): one with an offset is converted
    (``2030-01-01T10:00+05:30`` is 04:30 UTC), not stripped of it; one without is taken as UTC already.  Raises
    ValueError or TypeError when it is none."""
    when = datetime.fromisoformat(value)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


def set_blackouts(user: User, institution: Institution, windows: Any) -> list[dict]:
    """Replace an institution's blackout windows ([{"start", "end", "reason"}], ISO times, stored in UTC).

    Raises FieldErrors (nothing written) for a malformed window, at most :data:`MAX_BLACKOUTS`.  Audited; commits.
    """
    require(user, "blackout.set", institution)
    clean = clean_blackouts(windows)
    institution.blackouts = clean
    audit(user.email, "institution.blackouts", institution.slug, institution.id, windows=clean)
    db.session.commit()
    return clean


def clean_blackouts(windows: Any) -> list[dict]:
    """Blackout windows as they are stored (ISO times in UTC, reasons cut to 200 characters); FieldErrors keyed
    ``blackouts.<index>[.<field>]`` for a malformed window, at most :data:`MAX_BLACKOUTS`.  Pure."""
    errors, clean = {}, []
    if not isinstance(windows, list):
        raise FieldErrors({"blackouts": "Send a list of windows."})
    if len(windows) > MAX_BLACKOUTS:
        raise FieldErrors({"blackouts": f"At most {MAX_BLACKOUTS} windows."})
    for index, window in enumerate(windows):
        try:
            start, end = blackout_time(window["start"]), blackout_time(window["end"])
        except (KeyError, TypeError, ValueError, AttributeError):
            errors[f"blackouts.{index}"] = "Give start and end as ISO date-times."
            continue
        if end <= start:
            errors[f"blackouts.{index}.end"] = "The end must come after the start."
        reason = window.get("reason") or ""
        if not isinstance(reason, str):
            errors[f"blackouts.{index}.reason"] = "Enter text."
        clean.append({"start": start.isoformat(), "end": end.isoformat(), "reason": str(reason)[:200]})
    if errors:
        raise FieldErrors(errors)
    return clean
