"""Console login through each institution's own identity provider (OpenID Connect, with Authlib).

An operator gives an institution one IdP (``InstitutionIdp``): its discovery URL, a client ID and secret (encrypted at
rest, never shown again), the email domains the IdP's issuer vouches for, and a member rule (a claim and the values
that make a person a member of every hub of the institution).

A login builds one Authlib client per IdP from the database (cached per process until the IdP's settings change or
its discovery document is an hour old).  Authlib does the protocol: PKCE (S256), ``state``, the ``nonce`` and the ID
token's signature, issuer, audience and lifetime.  Every request it makes goes through the guarded outbound client
(``tenants/outbound.py``).  The state of a login under way is kept in the database (``LoginState``), bound to the
browser that started it, never in the cookie (an abandoned login would otherwise grow the cookie until logins fail,
authlib/authlib#622).  Userinfo is always called too, and must name the same ``sub`` as the ID token.

People are keyed on (issuer, sub), never on an email (``resolve``):

- a known (issuer, sub) is that identity's person;
- a person who is logged in and re-authenticates at an IdP (``link``) gets that identity added; one that belongs to
  somebody else is refused (an operator merges people);
- otherwise the identity joins an existing person only when its email is verified, its issuer is authoritative for
  the email's domain, and exactly one person holds an identity of an issuer also authoritative for that domain with
  the same verified email (audited);
- otherwise a new person (role "member" of the IdP's institution), even when another account has the same email.

``User.email`` is the password login's name and every page's and audit entry's label.  A person made by an IdP has
no password (``password_hash`` ""); their ``email`` is the email their IdP vouches for (verified, of a domain the
issuer is authoritative for) when no account has it yet, otherwise ``<username>@<institution>.invalid``: unique,
never deliverable (RFC 2606), and never a name another account could be confused with.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import FlaskIntegration, FlaskOAuth2App
from authlib.integrations.requests_client import OAuth2Session
from flask import current_app, session
from joserfc.errors import JoseError
from requests.structures import CaseInsensitiveDict
from sqlalchemy import delete

from console.config import outbound_policy
from console.crypto import decrypt_json, encrypt_json
from console.extensions import db
from console.models import MEMBER, Identity, Institution, InstitutionIdp, LoginState, User, mint_username, utcnow
from console.services import FieldErrors, audit, memberships
from tenants import outbound
from tenants.discovery import discovery_document_url
from tenants.fields import Invalid

logger = logging.getLogger(__name__)
# Authlib logs each login's PKCE verifier at DEBUG: never let it reach a log, whatever the root level.
logging.getLogger("authlib.integrations.base_client.sync_app").setLevel(logging.INFO)

DEFAULT_SCOPES = "openid profile email"
STATE_TTL = timedelta(minutes=10)  # how long a login may stay at the IdP
METADATA_SECONDS = 3600  # a discovery document (and its keys) is fetched again after this long
BROWSER_KEY = "idp_browser"  # in Flask's signed cookie: binds logins under way to this browser
MAX_DOMAINS = 50
MAX_VALUES = 100
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
CLAIM_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
# Claims about the token rather than the person: not kept.
TOKEN_CLAIMS = frozenset({"aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "auth_time", "azp", "sid", "jti",
                          "iss"})

FAILED = "{name} did not complete the login. Try again; if it keeps failing, tell your administrator."
DOWN = "{name}'s login service cannot be reached right now. Try again later."
BAD_STATE = "This login is not valid any more (it expired, was used already, or began in another browser). " \
            "Start again."
DENIED = "The login at {name} was cancelled or refused."
MISMATCH = "{name} answered inconsistently about who you are. Try again; if it keeps failing, tell your administrator."
DISABLED = "Your account is disabled. Ask an administrator to enable it."
TAKEN = "That login of {name} belongs to another person in the console. Ask an operator to merge the two."
RELOGIN = "Log in again, then link the other login."


class IdpError(Exception):
    """A login through an IdP that did not end in a session: the sentence the login page shows, and the status
    (400; 502 when the IdP cannot be reached)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# -- configuring an institution's IdP -------------------------------------------------------------------------------


