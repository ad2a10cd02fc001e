"""Alert email: each alert and each recovery is emailed once to the hub's alert recipients
(``console/services/contacts.py``) through the SMTP server the operator configures.

Settings (``console/config.py``): ``SMTP_HOST`` ("" turns email off), ``SMTP_PORT``, ``SMTP_SECURITY`` ("starttls",
"ssl" or "none"), ``SMTP_USERNAME`` and ``SMTP_PASSWORD`` (from the settings file or the environment only; never
shown, logged or audited), ``SMTP_FROM``, ``SMTP_TIMEOUT``.

The monitor's delivery pass (``monitoring.deliver``) calls :func:`email_alerts` after the webhooks: one connection
per pass, one plain-text message per alert event, addressed to all its recipients together.  When the server cannot
be reached or refuses, the alert keeps its place in the queue and is tried again after ``RETRY_AFTER`` (so a server
that never answers costs a pass its ``SMTP_TIMEOUT`` once a minute, not every second); the alert says so in words
that name no server, since institution admins read it, and the operator's log says what went wrong.
"""
from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid, parseaddr

from flask import current_app

from console.errors import without_server_detail
from console.extensions import db
from console.models import Alert, Contact, User, utcnow
from console.permissions import FleetReach, require, role_of
from console.services import audit
from console.services import contacts as contact_service

logger = logging.getLogger(__name__)
SECURITY = ("starttls", "ssl", "none")
RETRY_AFTER = timedelta(seconds=60)
NOT_SENT = "The email to this hub's contacts could not be sent; it is tried again."
TEST_NOT_SENT = "The test email could not be sent; an operator can find why in the console's log."


class EmailConfigError(ValueError):
    """The SMTP settings cannot work (an unknown ``SMTP_SECURITY``); said to operators, logged for the monitor."""


def enabled() -> bool:
    """Whether alert email is on (``SMTP_HOST`` set)."""
    return bool((current_app.config.get("SMTP_HOST") or "").strip())


def server_label() -> str:
    """The server as operators read it ("smtp.example.org:587, starttls"); never the credentials."""
    config = current_app.config
    return f"{config['SMTP_HOST']}:{config['SMTP_PORT']}, {config['SMTP_SECURITY']}"


@contextmanager
def connection() -> Iterator[smtplib.SMTP]:
    """An SMTP session with the configured server, secured and logged in as configured; closed on leaving.

    Raises ``OSError`` or ``smtplib.SMTPException`` when the server cannot be reached or refuses, and
    ``EmailConfigError`` for an unknown ``SMTP_SECURITY``.
    """
    config = current_app.config
    security = str(config["SMTP_SECURITY"]).lower()
    if security not in SECURITY:
        raise EmailConfigError(f"SMTP_SECURITY must be one of {', '.join(SECURITY)}, not {security!r}")
    host, port, timeout = config["SMTP_HOST"].strip(), int(config["SMTP_PORT"]), float(config["SMTP_TIMEOUT"])
    context = ssl.create_default_context()
    if security == "ssl":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    try:
        if security == "starttls":
            smtp.starttls(context=context)
        if config["SMTP_USERNAME"]:
            smtp.login(config["SMTP_USERNAME"], config["SMTP_PASSWORD"])
        yield smtp
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "—"


def _contact_line(contact: Contact) -> str:
    details = ", ".join(part for part in (contact.email, contact.phone) if part)
    scope = "this hub" if contact.hub_id is not None else "all the institution's hubs"
    return f"- {contact_service.KIND_LABELS[contact.kind]}: {contact.name} ({details}), for {scope}"


def console_link(hub_slug: str) -> str | None:
    """The hub's page on the console, from ``PUBLIC_URL`` (None without it: the monitor knows no address)."""
    base = (current_app.config.get("PUBLIC_URL") or "").strip().rstrip("/")
    if not base:
        return None
    return base + current_app.url_map.bind("localhost").build("fleet.hub", {"slug": hub_slug})


def message(alert: Alert, event: str, recipients: list[Contact], contacts: list[Contact]) -> EmailMessage:
    """The email for ``event`` ("alert" or "recovery") of ``alert`` to ``recipients``, listing the hub's
    ``contacts``; plain text.  The reason is cut of server paths and tracebacks, as institution admins read it."""
    hub = alert.hub
    institution = hub.institution
    kind = alert.kind
    if event == "alert":
        subject = f"{hub.slug} is {kind}"
        opening = f"The hub {hub.slug} of {institution.name} is {kind} since {_when(alert.started_at)}."
    else:
        subject = f"{hub.slug} has recovered"
        opening = (f"The hub {hub.slug} of {institution.name} has recovered: it was {kind} from "
                   f"{_when(alert.started_at)} to {_when(alert.resolved_at)}.")
    facts = [("Hub", hub.slug), ("Institution", f"{institution.name} ({institution.slug})"), ("Alert", kind),
             ("Reason", without_server_detail(alert.reason or "").strip() or "—"),
             ("Since", _when(alert.started_at))]
    if alert.resolved_at:
        facts.append(("Recovered", _when(alert.resolved_at)))
    facts.append(("Hub URL", hub.url or "—"))
    link = console_link(hub.slug)
    if link:
        facts.append(("Console", link))
    lines = [opening, ""] + [f"{label + ':':<13}{value}" for label, value in facts]
    lines += ["", "Contacts of this hub:"] + [_contact_line(c) for c in contacts]
    lines += ["", f"You receive this email as a contact of {institution.name} for {hub.slug} on Hubfleet."]
    mail = EmailMessage()
    mail["Subject"] = f"[Hubfleet] {subject}"
    mail["From"] = current_app.config["SMTP_FROM"]
    mail["To"] = ", ".join(formataddr((c.name, c.email)) for c in recipients)
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid(domain=parseaddr(current_app.config["SMTP_FROM"])[1].rpartition("@")[2] or None)
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to the console
    mail.set_content("\n".join(lines) + "\n")
    return mail


