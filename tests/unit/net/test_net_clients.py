"""The outbound clients: connect-time checks, no redirects, no environment proxies, capped responses, required
timeouts, refusals recognisable through the openai SDK; trusted operator origins; settings; checks at creation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from service import net
from service.errors import InvalidInput
from service.net import (
    HostResolutionError,
    OutboundPolicy,
    OutboundRefused,
    ResponseTooLarge,
    UrlNotAllowed,
    allowed_url,
    check_url,
    is_refusal,
    outbound_policy,
)
from service.net import resolve as resolve_module

LOCAL = OutboundPolicy.from_allowlist(["127.0.0.1/32"], allow_http=True)
STRICT_HTTP = OutboundPolicy(allow_http=True)


class Server:
    """A loopback HTTP server whose answers the test sets per path; counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.paths.append(self.path)
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("location", "http://169.254.169.254/latest/meta-data/")
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif self.path.startswith("/big"):
                    body = b"x" * 1000
                    self.send_response(200)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path.startswith("/chunked"):
                    self.send_response(200)
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for _ in range(10):
                        self.wfile.write(b"64\r\n" + b"y" * 100 + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    body = b'{"object": "list", "data": []}'
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class _Server(ThreadingHTTPServer):
            def process_request(self, request: Any, client_address: Any) -> None:
                outer.connections += 1
                super().process_request(request, client_address)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def test_allowlisted_destination_is_reached(server: Server) -> None:
    with net.sync_client(timeout=5, policy=LOCAL) as client:
        assert client.get(server.url("/ok")).json() == {"object": "list", "data": []}

    async def main() -> int:
        async with net.async_client(timeout=5, policy=LOCAL) as client:
            return (await client.get(server.url("/ok"))).status_code

    assert asyncio.run(main()) == 200


def test_loopback_is_refused_at_connect_and_nothing_is_sent(server: Server) -> None:
    with net.sync_client(timeout=5, policy=STRICT_HTTP) as client, pytest.raises(OutboundRefused) as caught:
        client.get(server.url("/ok"))
    assert str(caught.value) == "refused: loopback address 127.0.0.1"

    async def main() -> None:
        async with net.async_client(timeout=5, policy=STRICT_HTTP) as client:
            await client.get(server.url("/ok"))

    with pytest.raises(OutboundRefused):
        asyncio.run(main())
    assert server.connections == 0


def test_a_name_is_checked_at_every_connection(server: Server, make_resolver, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []
    # Rebinding: an allowed answer first (nothing listens there: the connection fails), then the server's address.
    monkeypatch.setattr(
        resolve_module, "system_resolver", make_resolver({"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]}, calls)
    )
    policy = OutboundPolicy.from_allowlist(["127.0.0.2/32"], allow_http=True)
    with net.sync_client(timeout=httpx.Timeout(5, connect=0.5), policy=policy) as client:
        with pytest.raises((httpx.ConnectError, httpx.ConnectTimeout)):
            client.get(server.url("/ok", host="rebind.test"))
        with pytest.raises(OutboundRefused, match=r"loopback address 127\.0\.0\.1 \(resolved from rebind\.test\)"):
            client.get(server.url("/ok", host="rebind.test"))
    assert calls == ["rebind.test", "rebind.test"] and server.connections == 0


def test_redirects_are_returned_not_followed_and_a_followed_hop_is_checked(server: Server) -> None:
    with net.sync_client(timeout=5, policy=LOCAL) as client:
        r = client.get(server.url("/redirect"))
        assert r.status_code == 302 and not client.follow_redirects
        # A caller that opts into following still cannot reach what the policy refuses.
        with pytest.raises(OutboundRefused, match="cloud metadata"):
            client.get(server.url("/redirect"), follow_redirects=True)
    assert server.paths == ["/redirect", "/redirect"]


def test_environment_proxies_are_ignored(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy would do the connecting (and the resolving) for us, unchecked; here it would fail every request.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with net.sync_client(timeout=5, policy=LOCAL) as client:
        assert client.get(server.url("/ok")).status_code == 200


def test_responses_larger_than_the_cap_raise(server: Server) -> None:
    with net.sync_client(timeout=5, policy=LOCAL, max_response_bytes=100) as client:
        with pytest.raises(ResponseTooLarge, match="declares 1000 bytes; the limit is 100 bytes"):
            client.get(server.url("/big"))
        with pytest.raises(ResponseTooLarge, match="is larger; the limit is 100 bytes"):
            client.get(server.url("/chunked"))
        assert client.get(server.url("/ok")).status_code == 200  # the client stays usable

    async def main() -> None:
        async with net.async_client(timeout=5, policy=LOCAL, max_response_bytes=500) as client:
            await client.get(server.url("/chunked"))

    with pytest.raises(ResponseTooLarge):
        asyncio.run(main())
    with net.sync_client(timeout=5, policy=LOCAL, max_response_bytes=None) as client:
        assert len(client.get(server.url("/big")).content) == 1000


@pytest.mark.parametrize("timeout", [httpx.Timeout(None), httpx.Timeout(5, read=None), 0, -1])
def test_timeouts_are_required(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeouts"):
        net.sync_client(timeout=timeout, policy=LOCAL)
    with pytest.raises(ValueError, match="timeouts"):
        net.async_client(timeout=timeout, policy=LOCAL)


def test_refusals_are_recognised_through_the_openai_sdk(server: Server) -> None:
    client = openai.OpenAI(
        api_key="sk-test",
        base_url=server.url("/v1"),
        max_retries=0,
        http_client=net.sync_client(timeout=5, policy=STRICT_HTTP),
    )
    with pytest.raises(openai.APIConnectionError) as caught:
        client.models.list()
    assert is_refusal(caught.value)
    assert not is_refusal(openai.APIConnectionError(request=httpx.Request("GET", "https://example.com/")))
    assert not is_refusal(HostResolutionError("could not resolve x"))
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = UrlNotAllowed("URL must use https")
    assert is_refusal(wrapped)
    assert server.connections == 0


def test_operator_configured_origins_are_trusted_and_nothing_else(server: Server) -> None:
    policy = OutboundPolicy.from_allowlist([], trusted_urls=[server.url("/v1")])
    assert check_url(server.url("/v1/models"), policy).port == server.port
    with pytest.raises(OutboundRefused, match="loopback"):
        check_url(f"https://127.0.0.1:{server.port + 1}/", policy)  # another port of the same host
    with pytest.raises(UrlNotAllowed, match="must use https"):
        check_url("http://example.com/", policy)
    with net.sync_client(timeout=5, policy=policy) as client:
        assert client.get(server.url("/v1/models")).status_code == 200


def test_policy_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from service.settings import Settings

    for name in ("OUTBOUND_ALLOWLIST", "OUTBOUND_ALLOW_HTTP", "WEBHOOK_ALLOWLIST", "WEBHOOK_ALLOW_HTTP"):
        monkeypatch.delenv(f"FINETUNE_{name}", raising=False)
    monkeypatch.setenv("FINETUNE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FINETUNE_OUTBOUND_ALLOWLIST", "10.1.0.0/16, models.internal,*.svc.cluster.local")
    monkeypatch.setenv("FINETUNE_WEBHOOK_ALLOWLIST", '["192.168.7.0/24"]')  # the old name, merged in
    monkeypatch.setenv("FINETUNE_WEBHOOK_ALLOW_HTTP", "true")
    monkeypatch.setenv("FINETUNE_OPENAI_BASE_URL", "http://10.9.9.9:8000/v1")
    policy = outbound_policy(Settings(_env_file=None))
    assert policy.allow_http
    assert policy.host_allowed("models.internal") and policy.host_allowed("vllm.ns.svc.cluster.local")
    check_url("http://10.1.2.3/v1", policy)
    check_url("http://192.168.7.7/hook", policy)
    check_url("http://10.9.9.9:8000/v1/chat/completions", policy)  # the operator's own base URL
    with pytest.raises(OutboundRefused, match="private"):
        check_url("http://10.9.9.9:8001/", policy)

    monkeypatch.setenv("FINETUNE_OUTBOUND_ALLOWLIST", "10.0.0.0/8,not a host!")
    with pytest.raises(ValueError, match="'not a host!' is neither a CIDR nor a host name"):
        Settings(_env_file=None)


def test_names_are_resolved_when_a_url_is_given(make_resolver, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def slow(host: str, port: int) -> list[Any]:
        time.sleep(1.0)
        raise AssertionError("never awaited")

    resolver = make_resolver({"inside.test": ["10.0.0.8"], "outside.test": ["93.184.216.34"]})
    monkeypatch.setattr(resolve_module, "system_resolver", lambda h, p: slow(h, p) if h == "slow.test" else resolver(h, p))
    with pytest.raises(InvalidInput) as caught:
        allowed_url("https://inside.test/v1", field="candidates.0.base_url", policy=OutboundPolicy())
    assert caught.value.code == "url_not_allowed"
    assert caught.value.errors == [
        {
            "code": "url_not_allowed",
            "message": "refused: private address 10.0.0.8 (resolved from inside.test)",
            "field": "candidates.0.base_url",
        }
    ]
    assert allowed_url("https://outside.test/v1", field="url", policy=OutboundPolicy()) == "https://outside.test/v1"
    # Not resolvable (yet), or too slow to answer: accepted, and checked again at every connection.
    assert allowed_url("https://unknown.test/", field="url", policy=OutboundPolicy())
    started = time.monotonic()
    resolve_module.resolve_briefly("slow.test", 443, OutboundPolicy(), timeout=0.1)
    assert time.monotonic() - started < 0.9