def idp_of(institution: Institution) -> InstitutionIdp | None:
    return db.session.execute(db.select(InstitutionIdp).filter_by(institution_id=institution.id)
                              ).unique().scalar_one_or_none()


def describe(idp: InstitutionIdp | None) -> dict | None:
    """What pages and the API show of an IdP: everything but the secret (only whether one is set)."""
    if idp is None:
        return None
    return {"issuer": idp.issuer, "discovery_url": idp.discovery_url, "client_id": idp.client_id,
            "client_secret_set": bool(idp.client_secret), "scopes": idp.scopes,
            "authoritative_domains": list(idp.authoritative_domains), "member_claim": idp.member_claim,
            "member_values": list(idp.member_values)}


def _items(value, max_items: int) -> list[str] | None:
    """A list from a JSON list or from text (one item per line or comma); None when it is neither."""
    if isinstance(value, str):
        value = re.split(r"[,\n]", value)
    if not isinstance(value, list) or len(value) > max_items * 4 or not all(isinstance(v, str) for v in value):
        return None
    return list(dict.fromkeys(v.strip() for v in value if v.strip()))


def _clean(values: dict, has_secret: bool) -> tuple[dict, dict[str, str]]:
    """Validated settings (no network); field errors by form field name."""
    errors: dict[str, str] = {}
    clean: dict = {}
    url = values.get("discovery_url")
    try:
        clean["discovery_url"] = discovery_document_url(url if isinstance(url, str) else "")
    except (Invalid, ValueError):
        errors["discovery_url"] = "Enter the IdP's issuer or discovery URL (https://...)."
    else:
        problem = outbound.problem(clean["discovery_url"], outbound_policy(current_app))
        if problem:
            errors["discovery_url"] = problem
    client_id = values.get("client_id")
    if not isinstance(client_id, str) or not client_id.strip() or len(client_id.strip()) > 300:
        errors["client_id"] = "Enter the client ID the IdP gave the console (at most 300 characters)."
    else:
        clean["client_id"] = client_id.strip()
    secret = values.get("client_secret")
    if secret not in (None, "") and (not isinstance(secret, str) or len(secret) > 1000 or secret != secret.strip()):
        errors["client_secret"] = "Enter the client secret as the IdP shows it (at most 1000 characters)."
    elif secret:
        clean["client_secret"] = secret
    elif not has_secret:
        errors["client_secret"] = "Enter the client secret the IdP gave the console."
    scopes = values.get("scopes") or DEFAULT_SCOPES
    words = scopes.split() if isinstance(scopes, str) else []
    if "openid" not in words or len(scopes) > 300 or not all(re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", w)
                                                             for w in words):
        errors["scopes"] = "Enter scopes separated by spaces, including openid."
    else:
        clean["scopes"] = " ".join(dict.fromkeys(words))
    domains = _items(values.get("authoritative_domains", []), MAX_DOMAINS)
    bad = [d for d in domains or [] if not DOMAIN_RE.match(d.lower())]
    if domains is None or bad or len(domains) > MAX_DOMAINS:
        errors["authoritative_domains"] = f"Enter up to {MAX_DOMAINS} email domains (example.edu), one per line" + \
            (f"; not a domain: {bad[0][:60]}" if bad else ".")
    else:
        clean["authoritative_domains"] = sorted({d.lower() for d in domains})
    claim = values.get("member_claim") or ""
    member_values = _items(values.get("member_values", []), MAX_VALUES)
    if not isinstance(claim, str) or (claim and not CLAIM_RE.match(claim)):
        errors["member_claim"] = "Enter a claim name (letters, digits, _ . : -), e.g. groups."
    elif member_values is None or len(member_values) > MAX_VALUES or any(len(v) > 200 for v in member_values):
        errors["member_values"] = f"Enter up to {MAX_VALUES} values, one per line (200 characters each)."
    elif member_values and not claim:
        errors["member_claim"] = "Name the claim whose values make a person a member."
    else:
        clean["member_claim"], clean["member_values"] = claim, member_values
    return clean, errors


