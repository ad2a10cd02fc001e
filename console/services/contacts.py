"""Contacts: whom to reach about an institution's hubs, and whom an alert is emailed to.

An institution has technical and administrative contacts for all its hubs; a hub may have contacts of its own.  Who
receives a hub's alerts (:func:`recipients_by_hub`):

- the hub's own contacts that receive alerts, of either kind, when it has any;
- otherwise the institution's technical contacts that receive alerts.

A hub with contacts of its own is looked after by them (a lab run by its department), so the institution's are not
woken for it; administrative contacts of the institution hear of budgets and policy, not of outages.  Whom to call
when a hub is down (the fleet page, the alerts list) is the same rule over technical contacts, whether they receive
alerts or not (:func:`technical_by_hub`).

Contacts are seen by whoever sees their institution; operators and the institution's admins change them
(``contact.edit``).  Every change is audited.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from clusters import lifecycle
from sqlalchemy.orm import lazyload
from werkzeug.exceptions import NotFound

from console.extensions import db
from console.models import CONTACT_KINDS, Contact, Hub, Institution, User, utcnow
from console.permissions import require
from console.services import FieldErrors, audit
from console.services.users import email_problem

KIND_LABELS = {"technical": "Technical", "administrative": "Administrative"}
FIELDS = ("kind", "name", "email", "phone", "receives_alerts", "hub")
MAX_NAME = 200
MAX_PHONE = 40
MAX_PER_INSTITUTION = 200  # its own and its hubs' together
# Loose on purpose: numbers are written many ways ("+1 (555) 010-0100", "030 1234567 ext. 12"); what is refused
# is what no phone could dial: letters, no digits, markup.
_PHONE_RE = re.compile(r"^\+?[0-9(][0-9 ()./-]*(?:\s*(?:x|ext\.?)\s*[0-9]{1,6})?$", re.IGNORECASE)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TRUE, _FALSE = {"on", "1", "true", "yes"}, {"", "0", "false", "no", "off"}


def _text(values: Mapping[str, Any], key: str) -> str | None:
    value = values.get(key)
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else None


def _clean(institution: Institution, values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``values`` (those present only) checked and normalised; raises FieldErrors, one message per
    field.  ``hub`` is a hub's slug ("" or None: the institution's own contact) and comes back as a ``Hub`` or
    None."""
    errors, found = {}, {}
    if "kind" in values:
        kind = _text(values, "kind")
        if kind not in CONTACT_KINDS:
            errors["kind"] = "Choose technical or administrative."
        found["kind"] = kind
    if "name" in values:
        name = _text(values, "name")
        if not name:
            errors["name"] = "A name is required."
        elif len(name) > MAX_NAME or _CONTROL_RE.search(name):
            errors["name"] = f"Use at most {MAX_NAME} characters on one line."
        found["name"] = name
    if "email" in values:
        email = _text(values, "email")
        if email is None or email_problem(email) or _CONTROL_RE.search(email):
            errors["email"] = "Enter an email address (name@example.org)."
        found["email"] = email
    if "phone" in values:
        phone = _text(values, "phone")
        digits = sum(ch.isdigit() for ch in phone or "")
        if phone is None or (phone and (len(phone) > MAX_PHONE or not _PHONE_RE.match(phone) or digits < 3)):
            errors["phone"] = "Enter a phone number: digits, spaces and + ( ) - . / only, an extension as x12."
        found["phone"] = phone
    if "receives_alerts" in values:
        flag = values["receives_alerts"]
        if isinstance(flag, str) and flag.strip().lower() in _TRUE | _FALSE:
            flag = flag.strip().lower() in _TRUE
        if not isinstance(flag, bool):
            errors["receives_alerts"] = "Answer yes or no."
        found["receives_alerts"] = flag
    if "hub" in values:
        slug = _text(values, "hub")
        hub = None
        if slug:
            hub = db.session.execute(db.select(Hub).where(
                Hub.slug == slug, Hub.institution_id == institution.id, Hub.state != lifecycle.DELETED)
            ).unique().scalar_one_or_none()
        if slug is None or (slug and hub is None):
            errors["hub"] = f"Choose one of {institution.name}'s hubs, or none for all of them."
        found["hub"] = hub
    if errors:
        raise FieldErrors(errors)
    return found


