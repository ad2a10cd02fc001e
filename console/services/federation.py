"""Federated login: the console as the OpenID provider of its hubs.

An institution that picks "federated" for its login (tenants/auth.py) has every hub log in through the console:
the hub runs OAuthenticator's GenericOAuthenticator against the endpoints here, so a person signed into the console
opens every hub they belong to without typing a password again, and the hub itself refuses whoever is not a member
(``allowed_groups = [member]``).

- Each hub is one confidential client, ``hub-<hub id>``, with a secret (and the key the hub encrypts its users' auth
  state with) kept Fernet-encrypted in ``HubClient``.  Its one redirect URI is ``<hub url>hub/oauth_callback``.
- Authorization code with PKCE (S256, required of every hub), single-use codes that live 60 s (a replayed code
  revokes the tokens issued from it), access tokens of 10 minutes, refresh tokens bound to the membership: ending a
  membership revokes the person's tokens at its hubs, so the hub's next refresh (``auth_refresh_age``) fails, the
  person must log in again, and that login is refused because ``member`` is no longer in their groups.
- Claims: ``sub`` and ``preferred_username`` are the person's username (minted once, never reused); ``groups`` holds
  this hub's groups only (``member``, ``hub-admin``), computed for the client asking, never another hub's.
- ID tokens are signed RS256 with a key kept encrypted in ``SigningKey``, published at the JWKS endpoint.

Only hashes of codes and tokens are stored.  The issuer is the ``PUBLIC_URL`` setting and must never change.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo, UserInfoEndpoint
from authlib.oidc.core.grants import OpenIDCode
from flask import current_app
from joserfc.jwk import RSAKey
from sqlalchemy import exc, update

from clusters import lifecycle
from console.crypto import decrypt_json, encrypt_json
from console.extensions import db
from console.models import (INSTITUTION_ADMIN, Hub, HubClient, Membership, OAuthCode, OAuthToken, SigningKey, User,
                            utcnow)

SCOPES = ("openid", "profile", "email", "groups")
MEMBER_GROUP, ADMIN_GROUP = "member", "hub-admin"
CODE_SECONDS = 60
ACCESS_SECONDS = 600
REFRESH_DAYS = 14  # as long as a hub's own login cookie
ALGORITHM = "RS256"
CALLBACK = "hub/oauth_callback"


class NotConfigured(RuntimeError):
    """Federated login needs the console's public address (``PUBLIC_URL``): hubs and browsers must reach it."""


def issuer() -> str:
    """The console's issuer URL (``PUBLIC_URL`` without its trailing slash).  Raises NotConfigured without one."""
    url = (current_app.config.get("PUBLIC_URL") or "").strip().rstrip("/")
    if not url:
        raise NotConfigured("Federated login needs the console's public address: set PUBLIC_URL "
                            "(HUBFLEET_PUBLIC_URL) to the URL hubs and browsers reach the console at.")
    return url


def endpoints() -> dict[str, str]:
    base = issuer()
    return {"authorization_endpoint": f"{base}/oauth/authorize", "token_endpoint": f"{base}/oauth/token",
            "userinfo_endpoint": f"{base}/oauth/userinfo", "jwks_uri": f"{base}/oauth/jwks"}


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


# -- hubs' clients ---------------------------------------------------------------------------------------------------


def client_id_of(hub: Hub) -> str:
    return f"hub-{hub.id}"


def callback_of(hub: Hub) -> str | None:
    if not hub.url:
        return None
    return (hub.url if hub.url.endswith("/") else hub.url + "/") + CALLBACK


def hub_client(hub: Hub) -> HubClient:
    """The hub's client, made (with a new secret and auth-state key) the first time; safe when two processes make it
    at once (the primary key keeps one, the other reads it)."""
    found = db.session.get(HubClient, hub.id)
    if found is not None:
        return found
    made = HubClient(hub_id=hub.id, secrets=encrypt_json({"client_secret": secrets.token_urlsafe(32),
                                                          "crypt_key": secrets.token_hex(32)}))
    try:
        with db.session.begin_nested():
            db.session.add(made)
    except exc.IntegrityError:
        return db.session.get(HubClient, hub.id, populate_existing=True)
    return made