def _pending() -> list[Alert]:
    return list(db.session.execute(db.select(Alert).where(
        Alert.emailed_at.is_(None) | (Alert.resolved_at.is_not(None) & Alert.recovery_emailed_at.is_(None)))
        .order_by(Alert.id)).unique().scalars())


def email_alerts(now: datetime | None = None) -> int:
    """Email every alert and recovery not yet emailed to its hub's recipients; returns how many messages went.

    Nothing happens while email is off.  An alert that came and went before it was emailed is not emailed at all;
    one whose hub has nobody to receive it waits (it is emailed once someone does, while it is open); a recovery
    nobody receives is dropped.  A failed try
    is recorded on the alert (``email_tried_at``, ``email_error``) and retried after ``RETRY_AFTER``.  Commits.
    """
    if not enabled():
        return 0
    now = now or utcnow()
    due = []
    for alert in _pending():
        event = "alert" if alert.emailed_at is None else "recovery"
        if event == "alert" and alert.resolved_at is not None:
            alert.emailed_at = alert.recovery_emailed_at = now  # came and went between passes: say nothing
            continue
        if alert.email_tried_at is not None and now - alert.email_tried_at < RETRY_AFTER:
            continue
        due.append((alert, event))
    recipients = contact_service.recipients_by_hub([alert.hub for alert, _ in due])
    for alert, event in due:
        if event == "recovery" and not recipients.get(alert.hub_id):
            alert.recovery_emailed_at = now  # its contacts are gone: a recovery nobody receives is not kept waiting
    due = [(alert, event) for alert, event in due if recipients.get(alert.hub_id)]
    sent = 0
    if due:
        everyone = contact_service.all_by_hub([alert.hub for alert, _ in due])
        try:
            with connection() as smtp:
                for alert, event in due:
                    try:
                        mail = message(alert, event, recipients[alert.hub_id], everyone[alert.hub_id])
                        refused = smtp.send_message(mail)
                    except smtplib.SMTPRecipientsRefused as exc:
                        _failed(alert, now, f"every recipient was refused: {sorted(exc.recipients)}")
                        continue
                    except (ValueError, smtplib.SMTPDataError) as exc:  # this message, not the session
                        _failed(alert, now, f"{type(exc).__name__}: {exc}")
                        continue
                    if refused:
                        logger.warning("alert %s: the SMTP server refused %s", alert.id, sorted(refused))
                    _sent(alert, event, now)
                    sent += 1
        except (OSError, smtplib.SMTPException, EmailConfigError) as exc:
            for alert, event in due:
                if (alert.emailed_at if event == "alert" else alert.recovery_emailed_at) is None:
                    _failed(alert, now, f"{type(exc).__name__}: {exc}")
    db.session.commit()
    return sent


def _sent(alert: Alert, event: str, now: datetime) -> None:
    if event == "alert":
        alert.emailed_at = now
    else:
        alert.recovery_emailed_at = now
    alert.email_tried_at, alert.email_error = None, ""


def _failed(alert: Alert, now: datetime, why: str) -> None:
    alert.email_tried_at, alert.email_error = now, NOT_SENT
    logger.warning("alert %s (hub %s) could not be emailed via %s: %s", alert.id, alert.hub.slug, server_label(), why)


def send_test(user: User) -> str | None:
    """Email a test message to ``user``'s own address now; None when the server took it, else why not: the
    server's own words for an operator, a sentence naming no server for anyone else.  Audited; commits.
    ``PermissionDenied`` unless the user may edit contacts."""
    require(user, "contact.edit")
    operator = isinstance(role_of(user).reach, FleetReach)
    if not enabled():
        problem = "Email is off: the operator has set no SMTP server (SMTP_HOST)."
    else:
        mail = EmailMessage()
        mail["Subject"] = "[Hubfleet] test email"
        mail["From"] = current_app.config["SMTP_FROM"]
        mail["To"] = user.email
        mail["Date"] = formatdate(usegmt=True)
        mail["Auto-Submitted"] = "auto-generated"
        mail.set_content(f"This is a test email from Hubfleet, sent at {_when(utcnow())} at the request of "
                         f"{user.email}.\nAlerts about hubs reach their contacts the same way.\n")
        try:
            with connection() as smtp:
                smtp.send_message(mail)
            problem = None
        except (OSError, smtplib.SMTPException, EmailConfigError) as exc:
            logger.warning("test email to %s via %s failed: %s: %s", user.email, server_label(),
                           type(exc).__name__, exc)
            problem = f"Not sent via {server_label()}: {type(exc).__name__}: {exc}" if operator else TEST_NOT_SENT
    audit(user.email, "email.test", user.email, user.institution_id, sent=problem is None)
    db.session.commit()
    return problem
