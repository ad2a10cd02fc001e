"""Webhooks: where alerts go, the fleet's (operators') or one institution's, each signed with a secret of its own.

A delivery is a POST through the guarded client (``tenants/outbound.py``): https to a public address unless the
operator allow-listed the host, no redirects, 3 s to connect and 10 s in all.  It carries
``X-Hubfleet-Timestamp`` and ``X-Hubfleet-Signature: sha256=<HMAC-SHA256 of "<timestamp>.<body>">`` so a receiver
can tell the console's notices from anyone else's, and a replayed one from a fresh one (docs/monitoring.md).

A webhook's URL is treated as a secret (the paths of Slack's and Teams' hooks are tokens): pages, logs and audit
entries show its origin only, and a failure is shown as one message whatever answered; the operator's log says more.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from tenants import outbound

from console.config import outbound_policy
from console.crypto import decrypt_json, encrypt_json
from console.extensions import db
from console.models import Institution, User, WebhookTarget, utcnow
from console.permissions import FLEET, require
from console.services import FieldErrors, audit

logger = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Hubfleet-Signature"
TIMESTAMP_HEADER = "X-Hubfleet-Timestamp"
FAILED = "Could not deliver to that URL."
MAX_ANSWER_BYTES = 64 * 1024  # only the status of an answer matters
MAX_PER_OWNER = 20  # webhooks of the fleet, or of one institution
# A webhook that did not take a notice is left alone this long: one that never answers costs a monitor pass its
# time budget once a minute, not on every pass.
RETRY_AFTER = timedelta(seconds=60)
PARALLEL = 16


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    return "sha256=" + hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signing_secret(target: WebhookTarget) -> str:
    """The webhook's secret in the clear ('' for a webhook added before secrets existed: its notices go unsigned)."""
    return decrypt_json(target.secret).get("signing_secret", "")


def _url(url: str | None) -> str:
    url = (url or "").strip()
    problem = outbound.problem(url, outbound_policy(current_app))
    if problem:
        raise FieldErrors({"url": problem})
    return url


def _target_name(target: WebhookTarget) -> str:
    return f"webhook {target.id} ({target.origin})"


def add(user: User, url: str | None, institution: Institution | None) -> tuple[WebhookTarget, str]:
    """Add a webhook for ``institution`` (None: the whole fleet, operators only); returns it and its signing secret,
    which is shown once and kept only encrypted.

    Commits.  Raises FieldErrors (nothing written) for a URL the guarded client would never request, or one owner
    too many; ``PermissionDenied`` when the user may not add webhooks there.
    """
    require(user, "webhook.add", institution or FLEET)
    url = _url(url)
    owner = WebhookTarget.institution_id == institution.id if institution else WebhookTarget.institution_id.is_(None)
    if db.session.scalar(db.select(db.func.count()).select_from(WebhookTarget).where(owner)) >= MAX_PER_OWNER:
        raise FieldErrors({"url": f"At most {MAX_PER_OWNER} webhooks each; delete one first."})
    secret = new_secret()
    target = WebhookTarget(url=url, institution=institution, created_by=user.email,
                           secret=encrypt_json({"signing_secret": secret}))
    db.session.add(target)
    db.session.flush()
    audit(user.email, "webhook.add", _target_name(target), institution.id if institution else None)
    db.session.commit()
    return target, secret


def edit(user: User, target: WebhookTarget, url: str | None) -> None:
    """Point the webhook at another URL; its secret stays.  Commits.  Raises FieldErrors (nothing written)."""
    require(user, "webhook.add", target)
    before = target.origin
    target.url = _url(url)
    target.last_delivery_at = target.last_delivery_ok = None
    audit(user.email, "webhook.edit", _target_name(target), target.institution_id, was=before)
    db.session.commit()


def delete(user: User, target: WebhookTarget) -> None:
    """Remove the webhook.  Commits."""
    require(user, "webhook.add", target)
    audit(user.email, "webhook.delete", _target_name(target), target.institution_id)
    db.session.delete(target)
    db.session.commit()


def renew_secret(user: User, target: WebhookTarget) -> str:
    """Give the webhook a new signing secret (the old one stops at once) and return it, to be shown once.  Commits."""
    require(user, "webhook.add", target)
    secret = new_secret()
    target.secret = encrypt_json({"signing_secret": secret})
    audit(user.email, "webhook.secret", _target_name(target), target.institution_id)
    db.session.commit()
    return secret


def send_test(user: User, target: WebhookTarget) -> bool:
    """POST a signed ``{"event": "test"}`` notice to the webhook now; whether it took it (answered 2xx).  Commits."""
    require(user, "webhook.add", target)
    [taken] = post_all([(target, {"event": "test", "alert": None})], retry_all=True)
    audit(user.email, "webhook.test", _target_name(target), target.institution_id, delivered=taken)
    db.session.commit()
    return taken


def targets_for(institution_id: int) -> list[WebhookTarget]:
    """The webhooks a notice about a hub of ``institution_id`` goes to: the fleet's and the institution's."""
    return list(db.session.execute(db.select(WebhookTarget).where(
        WebhookTarget.institution_id.is_(None) | (WebhookTarget.institution_id == institution_id))
        .order_by(WebhookTarget.id)).unique().scalars())


def resting(target: WebhookTarget, now: datetime) -> bool:
    """Whether the webhook failed less than ``RETRY_AFTER`` ago, and so is not tried on this pass."""
    return target.last_delivery_ok is False and target.last_delivery_at is not None and \
        now - target.last_delivery_at < RETRY_AFTER


def post_all(notices: list[tuple[WebhookTarget, dict[str, Any]]], retry_all: bool = False) -> list[bool]:
    """POST each ``(webhook, payload)`` signed, at most ``PARALLEL`` at once; whether each was taken (2xx).

    Webhooks that failed lately are skipped (not taken) unless ``retry_all``.  Records each webhook's last delivery
    and logs a failure's cause with the webhook's origin; the caller commits.  Takes at most about one request's
    time budget (10 s) for up to ``PARALLEL`` notices.
    """
    now = utcnow()
    policy = outbound_policy(current_app)
    due = [i for i, (target, _) in enumerate(notices) if retry_all or not resting(target, now)]

    def request(index: int) -> tuple[str, bytes, dict[str, str]]:
        target, payload = notices[index]
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "hubfleet-webhook"}
        secret = signing_secret(target)
        if secret:
            stamp = int(time.time())
            headers.update({TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(secret, stamp, body)})
        return target.url, body, headers

    def post(prepared: tuple[str, bytes, dict[str, str]]) -> str | None:
        url, body, headers = prepared
        try:
            answer = outbound.request("POST", url, policy, content=body, headers=headers,
                                      max_bytes=MAX_ANSWER_BYTES)
        except outbound.Refused as exc:
            return str(exc)
        return None if 200 <= answer.status < 300 else f"answered {answer.status}"

    prepared = [request(i) for i in due]  # secrets are decrypted here, in the app context, not in the pool
    with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL, len(prepared)))) as pool:
        failures = list(pool.map(post, prepared))
    taken = [False] * len(notices)
    for index, failure in zip(due, failures):
        target = notices[index][0]
        target.last_delivery_at, target.last_delivery_ok = now, failure is None
        taken[index] = failure is None
        if failure:
            logger.warning("%s did not take a notice: %s", _target_name(target), failure)
    return taken
