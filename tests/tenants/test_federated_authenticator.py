"""The federated hub's authenticator keeps a person signed in while the console cannot answer, and still ends the
login when the console refuses the token.

The real class (tenants/federated_authenticator.py, as hubs load it) refreshes against a real HTTP server on
loopback that plays the console's userinfo endpoint, or against a port nobody listens on.  The user is a stand-in
holding the auth state JupyterHub would pass.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from traitlets.config import Config

from tenants.federated_authenticator import FederatedAuthenticator


class StandInUser:
    name = "ada"

    async def get_auth_state(self):
        return {"access_token": "t", "token_response": {"access_token": "t", "token_type": "Bearer"}}


@pytest.fixture
def userinfo():
    """``userinfo(status)``: the URL of a loopback endpoint answering ``status`` (200 with Ada's claims)."""
    servers = []

    def serve(status: int) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"sub": "ada", "preferred_username": "ada", "groups": ["member"]}
                                  if status == 200 else {"error": "x"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/oauth/userinfo"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def refresh(url: str):
    config = Config({"GenericOAuthenticator": {
        "client_id": "hub-1", "client_secret": "s", "userdata_url": url, "token_url": url,
        "authorize_url": url, "enable_auth_state": True, "username_claim": "preferred_username",
        "manage_groups": True, "auth_state_groups_key": "oauth_user.groups", "allowed_groups": ["member"]}})
    return asyncio.run(FederatedAuthenticator(config=config).refresh_user(StandInUser()))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_console_down_or_failing_keeps_the_person_signed_in(userinfo):
    assert refresh(f"http://127.0.0.1:{closed_port()}/oauth/userinfo") is True
    assert refresh(userinfo(502)) is True


def test_a_refused_token_ends_the_login_and_a_good_one_refreshes_the_groups(userinfo):
    assert refresh(userinfo(401)) is False  # no refresh token to try: a new login
    model = refresh(userinfo(200))
    assert model["name"] == "ada" and model["groups"] == ["member"]