def _discovered_issuer(url: str) -> str:
    """The issuer of the discovery document at ``url``, fetched through the guarded client; FieldErrors (logged
    for the operator by origin only) when there is none."""
    try:
        answer = outbound.request("GET", url, outbound_policy(current_app), headers={"Accept": "application/json"},
                                  max_bytes=1 << 20)
        if answer.status != 200:
            raise outbound.Refused(f"answered {answer.status}")
        document = json.loads(answer.body)
        missing = [k for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint")
                   if not isinstance(document, dict) or not isinstance(document.get(k), str) or not document[k]]
        if missing:
            raise outbound.Refused(f"answered a document without {', '.join(missing)}")
        if len(document["issuer"]) > 500:
            raise outbound.Refused("answered an issuer longer than 500 characters")
    except (outbound.Refused, ValueError, RecursionError) as exc:
        logger.warning("IdP discovery document from %s not taken: %s", outbound.origin(url), exc)
        raise FieldErrors({"discovery_url": "Could not fetch an OpenID Connect discovery document from that URL."}) \
            from None
    return document["issuer"]


def configure(actor: User, institution: Institution, values: dict) -> InstitutionIdp:
    """Set (or replace) the institution's IdP.  A blank client secret keeps the one stored.  The discovery document
    is fetched to learn the issuer.  Raises FieldErrors (nothing written) for bad input.  The caller checks that
    ``actor`` may ("idp.set").  Commits."""
    idp = idp_of(institution)
    clean, errors = _clean(values, has_secret=idp is not None and bool(idp.client_secret))
    if errors:
        raise FieldErrors(errors)
    issuer = _discovered_issuer(clean["discovery_url"])
    created = idp is None
    if created:
        idp = InstitutionIdp(institution=institution)
        db.session.add(idp)
    secret_changed = "client_secret" in clean
    if secret_changed:
        idp.client_secret = encrypt_json({"client_secret": clean.pop("client_secret")})
    for key, value in clean.items():
        setattr(idp, key, value)
    idp.issuer, idp.updated_at = issuer, utcnow()
    audit(actor.email, "institution.idp.set", institution.slug, institution.id, issuer=issuer,
          client_id=idp.client_id, created=created, secret_changed=secret_changed,
          authoritative_domains=idp.authoritative_domains, member_claim=idp.member_claim,
          member_values=idp.member_values)
    db.session.commit()
    return idp


def remove(actor: User, institution: Institution) -> bool:
    """Remove the institution's IdP (its people keep their accounts and identities).  Returns whether there was
    one.  Commits."""
    idp = idp_of(institution)
    if idp is None:
        return False
    audit(actor.email, "institution.idp.remove", institution.slug, institution.id, issuer=idp.issuer)
    db.session.delete(idp)
    db.session.commit()
    return True


def login_choices() -> list[tuple[str, str]]:
    """(slug, name) of every institution people may log in through, by name."""
    return [(slug, name) for slug, name in db.session.execute(
        db.select(Institution.slug, Institution.name).join(InstitutionIdp, InstitutionIdp.institution_id ==
                                                           Institution.id).order_by(Institution.name))]


def idp_by_slug(slug: str) -> InstitutionIdp | None:
    return db.session.execute(db.select(InstitutionIdp).join(Institution, InstitutionIdp.institution_id ==
                                                             Institution.id).where(Institution.slug == slug)
                              ).unique().scalar_one_or_none()


# -- Authlib, through the guarded client, with the state kept server-side -------------------------------------------


