"""Requests to URLs a person typed (an IdP's discovery document, a webhook), all through one guarded client.

Such a URL may name the console's own loopback, a cloud's metadata service or a private network behind it (SSRF), or
a server that answers slowly or without end.  So every request here:

- goes over https; plain http only to the ``host:port`` pairs an operator allow-lists (``OUTBOUND_ALLOW``);
- resolves the host once, refuses it unless every address it resolves to is public (not loopback, link-local,
  private, unique-local, CGNAT, multicast, unspecified or reserved, also when wrapped in an IPv6 address), and then
  connects to the very address it checked, keeping the host's name for the Host header and for TLS (SNI and the
  certificate check): a second lookup could answer differently (DNS rebinding).  Allow-listed hosts skip the
  address check: the operator chose them;
- follows no redirect (a 3xx is a failure like any other);
- has ``CONNECT_SECONDS`` to connect and ``TOTAL_SECONDS`` for everything, the name lookup and a server that sends
  one byte a second included, and reads at most ``max_bytes`` of the answer, streaming, stopping beyond it.

Every failure raises :class:`Refused`, whose text is for the operator's log only: callers show a person one message
per kind of request, whatever answered, so that the console cannot be used to look around a network it sits in.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

CONNECT_SECONDS = 3.0
TOTAL_SECONDS = 10.0
MAX_URL_LENGTH = 2000
# IPv6 prefixes that carry an IPv4 address the packet may end up at: checked as that IPv4 address too.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Refused(Exception):
    """The request was not made, or its answer not taken; the text says why, for the operator's log."""


@dataclass(frozen=True)
class Answer:
    """What a server answered: its status, headers and (at most ``max_bytes`` of) body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Policy:
    """The operator's choices: allow-listed ``(host, port)`` pairs, the time limits, and whom TLS trusts (httpx's
    ``verify``: the public CAs, or an ``ssl.SSLContext`` that trusts a private one)."""

    allow: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    connect_seconds: float = CONNECT_SECONDS
    total_seconds: float = TOTAL_SECONDS
    verify: Any = True

    @classmethod
    def from_setting(cls, entries: Iterable[str] | str | None, **options: Any) -> Policy:
        """Parse ``OUTBOUND_ALLOW``: a list of ``"host:port"`` (or one comma-separated string).

        Raises ``ValueError`` naming the first entry that is not ``host:port``.
        """
        if isinstance(entries, str):
            entries = [e for e in (part.strip() for part in entries.split(",")) if e]
        pairs = set()
        for entry in entries or ():
            host, _, port = str(entry).strip().rpartition(":")
            host = host.strip("[]").lower()
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"OUTBOUND_ALLOW entry {entry!r} is not host:port")
            pairs.add((host, int(port)))
        return cls(frozenset(pairs), **options)

    def allows(self, host: str, port: int) -> bool:
        return (host.lower(), port) in self.allow


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: all of it that goes into a log or onto a page (paths and queries may hold
    tokens, as Slack's and Teams' webhook URLs do; user info is a password)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "(not a URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _parse(url: str, policy: Policy) -> tuple[httpx.URL, str, int, bool]:
    """(URL, host, port, allow-listed) of a URL we may request, or raise :class:`Refused`."""
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise Refused("not a URL, or longer than 2000 characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise Refused(f"not a URL: {exc.__class__.__name__}") from None
    host, scheme = parsed.raw_host.decode("ascii").lower(), parsed.scheme  # IDNA-encoded, as DNS and TLS use it
    if scheme not in ("http", "https") or not host:
        raise Refused("not an http(s) URL with a host")
    port = parsed.port or _default_port(scheme)
    allowed = policy.allows(host, port)
    if scheme == "http" and not allowed:
        raise Refused("plain http to a host that is not allow-listed")
    return parsed, host, port, allowed


def problem(url: str, policy: Policy) -> str | None:
    """Why ``url`` can never be requested (scheme, host, allow-list, an address literal that is not public), or None.

    For checking a URL when it is saved; it looks nothing up, so a name's addresses are checked at each request.
    """
    try:
        _, host, _, allowed = _parse(url, policy)
    except Refused:
        return "Enter a full https:// URL (plain http:// only to a host:port the operator allows)."
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if allowed or is_public(address) else "Enter the URL of a public host."


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is one a request from the console may reach: globally routed, unicast, not reserved.

    An IPv6 address that wraps an IPv4 one (mapped, 6to4, Teredo, NAT64) is judged by that IPv4 address too.
    Cloud metadata services sit on link-local (169.254.169.254, fd00:ec2::254 is unique-local) or CGNAT
    (100.100.100.200) addresses, all refused here.
    """
    if isinstance(address, ipaddress.IPv6Address):
        wrapped = [address.ipv4_mapped, address.sixtofour, address.teredo[1] if address.teredo else None]
        if address in _NAT64:
            wrapped.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(inner is not None and not is_public(inner) for inner in wrapped):
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_private
                                      or address.is_loopback or address.is_link_local or address.is_unspecified)


