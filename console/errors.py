"""Error responses: JSON under /api/, HTML pages elsewhere."""
from __future__ import annotations

from flask import jsonify, render_template
from werkzeug.exceptions import HTTPException

from console.extensions import api
from console.security import is_api_request
from console.services import FieldErrors


def field_errors_response(exc: FieldErrors):
    """422 in flask-smorest's shape, so schema errors and service errors look alike to a client."""
    response = jsonify(code=422, status="Unprocessable Entity",
                       errors={"json": {field: [message] for field, message in exc.errors.items()}})
    response.status_code = 422
    return response


def register(app) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if is_api_request():
            if not getattr(exc, "data", None) and exc.description != type(exc).description:
                exc.data = {"message": exc.description}  # a service's sentence ("… retract it instead.") reaches clients
            return api.handle_http_exception(exc)
        return render_template("error.html", error=exc), exc.code

    app.register_error_handler(FieldErrors, field_errors_response)