class _GuardedAdapter(requests.adapters.BaseAdapter):
    """Sends Authlib's requests (discovery, token, keys, userinfo) through ``tenants.outbound``."""

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("accept-encoding", "content-length", "connection")}
        try:
            answer = outbound.request(request.method, request.url, outbound_policy(current_app), content=body,
                                      headers=headers)
        except outbound.Refused as exc:
            raise requests.ConnectionError(f"{outbound.origin(request.url)}: {exc}", request=request) from None
        response = requests.Response()
        response.status_code, response.reason = answer.status, ""
        response.headers = CaseInsensitiveDict(answer.headers)
        response._content = answer.body
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response.url, response.request = request.url, request
        return response

    def close(self):
        """Nothing to release: every request went through ``tenants.outbound``, which holds no connection."""


class _GuardedSession(OAuth2Session):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        adapter = _GuardedAdapter()
        self.mount("https://", adapter)
        self.mount("http://", adapter)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class _DatabaseState(FlaskIntegration):
    """Authlib's per-login data (PKCE verifier, nonce, redirect URI, ours) in ``LoginState`` rows, encrypted, bound
    to the browser by a random key in its cookie; the cookie holds that one key however many logins were begun."""

    def _key(self, state: str) -> str:
        return _hash(f"{self.name}:{state}")

    def set_state_data(self, session, state, data):
        browser = session.get(BROWSER_KEY)
        if not isinstance(browser, str) or len(browser) != 43:
            browser = session[BROWSER_KEY] = secrets.token_urlsafe(32)
        now = utcnow()
        db.session.execute(delete(LoginState).where(LoginState.expires_at < now))
        db.session.add(LoginState(state_hash=self._key(state), browser_hash=_hash(browser),
                                  data=encrypt_json({"data": data}), expires_at=now + STATE_TTL))
        db.session.commit()

    def get_state_data(self, session, state):
        browser = session.get(BROWSER_KEY)
        if not isinstance(state, str) or not state or len(state) > 200 or not isinstance(browser, str):
            return None
        row = db.session.get(LoginState, self._key(state))
        if row is None or row.expires_at < utcnow() or not hmac.compare_digest(row.browser_hash, _hash(browser)):
            return None
        return decrypt_json(row.data)["data"]

    def clear_state_data(self, session, state):
        self.take(state)

    def take(self, state: str) -> bool:
        """Use up ``state``: True for the one request that removed it (a replayed callback gets False)."""
        if not isinstance(state, str) or not state:
            return False
        taken = db.session.execute(delete(LoginState).where(LoginState.state_hash == self._key(state))
                                   .execution_options(synchronize_session=False)).rowcount == 1
        db.session.commit()
        return taken


class _IdpClient(FlaskOAuth2App):
    client_cls = _GuardedSession


def _fingerprint(idp: InstitutionIdp) -> str:
    return _hash("\n".join((idp.discovery_url, idp.client_id, idp.client_secret, idp.scopes, idp.issuer)))


def client_for(idp: InstitutionIdp) -> _IdpClient:
    """The Authlib client of ``idp``, made once per process and again when its settings change or its discovery
    document is ``METADATA_SECONDS`` old."""
    cache = current_app.extensions.setdefault("hubfleet_idp_clients", {})
    fingerprint = _fingerprint(idp)
    found = cache.get(idp.id)
    if found and found[0] == fingerprint and time.monotonic() - found[2] < METADATA_SECONDS:
        return found[1]
    name = f"idp-{idp.id}"
    client = _IdpClient(_DatabaseState(name), name, client_id=idp.client_id,
                        client_secret=decrypt_json(idp.client_secret).get("client_secret"),
                        server_metadata_url=idp.discovery_url,
                        client_kwargs={"scope": idp.scopes, "code_challenge_method": "S256"})
    cache[idp.id] = (fingerprint, client, time.monotonic())
    return client