def _label(contact: Contact) -> str:
    return f"contact {contact.id} ({contact.name})"


def add(user: User, institution: Institution, values: Mapping[str, Any]) -> Contact:
    """Add a contact to ``institution`` (or to one of its hubs: ``values["hub"]``, a slug) from ``values``: kind,
    name and email required; phone ("" by default), receives_alerts (yes by default).

    Commits.  Raises FieldErrors (nothing written) for bad input or one contact too many; ``PermissionDenied``
    unless the user may edit the institution's contacts.
    """
    require(user, "contact.edit", institution)
    fields = _clean(institution, {"kind": "", "name": "", "email": "", "phone": "", "receives_alerts": True,
                                  "hub": "", **{key: values[key] for key in FIELDS if key in values}})
    count = db.session.scalar(db.select(db.func.count()).select_from(Contact)
                              .where(Contact.institution_id == institution.id))
    if count >= MAX_PER_INSTITUTION:
        raise FieldErrors({"name": f"At most {MAX_PER_INSTITUTION} contacts per institution; remove one first."})
    hub = fields.pop("hub")
    contact = Contact(institution_id=institution.id, hub_id=hub.id if hub else None, **fields)
    db.session.add(contact)
    db.session.flush()
    audit(user.email, "contact.add", _label(contact), institution.id, kind=contact.kind,
          hub=hub.slug if hub else None, receives_alerts=contact.receives_alerts)
    db.session.commit()
    return contact


def edit(user: User, contact: Contact, values: Mapping[str, Any]) -> Contact:
    """Change the fields of ``contact`` that ``values`` holds (any of ``FIELDS``; others are ignored).

    Commits (an edit that changes nothing writes nothing).  Raises FieldErrors (nothing written) for bad input;
    ``PermissionDenied`` unless the user may edit the institution's contacts.
    """
    institution = db.session.get(Institution, contact.institution_id)
    require(user, "contact.edit", institution)
    fields = _clean(institution, {key: values[key] for key in FIELDS if key in values})
    if "hub" in fields:
        hub = fields.pop("hub")
        fields["hub_id"] = hub.id if hub else None
    changed = sorted(key for key, value in fields.items() if getattr(contact, key) != value)
    if changed:
        for key in changed:
            setattr(contact, key, fields[key])
        contact.updated_at = utcnow()
        audit(user.email, "contact.edit", _label(contact), institution.id, changed=changed)
        db.session.commit()
    return contact


def remove(user: User, contact: Contact) -> None:
    """Remove the contact.  Commits.  ``PermissionDenied`` unless the user may edit the institution's contacts."""
    require(user, "contact.edit", db.session.get(Institution, contact.institution_id))
    audit(user.email, "contact.remove", _label(contact), contact.institution_id)
    db.session.delete(contact)
    db.session.commit()


def get(institution: Institution, contact_id: int) -> Contact:
    """The contact ``contact_id`` of ``institution`` (loaded as the user may reach it: ``scope.get_institution``);
    NotFound when the institution has none of that id, whoever else has it."""
    contact = db.session.execute(db.select(Contact).where(
        Contact.id == contact_id, Contact.institution_id == institution.id)).unique().scalar_one_or_none()
    if contact is None:
        raise NotFound("no contact here by that id")
    return contact


def _ordered(query):
    return query.order_by(Contact.hub_id.is_not(None), Contact.kind.desc(), Contact.name, Contact.id)


