"""The console's OpenID provider endpoints, which federated hubs log in through (console/services/federation.py).

Discovery, JWKS, token and userinfo answer hubs (no session, no CSRF token: the token endpoint authenticates the
hub's client, userinfo its bearer token); the authorization endpoint answers a person's browser and needs them
signed in, like any page (the login page brings them back here).
"""
from __future__ import annotations

from flask import Blueprint, g, jsonify
from werkzeug.exceptions import BadRequest, NotFound

from console.permissions import SIGNED_IN, requires
from console.services import federation

bp = Blueprint("oidc", __name__)


def _configured(refusal=NotFound):
    try:
        federation.issuer()
    except federation.NotConfigured as exc:
        raise refusal(str(exc)) from None


@bp.get("/.well-known/openid-configuration")
def discovery():
    _configured()
    return jsonify(federation.discovery())


@bp.get("/oauth/jwks")
def jwks():
    _configured()
    return jsonify(federation.jwks())


@bp.get("/oauth/authorize")
@requires(SIGNED_IN)
def authorize():
    """A hub sends the person here; they come back to the hub with a code (errors the hub's request carries go back
    to the hub; one without a hub to go back to is shown here)."""
    _configured(BadRequest)
    try:
        return federation.authorize(g.user)
    except federation.OAuth2Error as error:
        if getattr(error, "redirect_uri", None):
            return federation.server.handle_error_response(None, error)
        raise BadRequest(f"This hub's sign-in request cannot be answered: {error.description or error.error}.") \
            from None


@bp.post("/oauth/token")
def token():
    _configured()
    return federation.server.create_token_response()


@bp.route("/oauth/userinfo", methods=["GET", "POST"])
def userinfo():
    _configured()
    return federation.server.create_endpoint_response("userinfo")
