"""A real local webhook receiver (threaded http.server on 127.0.0.1, optionally TLS) for the sender tests."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import standardwebhooks
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.net import OutboundPolicy
from service.webhooks.signing import generate_secret


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""


@dataclass
class ReceiverState:
    secret: str
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    sni_names: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with state.lock:
            state.requests.append(Received(url.path, {k.lower(): v for k, v in self.headers.items()}, body, url.query))
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            self._route(url.path, query, body)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _route(self, path: str, query: dict[str, str], body: bytes) -> None:
        state = self.server.state
        if path == "/ok":
            self._reply(200, b'{"received": true}', {"content-type": "application/json"})
        elif path == "/verify":
            try:
                standardwebhooks.Webhook(state.secret).verify(body, dict(self.headers.items()))
            except standardwebhooks.WebhookVerificationError as exc:
                self._reply(401, str(exc).encode())
            else:
                self._reply(204)
        elif path.startswith("/status/"):
            headers = {}
            if "retry_after" in query:
                headers["retry-after"] = query["retry_after"]
            if "retry_after_in" in query:
                when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=int(query["retry_after_in"]))
                headers["retry-after"] = format_datetime(when, usegmt=True)
            self._reply(int(path.rsplit("/", 1)[1]), b"status body", headers)
        elif path == "/redirect":
            self._reply(302, b"", {"location": "/ok"})
        elif path == "/slow":
            state.stop.wait(float(query.get("delay", "1")))
            self._reply(200, b"slow but fine")
        elif path == "/big":
            self._reply(200, "é".encode() * 10_000, {"content-type": "text/plain; charset=utf-8"})
        elif path == "/binary":
            self._reply(200, b"ok\x00\xff\xfe tail")
        elif path == "/truncated":
            # Promise more body than is sent, then hang up: the status already decided the outcome.
            self.send_response(200)
            self.send_header("content-length", "5000")
            self.end_headers()
            self.wfile.write(b"partial")
            self.wfile.flush()
            self.close_connection = True
        elif path == "/trickle":
            # Each header line arrives within any per-read timeout, but the response never completes.
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for i in range(50):
                if state.stop.wait(0.1):
                    return
                self.wfile.write(f"x-filler-{i}: 1\r\n".encode())
                self.wfile.flush()
            self.close_connection = True
        elif path == "/set-cookie":
            self._reply(200, b"", {"set-cookie": "session=abc; Path=/"})
        else:
            self._reply(404, b"no such route")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    state: ReceiverState

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that time out or hang up on purpose are part of the tests, not receiver bugs.
        if isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class Receiver:
    server: _Server
    scheme: str

    @property
    def state(self) -> ReceiverState:
        return self.server.state

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        with self.state.lock:
            return [r.path for r in self.state.requests]


def _start(tls: ssl.SSLContext | None = None) -> Receiver:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = ReceiverState(secret=generate_secret())
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return Receiver(server, "https" if tls else "http")


def _stop(receiver: Receiver) -> None:
    receiver.state.stop.set()
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rcv = _start()
    yield rcv
    _stop(rcv)


@pytest.fixture
def second_receiver() -> Iterator[Receiver]:
    rcv = _start()
    yield rcv
    _stop(rcv)


@dataclass(frozen=True)
class Certificate:
    cert_pem: bytes
    key_pem: bytes

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.cert_pem.decode())


def make_certificate(dns_name: str) -> Certificate:
    """A self-signed certificate for ``dns_name`` (also its own CA, so a client can trust exactly it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Certificate(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


@pytest.fixture
def tls_receiver_factory(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Start an https receiver presenting a certificate for a given name; records the SNI each client sent."""
    started: list[Receiver] = []

    def start(dns_name: str) -> tuple[Receiver, Certificate]:
        cert = make_certificate(dns_name)
        cert_file, key_file = tmp_path / f"{dns_name}.crt", tmp_path / f"{dns_name}.key"
        cert_file.write_bytes(cert.cert_pem)
        key_file.write_bytes(cert.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_file, key_file)
        rcv_holder: list[Receiver] = []

        def remember_sni(sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            rcv_holder[0].state.sni_names.append(server_name)

        ctx.sni_callback = remember_sni  # type: ignore[assignment]
        rcv = _start(ctx)
        rcv_holder.append(rcv)
        started.append(rcv)
        return rcv, cert

    yield start
    for rcv in started:
        _stop(rcv)


@pytest.fixture
def local_policy() -> OutboundPolicy:
    """What a test deployment sets: http allowed and the loopback receiver allowlisted."""
    return OutboundPolicy.from_allowlist(["127.0.0.1/32"], allow_http=True)


def closed_port() -> int:
    """A local port with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    return closed_port()
