"""Bounds on what one request may send, checked before any view or schema sees it.

No text anywhere in a request (path, query, form, JSON) may hold a NUL character or a lone surrogate (``"\\ud800"``):
no database stores them.  The body is capped by ``MAX_CONTENT_LENGTH`` (Werkzeug answers 413 before reading further;
``console/errors.py`` words it).  A JSON body is parsed here once and refused with a field error when it nests
deeper than ``MAX_JSON_DEPTH``, holds a number beyond 64 bits (or not finite) or a list longer than
``MAX_JSON_ITEMS``.  Each of these once reached a schema, a service or the database and answered 500.  The schema
then parses the same bytes again, which these bounds make safe.
"""
from __future__ import annotations

import json
import math
from typing import Any

from flask import current_app, request
from werkzeug.routing import IntegerConverter

from console.services import FieldErrors

INT64 = 2**63 - 1


class BadJson(FieldErrors):
    """A body that is not JSON at all (400), as opposed to JSON with a value out of bounds (422)."""


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def text_problem(value: str) -> str | None:
    """Why no database would store ``value``: a NUL character (PostgreSQL refuses it) or a lone surrogate (not
    Unicode that UTF-8 can encode)."""
    if "\x00" in value:
        return "Use text without NUL characters."
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "Use text without unpaired surrogates (such as \\ud800)."
    return None


def _problem(value: Any, max_items: int) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if -INT64 - 1 <= value <= INT64 else "Use a number that fits in 64 bits."
    if isinstance(value, float):
        return None if math.isfinite(value) else "Use a finite number."
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, (list, dict)) and len(value) > max_items:
        return f"Send at most {max_items} items."
    return None


def check_document(document: Any, max_depth: int, max_items: int) -> dict[str, str]:
    """The first value out of bounds in a parsed JSON document, as {dotted path: message}; {} when all fit.

    Walks iteratively, so depth is measured without recursion.  Pure.
    """
    stack: list[tuple[str, Any, int]] = [("", document, 1)]
    while stack:
        path, value, depth = stack.pop()
        field = path or "_schema"
        problem = _problem(value, max_items)
        if problem:
            return {field: problem}
        if isinstance(value, (list, dict)) and depth > max_depth:
            return {field: f"Nest at most {max_depth} levels deep."}
        if isinstance(value, dict):
            for key, item in value.items():
                if _problem(key, max_items):
                    return {field: "Use keys without NUL characters or unpaired surrogates."}
                stack.append((f"{path}.{key}" if path else str(key), item, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}" if path else str(index), item, depth + 1)
                         for index, item in enumerate(value))
    return {}


def parse_json(data: bytes, max_depth: int, max_items: int) -> Any:
    """The parsed document; raises :class:`BadJson` when it is not JSON, FieldErrors when a value is out of bounds."""
    try:
        document = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise FieldErrors({"_schema": f"Nest at most {max_depth} levels deep."}) from None
    except UnicodeDecodeError:
        raise BadJson({"_schema": "Send the body as UTF-8 JSON."}) from None
    except ValueError as exc:  # JSONDecodeError, an int of more than 4300 digits, NaN or Infinity
        raise BadJson({"_schema": f"Send valid JSON ({str(exc).split(':')[0]})."}) from None
    errors = check_document(document, max_depth, max_items)
    if errors:
        raise FieldErrors(errors)
    return document


def check_request() -> None:
    """``before_request`` hook: refuse a path, query, form or JSON body out of bounds with a field error (nothing
    is written: no view has run yet)."""
    sources = {"path": (request.view_args or {}).items(), "query": request.args.items(multi=True),
               "form": request.form.items(multi=True)}
    for where, items in sources.items():
        for field, value in items:
            if text_problem(field):
                raise FieldErrors({where: text_problem(field)})
            if isinstance(value, str) and text_problem(value):
                raise FieldErrors({field: text_problem(value)})
    has_body = request.content_length or "chunked" in request.headers.get("Transfer-Encoding", "")
    if request.is_json and has_body:
        config = current_app.config
        parse_json(request.get_data(cache=True), int(config["MAX_JSON_DEPTH"]), int(config["MAX_JSON_ITEMS"]))


MAX_ID = 2**31 - 1  # the ids are "integer" columns (32 bits on PostgreSQL)


class IdConverter(IntegerConverter):
    """Flask's ``int`` converter, bounded to what the database's ids hold: a bigger id in a URL is simply not found
    (404) rather than an overflow in the query (500).  Installed as ``int``, so every route has it."""

    def __init__(self, url_map, fixed_digits=0, min=None, max=MAX_ID, signed=False):  # noqa: A002 (Werkzeug's names)
        super().__init__(url_map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)
