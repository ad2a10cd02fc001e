"""Error responses: JSON under /api/, HTML pages elsewhere; and what of an error's text an institution admin reads."""
from __future__ import annotations

import re

from flask import current_app, g, jsonify, render_template
from werkzeug.exceptions import Forbidden, HTTPException, RequestEntityTooLarge, UnprocessableEntity

from console.extensions import api, db
from console.limits import BadJson
from console.models import User
from console.permissions import FleetReach, PermissionDenied, actor_label, role_of
from console.security import is_api_request
from console.services import FieldErrors


_TRACEBACK = re.compile(r"^\s*Traceback \(most recent call last\):\s*$")
_FRAME = re.compile(r'^\s*File "[^"]*", line \d+')
# an absolute path of two parts or more; not part of a URL ("https://host/a/b") or of a relative path, and not one
# of JupyterHub's own URL paths ("/hub/health answered 503")
_PATH = re.compile(r"(?<![\w.:/~-])/(?!hub/|user/|services/)(?:[\w.@+~-]+/)+([\w.@+~-]*)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def without_server_detail(text: str) -> str:
    """``text`` without tracebacks and with every absolute path cut to its last part (``…/jupyterhub_config.py``):
    a hub's log tail, an exception's words.  Pure."""
    kept, in_frame = [], False
    for line in (text or "").split("\n"):
        if _TRACEBACK.match(line):
            continue
        if _FRAME.match(line):
            in_frame = True  # the frame's source line follows, indented further
            continue
        if in_frame and line.startswith("    "):
            in_frame = False
            continue
        in_frame = False
        kept.append(_PATH.sub(lambda match: f"…/{match.group(1)}", line))
    return "\n".join(kept)


def shown(text: str | None) -> str:
    """What the person asking may read of a message the console, a worker or a hub wrote (operation errors and
    logs, hub status, alert reasons): all of it for a fleet-wide role; for an institution admin no server path, no
    traceback, and no email of a console user they may not see (their role instead).  Jinja filter ``shown``."""
    text = text or ""
    viewer = g.get("user")
    if viewer is None or isinstance(role_of(viewer).reach, FleetReach):
        return text
    text = without_server_detail(text)
    emails = set(_EMAIL.findall(text))
    if emails:
        people = set(db.session.execute(db.select(User.email).where(User.email.in_(emails))).scalars())
        text = _EMAIL.sub(lambda m: actor_label(viewer, m.group()) if m.group() in people else m.group(), text)
    return text


def field_errors_response(exc: FieldErrors):
    """422 in flask-smorest's shape, so schema errors and service errors look alike to a client (400 for a body
    that is not JSON at all).  A page's own form errors are shown beside its fields by its view; what reaches here
    on a page (a request refused before any view ran) gets the error page naming each field."""
    code, status = (400, "Bad Request") if isinstance(exc, BadJson) else (422, "Unprocessable Entity")
    if not is_api_request():
        error = UnprocessableEntity("; ".join(f"{field}: {message}" for field, message in exc.errors.items()))
        return render_template("error.html", error=error), 422
    response = jsonify(code=code, status=status,
                       errors={"json": {field: [message] for field, message in exc.errors.items()}})
    response.status_code = code
    return response


def too_large(exc: RequestEntityTooLarge):
    """413, saying what the limit is; the API names the body as the field at fault."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
    exc.description = (f"The request is larger than the console accepts ({limit // 1024} KiB): send less at once."
                       if limit else "The request is larger than the console accepts.")
    if is_api_request():
        response = jsonify(code=413, status="Payload Too Large", message=exc.description,
                           errors={"json": {"_schema": [exc.description]}})
        response.status_code = 413
        return response
    return render_template("error.html", error=exc), 413


def register(app) -> None:
    app.jinja_env.filters["shown"] = shown

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if is_api_request():
            if not getattr(exc, "data", None) and exc.description != type(exc).description:
                exc.data = {"message": exc.description}  # a service's sentence ("… retract it instead.") reaches clients
            return api.handle_http_exception(exc)
        return render_template("error.html", error=exc), exc.code

    app.register_error_handler(RequestEntityTooLarge, too_large)
    app.register_error_handler(FieldErrors, field_errors_response)

    @app.errorhandler(PermissionDenied)
    def permission_denied(exc: PermissionDenied):
        return http_error(Forbidden(str(exc)))
