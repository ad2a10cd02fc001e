"""The test OpenID Connect provider against a tiny relying party written here.

The provider is the real npm ``oidc-provider`` in a Node process; the relying party is an
``http.server`` on loopback that sends the browser to the authorize endpoint and records the
``code`` it gets back. Codes are exchanged at the real token endpoint and tokens checked
against the provider's real JWKS and userinfo endpoint.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from tests.idp.provider import OidcProvider, login_through

CLIENT_ID = "hub"
CLIENT_SECRET = "hub-client-secret"
SCOPE = "openid profile email groups"
ALICE = {"sub": "u-alice", "email": "alice@example.org", "preferred_username": "alice", "name": "Alice Example",
         "groups": ["staff", "course-101"]}


class RelyingParty(ThreadingHTTPServer):
    """``/login`` redirects to the provider; ``/callback`` records what the provider sent back."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _RelyingPartyHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.redirect_uri = f"{self.url}/callback"
        self.authorization_endpoint = ""
        self.requests: dict[str, dict] = {}  # state -> {"nonce", "code_verifier"}
        self.callbacks: list[dict[str, str]] = []


class _RelyingPartyHandler(BaseHTTPRequestHandler):
    server: RelyingParty

    def do_GET(self):  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        rp = self.server
        if url.path == "/login":
            state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
            params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": rp.redirect_uri,
                      "scope": SCOPE, "state": state, "nonce": nonce}
            verifier = None
            if query.get("pkce"):
                verifier = secrets.token_urlsafe(32)
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
                params.update(code_challenge=challenge.decode(), code_challenge_method="S256")
            rp.requests[state] = {"nonce": nonce, "code_verifier": verifier}
            self.send_response(302)
            self.send_header("Location", f"{rp.authorization_endpoint}?{urlencode(params)}")
            self.end_headers()
        elif url.path == "/callback":
            rp.callbacks.append(query)
            self._reply(200, b"signed in")
        else:
            self._reply(404, b"not found")

    def _reply(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def rp():
    server = RelyingParty()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def provider(rp):
    clients = [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": [rp.redirect_uri]}]
    with OidcProvider(clients=clients, users={"alice": ALICE}) as running:
        yield running


@pytest.fixture(scope="module")
def discovery(provider, rp):
    document = httpx.get(provider.discovery_url).json()
    rp.authorization_endpoint = document["authorization_endpoint"]
    return document


@pytest.fixture
def browser():
    with httpx.Client(timeout=10) as client:
        yield client


def sign_in(browser, rp, login="alice", pkce=False) -> dict[str, str]:
    """Sign in through the provider; returns the query the provider sent to the callback."""
    seen = len(rp.callbacks)
    response = login_through(browser, f"{rp.url}/login{'?pkce=1' if pkce else ''}", login)
    assert response.status_code == 200 and str(response.url).startswith(rp.redirect_uri), response.text
    assert len(rp.callbacks) == seen + 1
    callback = rp.callbacks[-1]
    assert "code" in callback, callback
    assert callback["state"] in rp.requests
    return callback


def exchange(discovery, code, rp, method="client_secret_post", secret=CLIENT_SECRET, **extra) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri, **extra}
    if method == "client_secret_post":
        return httpx.post(discovery["token_endpoint"], data={**data, "client_id": CLIENT_ID, "client_secret": secret})
    return httpx.post(discovery["token_endpoint"], data=data, auth=(CLIENT_ID, secret))


def verified_id_token(discovery, id_token: str) -> dict:
    keys = jwt.PyJWKSet.from_dict(httpx.get(discovery["jwks_uri"]).json())
    key = keys[jwt.get_unverified_header(id_token)["kid"]]
    return jwt.decode(id_token, key=key, algorithms=["RS256"], audience=CLIENT_ID, issuer=discovery["issuer"])


def test_discovery_document(provider, discovery):
    assert discovery["issuer"] == provider.issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert discovery[endpoint].startswith(provider.issuer + "/"), endpoint
    assert {"openid", "profile", "email", "groups"} <= set(discovery["scopes_supported"])
    assert {"preferred_username", "email", "groups"} <= set(discovery["claims_supported"])
    assert {"client_secret_post", "client_secret_basic"} <= set(discovery["token_endpoint_auth_methods_supported"])
    assert "S256" in discovery["code_challenge_methods_supported"]
    assert httpx.get(discovery["jwks_uri"]).json()["keys"]


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
@pytest.mark.parametrize("pkce", [False, True], ids=["no-pkce", "pkce"])
def test_authorization_code_flow(discovery, rp, browser, method, pkce):
    callback = sign_in(browser, rp, pkce=pkce)
    request = rp.requests[callback["state"]]
    extra = {"code_verifier": request["code_verifier"]} if pkce else {}

    tokens = exchange(discovery, callback["code"], rp, method, **extra)
    assert tokens.status_code == 200, tokens.text
    tokens = tokens.json()
    assert tokens["token_type"].lower() == "bearer"

    claims = verified_id_token(discovery, tokens["id_token"])
    assert claims["sub"] == "u-alice" and claims["nonce"] == request["nonce"]
    assert claims["preferred_username"] == "alice"
    assert claims["groups"] == ["staff", "course-101"]

    userinfo = httpx.get(discovery["userinfo_endpoint"], headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json() == {"sub": "u-alice", "preferred_username": "alice", "name": "Alice Example",
                               "email": "alice@example.org", "email_verified": True,
                               "groups": ["staff", "course-101"]}

    # A code is good for one exchange only.
    again = exchange(discovery, callback["code"], rp, method, **extra)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_pkce_verifier_is_checked_when_a_challenge_was_sent(discovery, rp, browser):
    callback = sign_in(browser, rp, pkce=True)
    wrong = exchange(discovery, callback["code"], rp, code_verifier=secrets.token_urlsafe(32))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


def test_session_is_reused_without_a_second_login_form(discovery, rp, browser):
    sign_in(browser, rp)
    callback = sign_in(browser, rp, login="nobody-asked")
    assert exchange(discovery, callback["code"], rp).status_code == 200


def test_unknown_login_is_refused(provider, discovery, rp, browser):
    seen = len(rp.callbacks)
    response = login_through(browser, f"{rp.url}/login", "mallory")
    assert response.status_code == 401
    assert str(response.url).startswith(provider.issuer + "/interaction/")
    assert "Unknown user: mallory" in response.text
    assert len(rp.callbacks) == seen


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_wrong_client_secret_is_refused(discovery, rp, browser, method):
    callback = sign_in(browser, rp)
    refused = exchange(discovery, callback["code"], rp, method, secret="not-the-secret")
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    # The code itself was fine: the right secret still redeems it.
    assert exchange(discovery, callback["code"], rp, method).status_code == 200
