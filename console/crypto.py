"""Secrets at rest: Fernet tokens under a rotatable list of keys (MultiFernet).

``ENCRYPTION_KEYS`` (setting or ``HUBFLEET_ENCRYPTION_KEYS``, comma-separated) lists Fernet keys, newest first: the
first encrypts, all decrypt.  Without it a key is generated once into the data dir.  To rotate, put a new key first,
run ``hubfleet secrets rotate`` (re-encrypts everything with it), then drop the old key.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app


def load_keys(app) -> None:
    keys = app.config.get("ENCRYPTION_KEYS")
    if isinstance(keys, str):
        keys = [k.strip() for k in keys.split(",") if k.strip()]
    if not keys:
        path = Path(app.config["DATA_DIR"]) / "encryption_key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(Fernet.generate_key().decode())
        keys = [path.read_text().strip()]
    app.extensions["hubfleet_fernet"] = MultiFernet([Fernet(k) for k in keys])


def _fernet() -> MultiFernet:
    return current_app.extensions["hubfleet_fernet"]


def encrypt_json(value: dict) -> str:
    """Encrypt a dict of secrets; an empty dict becomes ''."""
    return _fernet().encrypt(json.dumps(value, sort_keys=True).encode()).decode() if value else ""


def decrypt_json(token: str | None) -> dict:
    """Decrypt what :func:`encrypt_json` made; raises ``InvalidToken`` when no configured key fits."""
    return json.loads(_fernet().decrypt(token.encode())) if token else {}


def service_key() -> str:
    """The key Kubernetes hubs' read-only service tokens are derived from (clusters/kubernetes.py
    ``KubernetesBackend.service_token``: an HMAC of the hub's id under it), so the console needs to store none.

    It is an HMAC of a fixed label under the console's ``SECRET_KEY``, not under ``ENCRYPTION_KEYS``: rotating the
    encryption keys (``hubfleet secrets rotate``, then dropping the old key) must not change a token a running hub
    was deployed with, or its servers would go unlisted until its next deploy.  A new ``SECRET_KEY`` does change
    every such token; each hub takes its new one at its next deploy (restart).  The backend never sees
    ``SECRET_KEY`` itself."""
    secret = current_app.config["SECRET_KEY"]
    return hmac.new(secret.encode() if isinstance(secret, str) else secret,
                    b"hubfleet: Kubernetes hubs' service tokens", hashlib.sha256).hexdigest()


def rotate(token: str) -> str:
    """Re-encrypt under the newest key."""
    return _fernet().rotate(token.encode()).decode() if token else ""


__all__ = ["InvalidToken", "decrypt_json", "encrypt_json", "load_keys", "rotate", "service_key"]