# Whatever an IdP (or the way to it) can make Authlib raise: all end on the login page.
_FAILURES = (OAuthError, JoseError, requests.RequestException, ValueError, KeyError, TypeError, RuntimeError)


def _metadata(idp: InstitutionIdp, client: _IdpClient) -> dict:
    metadata = client.load_server_metadata()
    if metadata.get("issuer") != idp.issuer:
        logger.warning("IdP of %s now names issuer %r, not %r: an operator must save its login again",
                       idp.institution.slug, metadata.get("issuer"), idp.issuer)
        raise IdpError(FAILED.format(name=idp.institution.name))
    client.client_kwargs["token_endpoint_auth_method"] = token_auth_method(metadata)
    return metadata


def token_auth_method(metadata: dict) -> str:
    """How the console sends its client secret to the IdP's token endpoint: HTTP Basic, OAuth's default, unless the
    discovery document lists only the form body (``client_secret_post``).  Pure."""
    offered = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if "client_secret_basic" not in offered and "client_secret_post" in offered:
        return "client_secret_post"
    return "client_secret_basic"


def begin(idp: InstitutionIdp, redirect_uri: str, next_url: str | None, link_user: User | None = None) -> str:
    """Start a login at ``idp``: the URL of its authorization endpoint to send the browser to.  ``link_user``: a
    logged-in person adding this login to their account (the IdP is asked to authenticate again).  Raises IdpError
    when the IdP cannot be reached."""
    name = idp.institution.name
    client = client_for(idp)
    try:
        _metadata(idp, client)
        extra = {"prompt": "login"} if link_user is not None else {}
        made = client.create_authorization_url(redirect_uri, **extra)
    except IdpError:
        raise
    except _FAILURES as exc:
        logger.warning("login through the IdP of %s could not start: %s: %s", idp.institution.slug,
                       type(exc).__name__, exc)
        raise IdpError(DOWN.format(name=name), 502) from None
    client.save_authorize_data(redirect_uri=redirect_uri, next=next_url or "",
                               link=link_user.id if link_user is not None else None, **made)
    return made["url"]


@dataclass(frozen=True)
class Login:
    """A finished IdP login: who, where to go next, what happened ("login", "created", "linked"), and whether it
    was a logged-in person linking a login (no new session then)."""

    user: User
    next_url: str
    outcome: str
    identity: Identity
    link: bool


def _person_claims(id_claims: dict, userinfo: dict) -> dict:
    merged = {**id_claims, **userinfo}
    return {k: v for k, v in merged.items() if k not in TOKEN_CLAIMS}


def finish(idp: InstitutionIdp, args, current_user: User | None) -> Login:
    """Complete a login from the IdP's redirect (``args``: its query): check the state, exchange the code, validate
    the ID token, call userinfo (same ``sub`` required), then find, link or make the person (``resolve``) and apply
    the IdP's member rule.  Raises IdpError (nothing written) for every failure.  Commits."""
    name = idp.institution.name
    client = client_for(idp)
    state = args.get("state")
    data = client.framework.get_state_data(session, state)
    if data is None or not client.framework.take(state):
        raise IdpError(BAD_STATE)
    if args.get("error"):
        raise IdpError(DENIED.format(name=name))
    if not args.get("code"):
        raise IdpError(FAILED.format(name=name))
    try:
        _metadata(idp, client)
        token = client.fetch_access_token(redirect_uri=data["redirect_uri"], code=args["code"],
                                          code_verifier=data["code_verifier"])
        if "id_token" not in token:
            raise OAuthError(error="no_id_token", description="the token response has no ID token")
        id_claims = client.parse_id_token(token, nonce=data["nonce"])
        userinfo = client.userinfo(token=token)
    except IdpError:
        raise
    except requests.ConnectionError as exc:
        logger.warning("login through the IdP of %s failed: %s", idp.institution.slug, exc)
        raise IdpError(DOWN.format(name=name), 502) from None
    except _FAILURES as exc:
        logger.warning("login through the IdP of %s failed: %s: %s", idp.institution.slug, type(exc).__name__,
                       getattr(exc, "description", None) or exc)
        raise IdpError(FAILED.format(name=name)) from None
    subject = id_claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 255 or userinfo.get("sub") != subject:
        logger.warning("login through the IdP of %s refused: userinfo names another sub than the ID token",
                       idp.institution.slug)
        raise IdpError(MISMATCH.format(name=name))
    link_user = None
    if data.get("link") is not None:
        if current_user is None or current_user.id != data["link"]:
            raise IdpError(RELOGIN)
        link_user = current_user
    user, identity, outcome = resolve(idp, subject, _person_claims(dict(id_claims), dict(userinfo)), link_user)
    if not user.is_active:
        db.session.rollback()
        raise IdpError(DISABLED)
    apply_member_rule(user, idp, identity.claims)
    db.session.commit()
    return Login(user, data.get("next") or "", outcome, identity, link_user is not None)


