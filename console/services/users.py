"""Console accounts."""
from __future__ import annotations

import re

from console.extensions import db
from console.models import INSTITUTION_ADMIN, OPERATOR, ROLES, Institution, User
from console.passwords import hash_password
from console.services import FieldErrors, audit

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
MAX_EMAIL = 254  # the column's length, and the most an address may have (RFC 5321)
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # hashing cost grows with the length; no person types more


def email_problem(email: str) -> str | None:
    """Why ``email`` (trimmed, lower-cased) cannot name an account, or None."""
    if not EMAIL_RE.match(email) or len(email) > MAX_EMAIL:
        return "Enter an email address."
    return None


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be used, or None: the one password rule, for every form that sets one."""
    if len(password or "") < MIN_PASSWORD:
        return f"Use at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"Use at most {MAX_PASSWORD} characters."
    return None


def create_user(email: str, role: str, institution: str | None, password: str, actor: str = "cli") -> User:
    """Create an account; raises FieldErrors (nothing written) for bad input. Commits."""
    email = (email or "").strip().lower()
    errors = {}
    if problem := email_problem(email):
        errors["email"] = problem
    elif db.session.execute(db.select(User.id).filter_by(email=email)).first():
        errors["email"] = f"An account {email!r} already exists."
    if role not in ROLES:
        errors["role"] = f"Choose one of {', '.join(ROLES)}."
    inst = None
    if role == INSTITUTION_ADMIN:
        inst = db.session.execute(db.select(Institution).filter_by(slug=institution or "")).scalar_one_or_none()
        if inst is None:
            errors["institution"] = f"There is no institution {institution!r}."
    elif role == OPERATOR and institution:
        errors["institution"] = "Operators are not bound to an institution."
    if problem := password_problem(password):
        errors["password"] = problem
    if errors:
        raise FieldErrors(errors)
    user = User(email=email, role=role, institution=inst, password_hash=hash_password(password))
    db.session.add(user)
    audit(actor, "user.create", email, inst.id if inst else None, role=role)
    db.session.commit()
    return user


def set_password(user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    db.session.commit()