def hub_login(hub: Hub) -> tuple[dict[str, Any], dict[str, str]]:
    """What a federated hub's rendered login needs: ({"issuer", "client_id", endpoints}, {"client_secret",
    "crypt_key"}).  The second part is secret: it goes to the hub through the secret channel only."""
    values = {"issuer": issuer(), "client_id": client_id_of(hub), **endpoints()}
    return values, decrypt_json(hub_client(hub).secrets)


@dataclass(frozen=True)
class Client(ClientMixin):
    """A hub as Authlib sees a client."""

    hub: Hub
    client_id: str
    secret: str
    client_metadata: dict  # Authlib's userinfo endpoint reads it (no signed userinfo here)

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return callback_of(self.hub)

    def get_allowed_scope(self, scope):
        return " ".join(s for s in (scope or "").split() if s in SCOPES)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri is not None and redirect_uri == callback_of(self.hub)

    def check_client_secret(self, client_secret):
        return hmac.compare_digest(self.secret.encode(), (client_secret or "").encode("utf-8", "surrogatepass"))

    def check_endpoint_auth_method(self, method, endpoint):
        # GenericOAuthenticator posts its secret in the body; Basic is accepted too.  Never "none": hubs are
        # confidential clients.
        return method in ("client_secret_post", "client_secret_basic")

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in ("authorization_code", "refresh_token")


def query_client(client_id: str | None) -> Client | None:
    """The live hub behind ``hub-<id>``, as a client; None for anything else."""
    prefix, _, number = (client_id or "").partition("-")
    if prefix != "hub" or not number.isdigit() or len(number) > 18:
        return None
    row = db.session.get(HubClient, int(number))
    if row is None or row.hub.state == lifecycle.DELETED:
        return None
    return Client(row.hub, client_id, decrypt_json(row.secrets)["client_secret"], {})


# -- people and their groups -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """A person signing into one hub: Authlib's "user", carrying the hub so the claims can be the hub's own."""

    user: User
    hub: Hub

    def get_user_id(self):
        return self.user.id


def groups_for(user: User, hub: Hub) -> list[str]:
    """``user``'s groups on ``hub``, and only there: ``member`` while an active membership reaches the hub (its own
    or all of its institution's hubs) or they are the institution's admin; ``hub-admin`` for a hub-admin grant or the
    institution's admin."""
    admin = user.role == INSTITUTION_ADMIN and user.institution_id == hub.institution_id
    roles = set(db.session.execute(
        db.select(Membership.role).where(Membership.user_id == user.id, Membership.active_clause(),
                                         (Membership.hub_id == hub.id)
                                         | (Membership.institution_id == hub.institution_id))).scalars())
    groups = []
    if admin or roles:
        groups.append(MEMBER_GROUP)
    if admin or "hub-admin" in roles:
        groups.append(ADMIN_GROUP)
    return groups


def user_info(person: Person, scope: str) -> UserInfo:
    """The claims a hub gets for ``scope``; ``groups`` added after ``filter`` (which keeps standard claims only)."""
    user = person.user
    info = {"sub": user.username, "preferred_username": user.username}
    if not user.email.endswith(".invalid"):
        info.update(email=user.email, email_verified=True)
    claims = UserInfo(info).filter(scope)
    if "groups" in (scope or "").split():
        claims["groups"] = groups_for(user, person.hub)
    return claims


# -- codes and tokens ------------------------------------------------------------------------------------------------


class Code:
    """An ``OAuthCode`` as Authlib reads it."""

    def __init__(self, row: OAuthCode):
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self):
        return self.row.redirect_uri

    def get_scope(self):
        return self.row.scope

    def get_nonce(self):
        return self.row.nonce or None

    def get_auth_time(self):
        return self.row.auth_time

    def get_acr(self):
        return None

    def get_amr(self):
        return None


class Token:
    """An ``OAuthToken`` as Authlib reads it."""

    def __init__(self, row: OAuthToken):
        self.row = row
        self.scope = row.scope

    def check_client(self, client):
        return self.row.client_id == client.get_client_id()

    def get_scope(self):
        return self.row.scope

    def get_expires_in(self):
        return ACCESS_SECONDS

    def is_expired(self):
        return self.row.access_expires_at <= utcnow()

    def is_revoked(self):
        return self.row.revoked_at is not None or not self.row.user.is_active

    def get_client(self):
        return query_client(self.row.client_id)

    def get_user(self):
        client = self.get_client()
        return Person(self.row.user, client.hub) if client is not None else None