async def _checked_address(host: str, port: int) -> str:
    """The first address ``host`` resolves to, once every address it resolves to is public."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"{host} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    refused = sorted({str(a) for a in addresses if not is_public(a)})
    if not addresses or refused:
        raise Refused(f"{host} resolves to an address that is not public: {', '.join(refused) or 'none'}")
    return str(addresses[0])


@functools.cache
def _public_cas() -> ssl.SSLContext:
    """One TLS context trusting the public CAs, made once: loading the CA bundle costs more than a request."""
    return httpx.create_ssl_context()


async def _request(method: str, url: str, policy: Policy, content: bytes, headers: Mapping[str, str],
                   max_bytes: int) -> Answer:
    parsed, host, port, allowed = _parse(url, policy)
    headers = {"Accept-Encoding": "identity", **headers}
    extensions = {}
    if not allowed:
        address = await _checked_address(host, port)
        headers["Host"] = parsed.netloc.decode("ascii")  # host[:port], without user info
        if parsed.scheme == "https":
            extensions["sni_hostname"] = host  # TLS names and verifies the host, not the address
        parsed = parsed.copy_with(host=address)
    timeout = httpx.Timeout(policy.total_seconds, connect=policy.connect_seconds)
    verify = _public_cas() if policy.verify is True else policy.verify
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False, verify=verify) as client:
        request = client.build_request(method, parsed, content=content, headers=headers, extensions=extensions)
        response = await client.send(request, stream=True)
        try:
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise Refused("answered with a compressed body though asked for none")
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise Refused(f"announced {length} bytes, over the {max_bytes} bytes allowed")
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > max_bytes:
                    raise Refused(f"answered over the {max_bytes} bytes allowed")
        finally:
            await response.aclose()
    return Answer(response.status_code, response.headers, bytes(body))


async def _bounded(method, url, policy, content, headers, max_bytes) -> Answer:
    try:
        async with asyncio.timeout(policy.total_seconds):
            return await _request(method, url, policy, content, headers, max_bytes)
    except TimeoutError:
        raise Refused(f"no complete answer within {policy.total_seconds:g} s") from None
    except httpx.HTTPError as exc:
        raise Refused(f"{exc.__class__.__name__}: {exc}") from None


def request(method: str, url: str, policy: Policy, *, content: bytes = b"", headers: Mapping[str, str] | None = None,
            max_bytes: int = 1 << 20) -> Answer:
    """Make one guarded request (see the module docstring) and return the answer, whatever its status.

    Raises :class:`Refused` when the URL or its addresses are not allowed, or when no complete answer of at most
    ``max_bytes`` came within the time limits.  Blocks for at most ``policy.total_seconds``; safe in any thread.
    """
    return asyncio.run(_bounded(method, url, policy, content, dict(headers or {}), max_bytes))
