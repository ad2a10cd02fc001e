"""Run a real OpenID Connect provider for tests and sign in through it over plain HTTP.

:class:`OidcProvider` starts ``tests/idp/server.mjs`` (the npm package ``oidc-provider`` from the
repository's ``node_modules``) on a free loopback port. It is a complete provider: discovery, the
authorization code flow (PKCE optional for confidential clients), client_secret_basic and
client_secret_post at the token endpoint, signed ID tokens, userinfo, and a sign-in page that
accepts any password for a configured login and refuses unknown logins.

:func:`login_through` signs a user in through it the way a browser would, with an ``httpx.Client``.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(__file__).with_name("server.mjs")
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OidcProvider:
    """A real OpenID Connect provider process on ``http://127.0.0.1:PORT``.

    ``clients``: ``[{"client_id", "client_secret", "redirect_uris": [...]}]``.
    ``users``: ``{login: {"sub", "email", "preferred_username", "name", "groups": [...]}}``;
    any password is accepted for these logins.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, clients: list[dict], users: dict[str, dict], client_auth_methods: list[str] | None = None):
        self.port = _free_port()
        self.client_auth_methods = client_auth_methods
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        self.clients = clients
        self.users = users
        self._dir: Path | None = None
        self._log = None
        self._process: subprocess.Popen | None = None

    def start(self) -> OidcProvider:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH; the test OpenID provider needs Node.js")
        if not (ROOT / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(f"oidc-provider is not installed; run `npm install` in {ROOT}")
        self._dir = Path(tempfile.mkdtemp(prefix="hubfleet-idp-"))
        config = self._dir / "config.json"
        config.write_text(json.dumps({"port": self.port, "issuer": self.issuer,
                                      "clients": self.clients, "users": self.users,
                                      "clientAuthMethods": self.client_auth_methods}))
        self._log = open(self._dir / "output.log", "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen([node, str(SERVER), str(config)], cwd=ROOT, stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while f"READY {self.issuer}" not in self.output():
            if self._process.poll() is not None or time.monotonic() > deadline:
                state = (f"exited with {self._process.returncode}" if self._process.poll() is not None
                         else f"not ready after {START_TIMEOUT:.0f}s")
                output = self.output()
                self.stop()
                raise RuntimeError(f"OpenID provider {state}; its output:\n{output}")
            time.sleep(0.05)
        return self

    def set_users(self, users: dict[str, dict]) -> None:
        """Replace the people and their claims; the running provider reads them at its next sign-in or claims
        lookup (same keys and port, so a relying party sees the same issuer)."""
        self.users = users
        path = self._dir / "config.json"
        path.write_text(json.dumps({"port": self.port, "issuer": self.issuer, "clients": self.clients,
                                    "users": users}))

    def output(self) -> str:
        """Everything the provider process has printed so far (stdout and stderr)."""
        if self._log is None or self._log.closed:
            return ""
        self._log.flush()
        return (self._dir / "output.log").read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 10 s) and remove its files."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Form:
    def __init__(self, action: str, method: str):
        self.action = action
        self.method = method
        self.fields: list[tuple[str, str, str]] = []  # (type, name, value)


class _FormParser(HTMLParser):
    """Collects the forms of a page with their named inputs and submit buttons."""

    def __init__(self):
        super().__init__()
        self.forms: list[_Form] = []
        self._current: _Form | None = None

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = _Form(attrs.get("action", ""), attrs.get("method", "get").upper())
            self.forms.append(self._current)
        elif self._current is not None and attrs.get("name"):
            if tag == "input":
                self._current.fields.append((attrs.get("type", "text").lower(), attrs["name"], attrs.get("value", "")))
            elif tag == "button" and attrs.get("type", "submit").lower() == "submit":
                self._current.fields.append(("submit", attrs["name"], attrs.get("value", "")))

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


_LOGIN_NAMES = ("login", "username", "user", "email")


def _fill(form: _Form, login: str, password: str) -> tuple[dict[str, str], bool]:
    """The form's data with credentials filled in, and whether it was a login form."""
    data: dict[str, str] = {}
    named = [name for kind, name, _ in form.fields if kind in ("text", "email") and name in _LOGIN_NAMES]
    login_field = named[0] if named else next((n for k, n, _ in form.fields if k in ("text", "email")), None)
    is_login = False
    submitted = False
    for kind, name, value in form.fields:
        if kind == "password":
            data[name], is_login = password, True
        elif name == login_field:
            data[name] = login
        elif kind in ("checkbox", "radio") or (kind == "submit" and submitted):
            continue
        else:
            data[name] = value
            submitted = submitted or kind == "submit"
    return data, is_login


def _origin(url) -> tuple[str, str]:
    parts = urlsplit(str(url))
    return parts.scheme, parts.netloc


def login_through(client: httpx.Client, start_url: str, login: str, password: str = "any", *,
                  follow_callback: bool = True, max_steps: int = 20) -> httpx.Response:
    """Sign ``login`` in at a relying party through its OpenID provider, as a browser would.

    Starts at ``start_url`` on the relying party (e.g. a JupyterHub's ``/hub/oauth_login``),
    follows redirects to the provider, submits its login form (and any consent form), and
    follows the provider's redirect back to the relying party's callback. Returns the
    callback's final response after following its redirects, or the callback response itself
    with ``follow_callback=False``. If the provider does not send the browser back (unknown
    login, error page), returns the provider's last page instead.
    """
    rp = _origin(start_url)
    response = client.get(start_url, follow_redirects=False)
    left_rp = False
    login_sent = False
    for _ in range(max_steps):
        on_rp = _origin(response.url) == rp
        if on_rp and left_rp:
            while follow_callback and response.next_request is not None:
                response = client.send(response.next_request, follow_redirects=False)
            return response
        left_rp = left_rp or not on_rp
        if response.next_request is not None:
            response = client.send(response.next_request, follow_redirects=False)
            continue
        if on_rp:
            return response  # the relying party answered without involving the provider
        parser = _FormParser()
        parser.feed(response.text)
        if not parser.forms:
            return response
        data, is_login = _fill(parser.forms[0], login, password)
        if is_login and login_sent:
            return response  # the login form again: the credentials were refused
        login_sent = login_sent or is_login
        form = parser.forms[0]
        url = urljoin(str(response.url), form.action)
        if form.method == "POST":
            response = client.post(url, data=data, follow_redirects=False)
        else:
            response = client.get(url, params=data, follow_redirects=False)
    raise RuntimeError(f"login through {start_url} did not finish in {max_steps} steps; last at {response.url}")
