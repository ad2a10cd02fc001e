"""The login of a closed hub: it admits the hub's generated first admin and nobody else.

Standard library and JupyterHub only: the file runs inside the hub (local hubs import it beside their config file;
Kubernetes hubs get its text as the chart's ``hub.extraConfig``), where Hubfleet is not installed.
"""
import asyncio
import hashlib
import hmac

from jupyterhub.auth import Authenticator
from traitlets import Unicode


def password_matches(password, stored):
    """Whether ``password`` hashes to ``stored``: "scrypt", n, r, p, salt and hash joined by "$", as tenants/auth.py
    writes it."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=128 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), expected)


class FirstAdminAuthenticator(Authenticator):
    """Closed by default: admits the hub's first admin (a generated username and password, of which only a hash is
    kept) and nobody else; nobody at all when the hub has no first admin."""

    admin_username = Unicode("", config=True)
    admin_password_hash = Unicode("", config=True)

    async def authenticate(self, handler, data):
        username, password = data.get("username") or "", data.get("password") or ""
        if not self.admin_username or not hmac.compare_digest(username.encode(), self.admin_username.encode()):
            return None
        if not await asyncio.to_thread(password_matches, password, self.admin_password_hash):
            return None
        return self.admin_username