def revoke_tokens(user_id: int, client_ids: list[str] | None = None, code_id: int | None = None) -> int:
    """Revoke the live tokens of ``user_id`` (at these clients, or from this code); returns how many."""
    where = [OAuthToken.user_id == user_id, OAuthToken.revoked_at.is_(None)]
    if client_ids is not None:
        where.append(OAuthToken.client_id.in_(client_ids))
    if code_id is not None:
        where.append(OAuthToken.code_id == code_id)
    done = db.session.execute(update(OAuthToken).where(*where).values(revoked_at=utcnow())
                              .execution_options(synchronize_session=False))
    return done.rowcount


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_post", "client_secret_basic"]

    def save_authorization_code(self, code, request):
        payload = request.payload.data
        db.session.add(OAuthCode(
            code_hash=_hash(code), client_id=request.client.get_client_id(), user_id=request.user.user.id,
            redirect_uri=request.payload.redirect_uri or "", scope=request.payload.scope or "",
            nonce=payload.get("nonce") or "", code_challenge=payload.get("code_challenge") or "",
            code_challenge_method=payload.get("code_challenge_method") or "plain", auth_time=int(time.time()),
            expires_at=utcnow() + timedelta(seconds=CODE_SECONDS)))
        db.session.commit()

    def query_authorization_code(self, code, client):
        row = db.session.execute(db.select(OAuthCode).where(OAuthCode.code_hash == _hash(code or ""),
                                                            OAuthCode.client_id == client.get_client_id())
                                 ).unique().scalar_one_or_none()
        if row is None:
            return None
        if row.used_at is not None:
            # A code used twice: someone replays it.  Whatever it bought is revoked.
            revoke_tokens(row.user_id, code_id=row.id)
            db.session.commit()
            return None
        if row.expires_at <= utcnow():
            return None
        return Code(row)

    def delete_authorization_code(self, authorization_code):
        authorization_code.row.used_at = utcnow()  # kept (used) until it expires, to catch a replay
        db.session.commit()

    def authenticate_user(self, authorization_code):
        user = authorization_code.row.user
        client = query_client(authorization_code.row.client_id)
        return Person(user, client.hub) if user.is_active and client is not None else None


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_post", "client_secret_basic"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        row = db.session.execute(db.select(OAuthToken).where(OAuthToken.refresh_hash == _hash(refresh_token or ""))
                                 ).unique().scalar_one_or_none()
        if row is None or row.revoked_at is not None or not row.user.is_active or \
                (row.refresh_expires_at is not None and row.refresh_expires_at <= utcnow()):
            return None
        return Token(row)

    def authenticate_user(self, refresh_token):
        return refresh_token.get_user()

    def revoke_old_credential(self, refresh_token):
        refresh_token.row.revoked_at = utcnow()
        db.session.commit()


