"""Real HTTP(S) servers on loopback, in threads, that answer as a test tells them: well, badly, slowly, hugely.

``LoopbackServer(answer)`` calls ``answer(handler)`` for every request after recording it in ``hits``
(method, path, headers, body); the ready-made answers below cover what the outbound tests need.  With ``tls=`` (from
:func:`tls_contexts`) it speaks https with a certificate for ``localhost`` and 127.0.0.1, signed by a test CA, and
records the server name each client asked for (SNI) in ``server_names``.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class LoopbackServer:
    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None], tls: tuple | None = None):
        hits = self.hits = []
        self.server_names: list[str | None] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                hits.append(Hit(self.command, self.path, dict(self.headers.items()), self.rfile.read(length)))
                try:
                    answer(self)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the client hung up: what the size and time limits are for

            do_GET = do_POST = handle_one

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = tls[0]
            context.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# -- answers -------------------------------------------------------------------------------------------------------

def json_answer(document, status: int = 200):
    body = json.dumps(document).encode()

    def answer(handler):
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return answer


def status_answer(status: int, location: str | None = None):
    def answer(handler):
        handler.send_response(status)
        if location:
            handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def dribble_answer(interval: float = 0.2, headers_too: bool = False):
    """Headers (or, with ``headers_too``, even the status line) one byte at a time, then a body that never ends."""
    def answer(handler):
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
        if headers_too:
            for byte in head:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(interval)
        else:
            handler.wfile.write(head)
        while True:
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(interval)
    return answer


def huge_answer(size: int = 50 * 1024 * 1024, declared: bool = False, sent: list | None = None):
    """``size`` bytes of a JSON string, streamed; with ``declared`` the length is announced up front.  Appends the
    bytes it managed to write to ``sent``."""
    def answer(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if declared:
            handler.send_header("Content-Length", str(size))
        else:
            handler.send_header("Connection", "close")  # the body ends when the connection does
        handler.end_headers()
        chunk, written = b"x" * 65536, 0
        try:
            while written < size:
                handler.wfile.write(chunk)
                written += len(chunk)
        finally:
            if sent is not None:
                sent.append(written)
    return answer


# -- TLS -----------------------------------------------------------------------------------------------------------

def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context): a fresh test CA, and a certificate it signed for ``localhost`` and
    127.0.0.1; the client context trusts that CA only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hubfleet test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory = Path(tempfile.mkdtemp(prefix="hubfleet-tls-"))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client
