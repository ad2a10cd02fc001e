"""``hubfleet apply``: plan a fleet document, print the plan, apply it once confirmed (console/services/fleet_code.py)."""
from __future__ import annotations

import json
from typing import IO, Any

import click
from werkzeug.exceptions import Conflict

from console.extensions import db
from console.models import User
from console.permissions import PermissionDenied
from console.services import FieldErrors, fleet_code

HEADINGS = {fleet_code.CREATE: "Create", fleet_code.CHANGE: "Change", fleet_code.DELETE: "Delete"}


def _value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def plan_text(plan: fleet_code.Plan) -> str:
    """The plan for a person: changes grouped by create, change, delete, each changed field with before -> after."""
    if plan.empty:
        return "Nothing to change: the fleet is as the document says.\n"
    lines = []
    for action in (fleet_code.CREATE, fleet_code.CHANGE, fleet_code.DELETE):
        group = [c for c in plan.changes if c.action == action]
        if not group:
            continue
        lines.append(f"{HEADINGS[action]} ({len(group)}):")
        for change in group:
            lines.append(f"  {change.kind} {change.name}")
            for name, values in change.fields.items():
                shown = _value(values["after"]) if action == fleet_code.CREATE else \
                    f"{_value(values['before'])} -> {_value(values['after'])}"
                lines.append(f"      {name}: {shown}")
    summary = plan.as_dict()["summary"]
    lines.append(f"Plan: {summary['create']} to create, {summary['change']} to change, {summary['delete']} to "
                 "delete.")
    return "\n".join(lines) + "\n"


def _errors(errors: dict[str, str]) -> None:
    for path, message in errors.items():
        click.echo(f"error: {path}: {message}", err=True)


def run_apply(file: IO[str], email: str, yes: bool) -> int:
    """Read, plan, print, confirm, apply; returns the exit status (0 applied or nothing to do, 1 declined or the
    fleet changed meanwhile, 2 an invalid document or account)."""
    user = db.session.execute(db.select(User).filter_by(email=email.strip().lower())).unique().scalar_one_or_none()
    if user is None:
        click.echo(f"error: no account {email!r}", err=True)
        return 2
    try:
        document = json.load(file)
    except ValueError as exc:
        click.echo(f"error: {getattr(file, 'name', 'the file')} is not JSON: {exc}", err=True)
        return 2
    try:
        plan = fleet_code.plan(user, document)
    except FieldErrors as exc:
        _errors(exc.errors)
        click.echo("Nothing was changed.", err=True)
        return 2
    except PermissionDenied as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    click.echo(plan_text(plan), nl=False)
    if plan.empty:
        return 0
    if not yes and not click.confirm("Apply these changes?", default=False):
        click.echo("Nothing was changed.")
        return 1
    try:
        applied = fleet_code.apply(user, document, plan.digest)
    except Conflict as exc:
        click.echo(f"error: {exc.description}", err=True)
        return 1
    except FieldErrors as exc:
        _errors(exc.errors)
        return 2
    click.echo(f"Applied {len(applied.changes)} change(s).")
    for slug, admin in applied.first_admins.items():
        # shown this once, as the hub page does when a hub is created for an institution without a login
        click.echo(f"hub {slug}: first admin {admin['username']}, password {admin['password']} (shown once)")
    if applied.operations:
        click.echo("Queued operations: " + ", ".join(str(op) for op in applied.operations))
    return 0