def of_institution(institution: Institution) -> list[Contact]:
    """Every contact of the institution: its own first, then its live hubs' ones; technical before
    administrative, then by name."""
    return list(db.session.execute(_ordered(
        db.select(Contact).outerjoin(Hub, Hub.id == Contact.hub_id)
        .where(Contact.institution_id == institution.id,
               Contact.hub_id.is_(None) | (Hub.state != lifecycle.DELETED)))).unique().scalars())


def of_hub(hub: Hub) -> dict[str, list[Contact]]:
    """The hub's contacts: {"own": its own, "institution": its institution's}, each technical first."""
    rows = db.session.execute(_ordered(db.select(Contact).options(lazyload(Contact.hub)).where(
        Contact.institution_id == hub.institution_id,
        (Contact.hub_id == hub.id) | Contact.hub_id.is_(None)))).unique().scalars().all()
    return {"own": [c for c in rows if c.hub_id == hub.id], "institution": [c for c in rows if c.hub_id is None]}


def hub_section(hub: Hub) -> dict[str, Any]:
    """What the hub page's contacts section shows: ``hub_contacts`` (``of_hub``), ``contact_kinds``."""
    return {"hub_contacts": of_hub(hub), "contact_kinds": KIND_LABELS}


def institution_section(institution: Institution) -> dict[str, Any]:
    """What the institution page's contacts section shows: ``contacts`` (``of_institution``), ``contact_kinds``,
    and ``contact_hubs``, the slugs a contact may be for."""
    return {"contacts": of_institution(institution), "contact_kinds": KIND_LABELS,
            "contact_hubs": hub_choices(institution)}


def hub_choices(institution: Institution) -> list[str]:
    """The slugs of the institution's live hubs: what a contact may be for besides the whole institution."""
    return list(db.session.execute(db.select(Hub.slug).where(
        Hub.institution_id == institution.id, Hub.state != lifecycle.DELETED).order_by(Hub.slug)).scalars())


def _for_hubs(hubs: Iterable[Hub], condition) -> dict[int, dict[str, list[Contact]]]:
    """Per hub, its own contacts and its institution's that meet ``condition``, in one query:
    {hub id: {"own": [...], "institution": [...]}}."""
    hubs = list(hubs)
    if not hubs:
        return {}
    hub_ids = sorted({hub.id for hub in hubs})
    institution_ids = sorted({hub.institution_id for hub in hubs})
    rows = db.session.execute(_ordered(
        db.select(Contact).options(lazyload(Contact.hub)).where(
            condition, Contact.hub_id.in_(hub_ids) |
            (Contact.hub_id.is_(None) & Contact.institution_id.in_(institution_ids))))).scalars().all()
    own, shared = defaultdict(list), defaultdict(list)
    for contact in rows:
        (own[contact.hub_id] if contact.hub_id is not None else shared[contact.institution_id]).append(contact)
    return {hub.id: {"own": own.get(hub.id, []), "institution": shared.get(hub.institution_id, [])}
            for hub in hubs}


def technical_by_hub(hubs: Iterable[Hub]) -> dict[int, list[Contact]]:
    """Whom to call about each hub: its own technical contacts, else its institution's; one query.  Jinja global
    ``contacts_to_call``."""
    return {hub_id: found["own"] or found["institution"]
            for hub_id, found in _for_hubs(hubs, Contact.kind == "technical").items()}


def recipients_by_hub(hubs: Iterable[Hub]) -> dict[int, list[Contact]]:
    """Who receives each hub's alerts (the rule in this module's docstring); one query."""
    found = _for_hubs(hubs, Contact.receives_alerts.is_(True))
    return {hub_id: f["own"] or [c for c in f["institution"] if c.kind == "technical"] for hub_id, f in found.items()}


def all_by_hub(hubs: Iterable[Hub]) -> dict[int, list[Contact]]:
    """Every contact of each hub, its own first, then its institution's; one query."""
    return {hub_id: f["own"] + f["institution"] for hub_id, f in _for_hubs(hubs, db.true()).items()}
