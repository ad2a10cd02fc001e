"""Service functions: the console's domain logic, shared by pages, API, CLI and worker.

Each takes the acting user explicitly, checks what that user may do (``console.permissions.require``), and either
changes the database and returns the result, or raises :class:`FieldErrors` (bad input; nothing changed),
``werkzeug.exceptions.NotFound`` (nothing the user may see by that name) or ``console.permissions.PermissionDenied``.
"""
from __future__ import annotations

from console.extensions import db
from console.models import AuditEvent


class FieldErrors(ValueError):
    """Input that cannot be accepted, as {field: message}; the caller shows each message beside its field."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


def audit(actor: str, action: str, target: str, institution_id: int | None = None, **detail) -> None:
    """Add an audit event to the session (committed with the change it records). ``detail`` must hold no secret."""
    db.session.add(AuditEvent(actor=actor, action=action, target=target, institution_id=institution_id,
                              detail=detail))
