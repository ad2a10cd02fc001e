"""Password hashing: argon2id at OWASP's recommended cost.

argon2-cffi's default (64 MiB, 3 passes, 4 lanes) costs every login 64 MiB and ~100 ms of CPU, so a handful of
logins at once swell a web process by hundreds of MiB.  OWASP's password storage cheat sheet gives 19 MiB, 2 passes,
1 lane as an equally safe setting; hashes made at any other cost are rehashed at the next successful login.
"""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from console.models import User

_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verified against when the email is unknown, so a login costs the same either way.
_DUMMY_HASH = _hasher.hash("hubfleet-timing-equaliser")


def _bytes(password: str) -> bytes:
    # "surrogatepass": a lone surrogate typed into a form is a wrong password, not an encoding error; any other
    # string encodes as plain UTF-8.
    return password.encode("utf-8", "surrogatepass")


def hash_password(password: str) -> str:
    return _hasher.hash(_bytes(password))


def check_password(user: User | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s.  A right password whose hash was made at another cost is rehashed at
    today's (in the session, committed with the login).  An account without a password (``password_hash`` "": it
    logs in through its institution) never matches, at the same cost as an unknown email."""
    usable = user is not None and bool(user.password_hash)
    try:
        if not _hasher.verify(user.password_hash if usable else _DUMMY_HASH, _bytes(password)) or not usable:
            return False
    except (VerificationError, InvalidHashError):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return True
