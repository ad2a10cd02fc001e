"""The guarded client for URLs a person typed, and the discovery fetch on it, against real servers on loopback.

Every server here listens on 127.0.0.1: reachable only when the test allow-lists it, refused otherwise, whatever
name or spelling the URL uses for it.  A refused request never reaches the server.
"""
import ipaddress
import socket
import time

import pytest

from tenants import outbound
from tenants.discovery import FAILED, fetch_discovery
from tenants.fields import Invalid
from tests.loopback import (
    LoopbackServer,
    dribble_answer,
    huge_answer,
    json_answer,
    status_answer,
    tls_contexts,
)

DOCUMENT = {"issuer": "https://idp.example.edu", "authorization_endpoint": "https://idp.example.edu/auth",
            "token_endpoint": "https://idp.example.edu/token", "userinfo_endpoint": "https://idp.example.edu/me",
            "scopes_supported": ["openid", "email"]}


def allowing(*servers, **options) -> outbound.Policy:
    return outbound.Policy.from_setting([s.address for s in servers], **options)


@pytest.fixture
def secret_server():
    """What an attacker would like to read: a JSON service on loopback."""
    with LoopbackServer(json_answer(DOCUMENT)) as server:
        yield server


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "100.100.100.200",
    "169.254.169.254", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "198.18.0.1",
    "::", "::1", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "2002:7f00:1::", "2002:a9fe:a9fe::", "64:ff9b::a9fe:a9fe", "2001:db8::1"])
def test_addresses_that_are_not_public(address):
    assert not outbound.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111",
                                     "2a00:1450:4001:81c::200e"])
def test_public_addresses(address):
    assert outbound.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("spelling", [
    "localhost", "127.0.0.1", "[::1]", "0.0.0.0", "2130706433", "0x7f.1", "0177.0.0.1", "127.1", "[::ffff:127.0.0.1]",
    "LOCALHOST", "localhost."])
@pytest.mark.parametrize("scheme", ["https", "http"])
def test_loopback_is_refused_however_it_is_spelled(secret_server, spelling, scheme):
    url = f"{scheme}://{spelling}:{secret_server.port}/"
    with pytest.raises(outbound.Refused):
        outbound.request("GET", url, outbound.Policy())
    with pytest.raises(Invalid) as refused:
        fetch_discovery(url, outbound.Policy())
    assert str(refused.value) == FAILED
    assert secret_server.hits == []


@pytest.mark.parametrize("url", ["https://169.254.169.254/latest/meta-data/", "https://10.0.0.1/",
                                 "https://[fd00:ec2::254]/", "https://100.100.100.200/", "https://192.168.0.1/"])
def test_private_and_metadata_addresses_are_refused_before_any_connection(url, secret_server, monkeypatch):
    connects = []
    real = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: connects.append(address) or real(self, address))
    with pytest.raises(outbound.Refused, match="not public"):
        outbound.request("GET", url, outbound.Policy())
    assert connects == []
    outbound.request("GET", secret_server.url(), allowing(secret_server))  # the same spy sees an allowed connection
    assert connects == [("127.0.0.1", secret_server.port)]


def test_a_name_is_refused_when_any_of_its_addresses_is_not_public():
    # "localhost" resolves to 127.0.0.1 and usually ::1 too: every address is listed, each one refused
    with pytest.raises(outbound.Refused, match="127.0.0.1"):
        outbound.request("GET", "https://localhost/", outbound.Policy())


def test_the_allow_list_lets_a_loopback_http_server_through(secret_server):
    answer = outbound.request("GET", secret_server.url("/doc"), allowing(secret_server))
    assert answer.status == 200 and answer.body.startswith(b'{"issuer"')
    found = fetch_discovery(secret_server.url(), allowing(secret_server))
    assert found["token_url"] == "https://idp.example.edu/token" and found["scope"] == ["openid", "email"]
    assert [hit.path for hit in secret_server.hits] == ["/doc", "/.well-known/openid-configuration"]
    # the allow-list names a host and a port: another port of the same host stays refused
    with pytest.raises(outbound.Refused):
        outbound.request("GET", f"http://127.0.0.1:{secret_server.port + 1}/", allowing(secret_server))


def test_every_failure_gives_the_same_message_and_the_target_behind_a_redirect_is_never_reached(secret_server):
    """What answers at the URL (a refused address, a 404, a 500, a redirect to loopback, HTML, a JSON document
    without endpoints, a timeout, too many bytes) is not told: the admin reads one message."""
    to_secret = status_answer(302, secret_server.url("/.well-known/openid-configuration"))
    answers = [status_answer(404), status_answer(500), to_secret, status_answer(307, "http://[::1]/"),
               json_answer({"issuer": "x"}), json_answer(["not", "an", "object"]), dribble_answer(0.2),
               huge_answer(2 * 1024 * 1024, declared=True)]
    messages = set()
    for answer in answers:
        with LoopbackServer(answer) as server:
            with pytest.raises(Invalid) as failed:
                fetch_discovery(server.url(), allowing(server, total_seconds=1.5))
            messages.add(str(failed.value))
            assert len(server.hits) == 1
    with pytest.raises(Invalid) as refused:
        fetch_discovery(secret_server.url(), outbound.Policy())
    messages.add(str(refused.value))
    assert messages == {FAILED}
    assert secret_server.hits == []


