"""The one place that reads htmx's request headers."""
from __future__ import annotations

from flask import make_response, render_template, request


def wants_fragment() -> bool:
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-Boosted") != "true"


def render(page: str, fragment: str, status: int = 200, refresh_page: bool = False, **context):
    """Render ``fragment`` for an htmx request and ``page`` otherwise, from the same URL and context.

    ``refresh_page`` asks htmx to reload the whole page after this fragment (say, when a polled operation ends and
    everything around it changed too).
    """
    fragment_wanted = wants_fragment()
    response = make_response(render_template(fragment if fragment_wanted else page, **context), status)
    response.vary.add("HX-Request")
    if fragment_wanted and refresh_page:
        response.headers["HX-Refresh"] = "true"
    return response
