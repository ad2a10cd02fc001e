"""Named leases: a job only one process may do at a time (the fleet sweep), taken over when its holder stops."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError

from console.extensions import db
from console.models import Lease, utcnow


def hold(name: str, owner: str, seconds: float) -> bool:
    """Take or renew the lease ``name`` for ``seconds``; True when ``owner`` holds it now.  Commits."""
    now = utcnow()
    expires = now + timedelta(seconds=seconds)
    taken = db.session.execute(update(Lease).where(Lease.name == name, or_(Lease.owner == owner, Lease.expires < now))
                               .values(owner=owner, expires=expires)).rowcount
    db.session.commit()
    if taken:
        return True
    if db.session.get(Lease, name) is not None:
        db.session.rollback()
        return False
    try:
        db.session.add(Lease(name=name, owner=owner, expires=expires))
        db.session.commit()
        return True
    except IntegrityError:  # another process created it first
        db.session.rollback()
        return False


def release(name: str, owner: str) -> None:
    """Give the lease up at once if ``owner`` holds it (a clean stop).  Commits."""
    db.session.execute(db.delete(Lease).where(Lease.name == name, Lease.owner == owner))
    db.session.commit()
