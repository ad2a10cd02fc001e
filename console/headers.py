"""Security headers on every response: what a page may load, who may frame it, how browsers treat its type.

Pages load one script, htmx, from ``/static``, and no inline script, so scripts need no ``'unsafe-inline'``.  The
one inline stylesheet (``base.html``) is allowed by its SHA-256 (the ``inline_style`` filter records it), not by a
nonce: htmx parses a whole page it fetched to pick a fragment out of it, and Chromium checks that page's
``<style>`` against the policy of the page doing the parsing, which a fresh nonce would fail.  Style attributes stay
allowed (``style-src-attr``): they cannot run code, and images (the one way CSS could send data out) may only come
from this site.
"""
from __future__ import annotations

import base64
import hashlib

from flask import request
from markupsafe import Markup

_HASHES = "hubfleet.csp_style_hashes"


def inline_style(css: str) -> Markup:
    """Jinja filter: ``{% filter inline_style %}...{% endfilter %}`` is a ``<style>`` element this response's
    policy allows."""
    digest = base64.b64encode(hashlib.sha256(str(css).encode()).digest()).decode()
    request.environ.setdefault(_HASHES, set()).add(f"'sha256-{digest}'")
    return Markup("<style>") + Markup(css) + Markup("</style>")


def content_security_policy(style_hashes) -> str:
    styles = " ".join(["'self'", *sorted(style_hashes)])
    return "; ".join((
        "default-src 'self'", "script-src 'self'", f"style-src {styles}", "style-src-attr 'unsafe-inline'",
        "img-src 'self' data:", "object-src 'none'", "base-uri 'none'", "form-action 'self'",
        "frame-ancestors 'none'"))


def add_security_headers(response):
    """``after_request`` hook (runs for error pages too)."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", content_security_policy(request.environ.get(_HASHES, ())))
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    return response


def register(app) -> None:
    app.after_request(add_security_headers)
    app.jinja_env.filters["inline_style"] = inline_style
