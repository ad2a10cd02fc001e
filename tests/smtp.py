"""A real SMTP server on loopback for the alert email tests (aiosmtpd): it keeps every message it takes, and the
credentials a client logged in with."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

USERNAME, PASSWORD = "hubfleet-mailer", "smtp-password-never-shown"


class Inbox:
    """The server's handler: ``messages`` as parsed emails, ``recipients`` per message (the envelope's RCPT TO)."""

    def __init__(self):
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []
        self.raw: list[bytes] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server, session, envelope):
        self.raw.append(envelope.content)
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        login = (auth_data.login.decode(), auth_data.password.decode())
        self.logins.append(login)
        return AuthResult(success=login == (USERNAME, PASSWORD))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def local_smtp(app) -> Iterator[Inbox]:
    """A local SMTP server, and ``app`` configured to send through it (plain SMTP, logging in); yields its
    ``Inbox``."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox.authenticate,
                            auth_require_tls=False)
    controller.start()
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_SECURITY="none", SMTP_USERNAME=USERNAME,
                      SMTP_PASSWORD=PASSWORD, SMTP_FROM="alerts@hubfleet.example.org", SMTP_TIMEOUT=5)
    try:
        yield inbox
    finally:
        controller.stop()