# -- who it is: the linking rules -----------------------------------------------------------------------------------


def verified_email(claims: dict) -> str | None:
    """The claims' email, lowercased, when the IdP says it is verified; pure."""
    email = claims.get("email")
    if claims.get("email_verified") is not True or not isinstance(email, str) or email.count("@") != 1:
        return None
    return email.strip().lower()


def _domain(email: str) -> str:
    return email.rsplit("@", 1)[1]


def _authoritative_issuers(domain: str) -> set[str]:
    return {idp.issuer for idp in db.session.execute(db.select(InstitutionIdp)).unique().scalars()
            if domain in idp.authoritative_domains}


def _vouched_match(idp: InstitutionIdp, claims: dict) -> User | None:
    """The one person an authoritative issuer has vouched for with this verified email, when ``idp`` is
    authoritative for its domain too; None otherwise (also when several people match: nobody is guessed)."""
    email = verified_email(claims)
    if email is None or _domain(email) not in idp.authoritative_domains:
        return None
    issuers = _authoritative_issuers(_domain(email))
    people = {identity.user_id: identity.user for identity in db.session.execute(
        db.select(Identity).where(Identity.issuer.in_(issuers))).unique().scalars()
        if verified_email(identity.claims or {}) == email}
    return next(iter(people.values())) if len(people) == 1 else None


def _new_person(idp: InstitutionIdp, claims: dict) -> User:
    """A person of the IdP's institution with role "member" and no password; email as the module docstring says."""
    email = verified_email(claims)
    vouched = email if email and _domain(email) in idp.authoritative_domains else None
    if vouched and db.session.execute(db.select(User.id).where(User.email == vouched)).first():
        vouched = None
    hint = next((claims[k] for k in ("preferred_username", "email", "name") if isinstance(claims.get(k), str)
                 and claims[k].strip()), "user")
    username = mint_username(db.session, hint)
    user = User(email=vouched or f"{username}@{idp.institution.slug}.invalid", password_hash="", role=MEMBER,
                institution=idp.institution, username=username)
    db.session.add(user)
    db.session.flush()
    return user


def _identity(idp: InstitutionIdp, user: User, subject: str, claims: dict) -> Identity:
    identity = Identity(user=user, issuer=idp.issuer, subject=subject, institution_id=idp.institution_id,
                        claims=claims)
    db.session.add(identity)
    return identity