def test_an_https_server_that_redirects_to_loopback_is_not_followed(secret_server):
    server_tls, client_tls = tls_contexts()
    redirect = status_answer(302, secret_server.url("/.well-known/openid-configuration"))
    with LoopbackServer(redirect, tls=(server_tls,)) as server:
        policy = allowing(server, verify=client_tls)
        answer = outbound.request("GET", server.url("/"), policy)
        assert answer.status == 302  # handed back, not followed
        with pytest.raises(Invalid) as failed:
            fetch_discovery(server.url(), policy)
        assert str(failed.value) == FAILED
        assert len(server.hits) == 2
    assert secret_server.hits == []


def test_the_checked_address_is_the_one_connected_to_with_the_name_kept_for_host_and_tls(monkeypatch):
    """The name is resolved once (a second lookup could answer differently: DNS rebinding); the connection goes to
    the address that was checked, while the Host header, SNI and the certificate check still use the name.

    Loopback stands in for a public address here: ``is_public`` admits 127.0.0.1 for this test only.
    """
    real_is_public, real_getaddrinfo = outbound.is_public, socket.getaddrinfo
    lookups = []
    monkeypatch.setattr(outbound, "is_public",
                        lambda a: str(a) == "127.0.0.1" or real_is_public(a))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: lookups.append(host) or [
        info for info in real_getaddrinfo(host, *args, **kwargs) if info[0] == socket.AF_INET])
    server_tls, client_tls = tls_contexts()
    with LoopbackServer(json_answer(DOCUMENT), tls=(server_tls,)) as server:
        found = fetch_discovery(server.url("/", host="localhost"), outbound.Policy(verify=client_tls))
        assert found["authorize_url"] == DOCUMENT["authorization_endpoint"]
        [hit] = server.hits
        assert hit.headers["Host"] == f"localhost:{server.port}"
        assert server.server_names == ["localhost"]
        assert lookups == ["localhost"]
        # the certificate is checked against the name: a client that trusts another CA is refused
        with pytest.raises(outbound.Refused, match="CERTIFICATE_VERIFY_FAILED"):
            outbound.request("GET", server.url("/", host="localhost"), outbound.Policy())


@pytest.mark.parametrize("declared", [True, False], ids=["announced", "streamed"])
def test_a_50_mb_answer_is_cut_off_at_the_cap(declared):
    sent = []
    with LoopbackServer(huge_answer(declared=declared, sent=sent)) as server:
        with pytest.raises(outbound.Refused, match="over the 1048576 bytes"):
            outbound.request("GET", server.url(), allowing(server), max_bytes=1 << 20)
    time.sleep(0.2)
    assert sent and sent[0] < 50 * 1024 * 1024  # the server could not send it all: the client hung up


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "status-line"])
def test_a_server_that_dribbles_bytes_is_cut_off_at_the_total_time(headers_too):
    with LoopbackServer(dribble_answer(0.1, headers_too=headers_too)) as server:
        started = time.monotonic()
        with pytest.raises(outbound.Refused, match="no complete answer within 1.5 s"):
            outbound.request("GET", server.url(), allowing(server, total_seconds=1.5))
        took = time.monotonic() - started
    assert 1.4 < took < 5, took  # at the limit, not early; without it the answer never ends


def test_default_limits():
    policy = outbound.Policy()
    assert (policy.connect_seconds, policy.total_seconds, policy.allow) == (3.0, 10.0, frozenset())


def test_what_a_saved_url_is_checked_for():
    policy = outbound.Policy.from_setting("hooks.internal:8080, [::1]:9000")
    assert policy.allow == {("hooks.internal", 8080), ("::1", 9000)}
    assert outbound.problem("https://hooks.example.org/x?token=1", policy) is None
    assert outbound.problem("http://hooks.internal:8080/x", policy) is None
    assert outbound.problem("http://[::1]:9000/x", policy) is None
    for url in ("ftp://hooks.example.org/", "http://hooks.example.org/", "hooks.example.org", "https:///x", "",
                "http://hooks.internal:8081/", "https://" + "a" * 2000 + ".org/"):
        assert "https://" in outbound.problem(url, policy), url
    for url in ("https://10.0.0.1/", "https://[::1]/", "https://169.254.169.254/"):
        assert outbound.problem(url, policy) == "Enter the URL of a public host.", url
    with pytest.raises(ValueError, match="not host:port"):
        outbound.Policy.from_setting(["hooks.internal"])


def test_logs_name_the_origin_only():
    assert outbound.origin("https://user:pw@hooks.slack.com/services/T0/B0/XYZ?x=1") == "https://hooks.slack.com"
    assert outbound.origin("http://[::1]:8080/a") == "http://[::1]:8080"
