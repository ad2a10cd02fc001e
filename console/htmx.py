"""The one place that reads htmx's request headers."""
from __future__ import annotations

from flask import make_response, render_template, request


def wants_fragment() -> bool:
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-Boosted") != "true"


def render(page: str, fragment: str, status: int = 200, **context):
    """Render ``fragment`` for an htmx request and ``page`` otherwise, from the same URL and context."""
    response = make_response(render_template(fragment if wants_fragment() else page, **context), status)
    response.vary.add("HX-Request")
    return response