def resolve(idp: InstitutionIdp, subject: str, claims: dict, link_user: User | None = None
            ) -> tuple[User, Identity, str]:
    """The person this (issuer, subject) logs in, by the linking rules of the module docstring; returns (person,
    identity, "login" | "linked" | "created").  Raises IdpError when ``link_user`` asks for an identity another
    person holds.  Writes (audited), does not commit."""
    now = utcnow()
    identity = db.session.execute(db.select(Identity).filter_by(issuer=idp.issuer, subject=subject)
                                  ).unique().scalar_one_or_none()
    target = f"{idp.issuer} {subject}"[:200]
    if link_user is not None:
        if identity is not None and identity.user_id != link_user.id:
            audit(link_user.email, "identity.link_refused", target, idp.institution_id, holder=identity.user.email)
            db.session.commit()
            raise IdpError(TAKEN.format(name=idp.institution.name))
        outcome = "login" if identity is not None else "linked"
        if identity is None:
            identity = _identity(idp, link_user, subject, claims)
            audit(link_user.email, "identity.link", target, idp.institution_id, how="re-authentication",
                  institution=idp.institution.slug)
        user = link_user
    elif identity is not None:
        user, outcome = identity.user, "login"
    else:
        user = _vouched_match(idp, claims)
        if user is not None:
            outcome = "linked"
            audit(user.email, "identity.link", target, idp.institution_id, how="authoritative email domain",
                  domain=_domain(verified_email(claims)), institution=idp.institution.slug)
        else:
            user, outcome = _new_person(idp, claims), "created"
            audit(user.email, "user.create", user.email, idp.institution_id, role=MEMBER, how="institution login",
                  issuer=idp.issuer)
        identity = _identity(idp, user, subject, claims)
    identity.claims, identity.last_login_at = claims, now
    db.session.flush()
    return user, identity, outcome


# -- the member rule ------------------------------------------------------------------------------------------------


def member_rule_matches(idp: InstitutionIdp, claims: dict) -> bool:
    """Whether the IdP's member rule admits a person with these claims (no values: everyone it logs in); pure."""
    if not idp.member_values:
        return True
    value = claims.get(idp.member_claim)
    held = value if isinstance(value, list) else [value] if value is not None else []
    return any(isinstance(v, (str, int)) and str(v) in idp.member_values for v in held)


def apply_member_rule(user: User, idp: InstitutionIdp, claims: dict) -> None:
    """Grant ``user`` membership of all the institution's hubs when the rule matches; end that rule's grant when
    it no longer does.  Does not commit."""
    ref = f"idp:{idp.id}"
    if member_rule_matches(idp, claims):
        memberships.grant(user, institution=idp.institution, source="rule", ref=ref)
        return
    for membership in memberships.active_memberships(user):
        if membership.source == "rule" and membership.ref == ref:
            memberships.revoke(membership, user)


# -- a person's identities ------------------------------------------------------------------------------------------


def identities_of(user: User) -> list[Identity]:
    return list(db.session.execute(db.select(Identity).filter_by(user_id=user.id).order_by(Identity.id)
                                   ).unique().scalars())


def unlink(user: User, identity_id) -> Identity:
    """Remove one of ``user``'s own identities, unless it is their last way to log in (no password, no other
    identity).  Raises FieldErrors (nothing written).  Commits."""
    identity = None
    if str(identity_id or "").isdigit() and len(str(identity_id)) < 19:
        identity = db.session.execute(db.select(Identity).filter_by(id=int(identity_id), user_id=user.id)
                                      ).unique().scalar_one_or_none()
    if identity is None:
        raise FieldErrors({"identity": "That login is not linked to your account."})
    others = db.session.execute(db.select(db.func.count(Identity.id)).where(
        Identity.user_id == user.id, Identity.id != identity.id)).scalar_one()
    if not others and not user.password_hash:
        raise FieldErrors({"identity": "This is your only way to log in: link another login first."})
    audit(user.email, "identity.unlink", f"{identity.issuer} {identity.subject}"[:200], identity.institution_id)
    db.session.delete(identity)
    db.session.commit()
    return identity


__all__ = ["IdpError", "Login", "apply_member_rule", "begin", "client_for", "configure", "describe",
           "finish", "identities_of", "idp_by_slug", "idp_of", "login_choices", "member_rule_matches", "remove",
           "resolve", "unlink", "verified_email"]