class PkceRequired(CodeChallenge):
    """S256 PKCE from every hub, confidential or not (OAuthenticator 17 sends it)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        if not grant.request.payload.data.get("code_challenge"):
            raise InvalidRequestError("Send a PKCE code_challenge (S256).", redirect_uri=redirect_uri)
        super().validate_code_challenge(grant, redirect_uri)


class IdToken(OpenIDCode):
    def exists_nonce(self, nonce, request):
        return db.session.execute(db.select(OAuthCode.id).where(
            OAuthCode.client_id == request.payload.client_id, OAuthCode.nonce == nonce).limit(1)).first() is not None

    def resolve_client_private_key(self, client):
        return signing_key()

    def get_client_algorithm(self, client):
        return ALGORITHM

    def get_encode_header(self, client):
        return {"alg": ALGORITHM, "kid": signing_key().kid}

    def get_client_claims(self, client):
        return {"iss": issuer(), "aud": [client.get_client_id()], "exp": int(time.time()) + ACCESS_SECONDS}

    def generate_user_info(self, user, scope):
        return user_info(user, scope)


class UserInfoView(UserInfoEndpoint):
    def generate_user_info(self, user, scope):
        if user is None:
            raise InvalidRequestError("This token's hub is gone.")
        return user_info(user, scope)

    def get_issuer(self):
        return issuer()


def _save_token(token: dict, request) -> None:
    now = utcnow()
    code = getattr(request, "authorization_code", None)
    db.session.add(OAuthToken(
        client_id=request.client.get_client_id(), user_id=request.user.user.id,
        code_id=code.row.id if isinstance(code, Code) else None, access_hash=_hash(token["access_token"]),
        refresh_hash=_hash(token["refresh_token"]) if token.get("refresh_token") else None,
        scope=token.get("scope", ""), issued_at=now, access_expires_at=now + timedelta(seconds=ACCESS_SECONDS),
        refresh_expires_at=now + timedelta(days=REFRESH_DAYS)))
    db.session.commit()


class _Bearer(BearerTokenValidator):
    def authenticate_token(self, token_string):
        row = db.session.execute(db.select(OAuthToken).where(OAuthToken.access_hash == _hash(token_string or ""))
                                 ).unique().scalar_one_or_none()
        return Token(row) if row is not None else None


server = AuthorizationServer()
resource_protector = ResourceProtector()
resource_protector.register_token_validator(_Bearer())


def init_app(app) -> None:
    """Wire Authlib's server to these tables; the routes are console/views/oidc.py."""
    app.config.setdefault("OAUTH2_REFRESH_TOKEN_GENERATOR", True)
    app.config.setdefault("OAUTH2_TOKEN_EXPIRES_IN", {"authorization_code": ACCESS_SECONDS,
                                                       "refresh_token": ACCESS_SECONDS})
    app.config.setdefault("OAUTH2_SCOPES_SUPPORTED", list(SCOPES))
    server.init_app(app, query_client=query_client, save_token=_save_token)
    server.register_grant(CodeGrant, [IdToken(require_nonce=False), PkceRequired(required=True)])
    server.register_grant(RefreshGrant)
    server.register_endpoint(UserInfoView(resource_protector=resource_protector))


# -- keys and discovery ----------------------------------------------------------------------------------------------


def signing_key() -> RSAKey:
    """The newest unretired signing key, made the first time one is needed."""
    row = db.session.execute(db.select(SigningKey).where(SigningKey.retired_at.is_(None))
                             .order_by(SigningKey.id.desc()).limit(1)).scalar_one_or_none()
    if row is None:
        kid = secrets.token_hex(8)
        key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": ALGORITHM})
        row = SigningKey(kid=kid, private_jwk=encrypt_json(key.as_dict(private=True)))
        db.session.add(row)
        db.session.commit()
    return RSAKey.import_key(decrypt_json(row.private_jwk))


def jwks() -> dict[str, list]:
    """The public halves of every key not retired (a hub may hold a token signed by any of them)."""
    signing_key()  # there is always one to publish
    rows = db.session.execute(db.select(SigningKey).where(SigningKey.retired_at.is_(None))
                              .order_by(SigningKey.id)).scalars()
    return {"keys": [RSAKey.import_key(decrypt_json(row.private_jwk)).as_dict(private=False) for row in rows]}


def discovery() -> dict[str, Any]:
    """The OpenID provider's metadata (OpenID Connect Discovery 1.0)."""
    return {"issuer": issuer(), **endpoints(), "scopes_supported": list(SCOPES),
            "response_types_supported": ["code"], "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": [ALGORITHM],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "preferred_username", "email", "email_verified", "groups", "iss", "aud",
                                 "exp", "iat", "auth_time", "nonce"]}


def authorize(user: User):
    """The authorization endpoint for a signed-in ``user``: a hub's request answered with a code (hubs are the
    consortium's own: no consent screen), an error sent back to the hub when its redirect URI is known, or
    (OAuth2Error raised) one to show the person when it is not."""
    grant = server.get_consent_grant(end_user=None)
    client = grant.request.client
    return server.create_authorization_response(grant=grant, grant_user=Person(user, client.hub))


__all__ = ["OAuth2Error", "NotConfigured", "authorize", "discovery", "groups_for", "hub_client", "hub_login",
           "init_app", "jwks", "resource_protector", "revoke_tokens", "server"]
