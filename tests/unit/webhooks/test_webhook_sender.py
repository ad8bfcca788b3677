from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.net import AsyncGuardedTransport, OutboundPolicy, resolve_checked
from service.webhooks.sender import (
    EXCERPT_BYTES,
    AsyncWebhookSender,
    Disposition,
    OutgoingWebhook,
    PerHostAsyncTransport,
    WebhookSender,
    decode_excerpt,
    parse_retry_after,
    send,
)
from service.webhooks.signing import build_headers

BODY = json.dumps({"id": "evt_1", "type": "ping", "data": {"object": {}}}).encode()
HEADERS = {"content-type": "application/json"}


@pytest.fixture
def sender(local_policy: OutboundPolicy):  # type: ignore[no-untyped-def]
    with WebhookSender(local_policy, timeout=2.0, connect_timeout=1.0) as s:
        yield s


def test_2xx_is_success_and_the_receiver_can_verify_the_signature(sender: WebhookSender, receiver) -> None:  # type: ignore[no-untyped-def]
    headers = build_headers(receiver.state.secret, "evt_1", BODY)
    outcome = sender.send(receiver.url("/verify"), headers, BODY)
    assert outcome.disposition is Disposition.SUCCESS and outcome.succeeded
    assert outcome.status_code == 204
    assert outcome.error is None
    assert outcome.remote_address == "127.0.0.1"
    assert 0 <= outcome.duration_ms < 2000
    got = receiver.state.requests[0]
    assert got.body == BODY
    assert got.headers["webhook-id"] == "evt_1"
    assert got.headers["user-agent"].startswith("finetune-control-plane-webhooks/")

    ok = sender.send(receiver.url("/ok"), headers, BODY)
    assert (ok.status_code, ok.response_excerpt) == (200, '{"received": true}')


def test_wrong_signature_is_a_receiver_error(sender: WebhookSender, receiver) -> None:  # type: ignore[no-untyped-def]
    headers = build_headers(receiver.state.secret, "evt_1", BODY + b"tampered")
    outcome = sender.send(receiver.url("/verify"), headers, BODY)
    assert (outcome.disposition, outcome.status_code) == (Disposition.RETRY, 401)


def test_500_is_retried(sender: WebhookSender, receiver) -> None:  # type: ignore[no-untyped-def]
    outcome = sender.send(receiver.url("/status/500"), HEADERS, BODY)
    assert outcome.disposition is Disposition.RETRY
    assert outcome.status_code == 500
    assert outcome.error == "HTTP 500 Internal Server Error"
    assert outcome.response_excerpt == "status body"
    assert outcome.retry_after_s is None


def test_410_means_gone(sender: WebhookSender, receiver) -> None:  # type: ignore[no-untyped-def]
    outcome = sender.send(receiver.url("/status/410"), HEADERS, BODY)
    assert (outcome.disposition, outcome.status_code) == (Disposition.GONE, 410)


def test_other_4xx_are_failures_to_retry(sender: WebhookSender, receiver) -> None:  # type: ignore[no-untyped-def]
    outcome = sender.send(receiver.url("/status/404"), HEADERS, BODY)
    assert (outcome.disposition, outcome.status_code, outcome.error) == (Disposition.RETRY, 404, "HTTP 404 Not Found")


def test_redirect_is_not_followed(sender: WebhookSender, receiver) -> None:  # type: ignore[no-untyped-def]
    outcome = sender.send(receiver.url("/redirect"), HEADERS, BODY)
    assert (outcome.disposition, outcome.status_code) == (Disposition.RETRY, 302)
    assert outcome.error == "redirect not followed: HTTP 302 to /ok"
    assert receiver.paths() == ["/redirect"]


def test_retry_after_seconds_and_dates_are_read(sender: WebhookSender, receiver) -> None:  # type: ignore[no-untyped-def]
    outcome = sender.send(receiver.url("/status/429?retry_after=120"), HEADERS, BODY)
    assert (outcome.disposition, outcome.status_code, outcome.retry_after_s) == (Disposition.RETRY, 429, 120.0)
    dated = sender.send(receiver.url("/status/503?retry_after_in=600"), HEADERS, BODY)
    assert dated.disposition is Disposition.RETRY
    assert dated.retry_after_s is not None and 590 <= dated.retry_after_s <= 600


def test_parse_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Wed, 01 Jan 2025 00:02:00 GMT", now) == 120.0
    assert parse_retry_after("Tue, 31 Dec 2024 00:00:00 GMT", now) == 0.0
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_timeout_is_retried_quickly(local_policy: OutboundPolicy, receiver) -> None:  # type: ignore[no-untyped-def]
    with WebhookSender(local_policy, timeout=0.3, connect_timeout=0.3) as fast:
        start = time.perf_counter()
        outcome = fast.send(receiver.url("/slow?delay=5"), HEADERS, BODY)
    assert time.perf_counter() - start < 2.0
    assert outcome.disposition is Disposition.RETRY
    assert outcome.status_code is None
    assert outcome.error == "no response within 0.3 s"


def test_connection_refused_is_retried(sender: WebhookSender, unused_port: int) -> None:
    outcome = sender.send(f"http://127.0.0.1:{unused_port}/hook", HEADERS, BODY)
    assert outcome.disposition is Disposition.RETRY
    assert outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith("connection failed")


def test_excerpt_is_limited_and_safe_to_store(sender: WebhookSender, receiver) -> None:  # type: ignore[no-untyped-def]
    big = sender.send(receiver.url("/big"), HEADERS, BODY)
    assert big.response_excerpt is not None
    assert len(big.response_excerpt.encode()) <= EXCERPT_BYTES
    assert set(big.response_excerpt) == {"é"}  # a character cut by the limit is dropped, not garbled
    binary = sender.send(receiver.url("/binary"), HEADERS, BODY)
    assert binary.response_excerpt is not None
    assert "\x00" not in binary.response_excerpt
    assert binary.response_excerpt.startswith("ok\ufffd")


def test_decode_excerpt_with_declared_and_unknown_charsets() -> None:
    assert decode_excerpt("größe".encode("latin-1"), "latin-1") == "größe"
    assert decode_excerpt(b"plain", "no-such-charset") == "plain"


def test_body_cut_short_after_a_2xx_status_is_still_success(sender: WebhookSender, receiver) -> None:  # type: ignore[no-untyped-def]
    outcome = sender.send(receiver.url("/truncated"), HEADERS, BODY)
    assert (outcome.disposition, outcome.status_code) == (Disposition.SUCCESS, 200)
    assert outcome.response_excerpt == "partial"


def test_cookies_are_not_kept_between_deliveries(sender: WebhookSender, receiver) -> None:  # type: ignore[no-untyped-def]
    sender.send(receiver.url("/set-cookie"), HEADERS, BODY)
    sender.send(receiver.url("/ok"), HEADERS, BODY)
    assert "cookie" not in receiver.state.requests[1].headers


def test_strict_policy_refuses_local_receiver_and_sends_nothing(receiver) -> None:  # type: ignore[no-untyped-def]
    with WebhookSender(OutboundPolicy(allow_http=True)) as strict:
        outcome = strict.send(receiver.url("/ok"), HEADERS, BODY)
        https_only = WebhookSender(OutboundPolicy()).send(receiver.url("/ok"), HEADERS, BODY)
    assert outcome.disposition is Disposition.REFUSED
    assert outcome.error == "refused: loopback address 127.0.0.1"
    assert https_only.disposition is Disposition.REFUSED and "https" in (https_only.error or "")
    assert receiver.state.requests == []


def test_hostname_resolving_to_private_address_is_refused_at_delivery(make_resolver, receiver) -> None:  # type: ignore[no-untyped-def]
    resolver = make_resolver({"hooks.example.com": ["10.0.0.7"]})
    with WebhookSender(OutboundPolicy(allow_http=True), resolver=resolver) as s:
        outcome = s.send(f"http://hooks.example.com:{receiver.port}/ok", HEADERS, BODY)
    assert outcome.disposition is Disposition.REFUSED
    assert outcome.error == "refused: private address 10.0.0.7 (resolved from hooks.example.com)"


def test_connects_to_the_address_it_checked_and_keeps_the_host_header(make_resolver, receiver) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []
    # System DNS has never heard of receiver.test: only our checked answer can reach the receiver.
    resolver = make_resolver({"receiver.test": ["127.0.0.1"]}, calls)
    policy = OutboundPolicy.from_allowlist(["127.0.0.1/32"], allow_http=True)
    with WebhookSender(policy, resolver=resolver) as s:
        outcome = s.send(receiver.url("/ok", host="receiver.test"), HEADERS, BODY)
    assert outcome.disposition is Disposition.SUCCESS, outcome.error
    assert receiver.state.requests[0].headers["host"] == f"receiver.test:{receiver.port}"
    assert calls == ["receiver.test"]


def test_dns_rebinding_after_registration_is_refused(make_resolver, receiver) -> None:  # type: ignore[no-untyped-def]
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    def rebinding(host: str, port: int):  # type: ignore[no-untyped-def]
        return make_resolver({host: next(answers)})(host, port)

    policy = OutboundPolicy(allow_http=True)
    resolve_checked("rebind.example", receiver.port, policy, rebinding)  # registration-time check passes
    with WebhookSender(policy, resolver=rebinding) as s:
        outcome = s.send(f"http://rebind.example:{receiver.port}/ok", HEADERS, BODY)
    assert outcome.disposition is Disposition.REFUSED
    assert "loopback address 127.0.0.1" in (outcome.error or "")
    assert receiver.state.requests == []


def test_unresolvable_host_is_a_retryable_connection_error(make_resolver) -> None:  # type: ignore[no-untyped-def]
    with WebhookSender(OutboundPolicy(), resolver=make_resolver({})) as s:
        outcome = s.send("https://gone.example/hook", HEADERS, BODY)
    assert outcome.disposition is Disposition.RETRY
    assert "could not resolve gone.example" in (outcome.error or "")


def test_tls_uses_the_hostname_for_sni_and_certificate_checks(make_resolver, tls_receiver_factory) -> None:  # type: ignore[no-untyped-def]
    rcv, cert = tls_receiver_factory("receiver.test")
    policy = OutboundPolicy.from_allowlist(["127.0.0.1/32"])
    resolver = make_resolver({"receiver.test": ["127.0.0.1"], "alias.test": ["127.0.0.1"]})
    with WebhookSender(policy, resolver=resolver, verify=cert.client_context()) as s:
        ok = s.send(rcv.url("/ok", host="receiver.test"), HEADERS, BODY)
        wrong_name = s.send(rcv.url("/ok", host="alias.test"), HEADERS, BODY)
    assert ok.disposition is Disposition.SUCCESS, ok.error
    assert rcv.state.sni_names[0] == "receiver.test"
    assert wrong_name.disposition is Disposition.RETRY
    assert "certificate" in (wrong_name.error or "").lower()
    assert rcv.paths() == ["/ok"]


def test_module_level_send_reuses_a_shared_sender(local_policy: OutboundPolicy, receiver) -> None:  # type: ignore[no-untyped-def]
    first = send(receiver.url("/ok"), HEADERS, BODY, policy=local_policy, timeout=2.0)
    second = send(receiver.url("/status/410"), HEADERS, BODY, policy=local_policy, timeout=2.0)
    assert (first.disposition, second.disposition) == (Disposition.SUCCESS, Disposition.GONE)
    assert send(receiver.url("/ok"), HEADERS, BODY).disposition is Disposition.REFUSED  # default policy is strict


def test_invalid_timeouts_are_rejected(local_policy: OutboundPolicy) -> None:
    with pytest.raises(ValueError, match="positive"):
        WebhookSender(local_policy, timeout=0)


async def _timed(sender: AsyncWebhookSender, url: str, t0: float) -> tuple[str, float]:
    outcome = await sender.send(url, HEADERS, BODY)
    return outcome.disposition.value, time.perf_counter() - t0


def test_async_slow_host_does_not_hold_up_other_hosts(local_policy: OutboundPolicy, receiver, second_receiver) -> None:  # type: ignore[no-untyped-def]
    slow_url = second_receiver.url("/slow?delay=1.0")

    async def main() -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        async with AsyncWebhookSender(local_policy, timeout=5, max_concurrency=4, per_host_limit=2) as s:
            t0 = time.perf_counter()
            slow = [asyncio.create_task(_timed(s, slow_url, t0)) for _ in range(6)]
            await asyncio.sleep(0.05)  # the slow host's requests are queued first
            fast = [asyncio.create_task(_timed(s, receiver.url("/ok"), t0)) for _ in range(20)]
            return await asyncio.gather(*slow), await asyncio.gather(*fast)

    slow, fast = asyncio.run(main())
    assert all(d == "success" for d, _ in slow + fast)
    assert max(t for _, t in fast) < min(t for _, t in slow)
    assert second_receiver.state.max_in_flight <= 2
    assert max(t for _, t in slow) >= 2.9  # 6 requests, 2 at a time, 1 s each


def test_async_deliver_many_keeps_order_and_classifies(local_policy: OutboundPolicy, receiver, unused_port: int) -> None:  # type: ignore[no-untyped-def]
    messages = [
        OutgoingWebhook(receiver.url("/ok"), HEADERS, BODY),
        OutgoingWebhook(receiver.url("/status/500"), HEADERS, BODY),
        OutgoingWebhook(receiver.url("/status/410"), HEADERS, BODY),
        OutgoingWebhook(receiver.url("/redirect"), HEADERS, BODY),
        OutgoingWebhook(f"http://127.0.0.1:{unused_port}/", HEADERS, BODY),
        OutgoingWebhook("http://10.0.0.1/hook", HEADERS, BODY),
        OutgoingWebhook(receiver.url("/status/429?retry_after=7"), HEADERS, BODY),
    ]

    async def main():  # type: ignore[no-untyped-def]
        async with AsyncWebhookSender(local_policy, timeout=2) as s:
            return await s.deliver_many(messages)

    outcomes = asyncio.run(main())
    assert [o.disposition.value for o in outcomes] == [
        "success",
        "retry",
        "gone",
        "retry",
        "retry",
        "refused",
        "retry",
    ]
    assert [o.status_code for o in outcomes] == [200, 500, 410, 302, None, None, 429]
    assert outcomes[6].retry_after_s == 7.0
    assert "/redirect" in receiver.paths() and receiver.paths().count("/ok") == 1


def test_async_timeout_bounds_the_whole_exchange(local_policy: OutboundPolicy, receiver) -> None:  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        async with AsyncWebhookSender(local_policy, timeout=0.3, connect_timeout=0.2) as s:
            return await s.send(receiver.url("/slow?delay=5"), HEADERS, BODY)

    start = time.perf_counter()
    outcome = asyncio.run(main())
    assert time.perf_counter() - start < 2.0
    assert (outcome.disposition, outcome.error) == (Disposition.RETRY, "no response within 0.3 s")


def test_async_budget_stops_a_receiver_trickling_its_headers(local_policy: OutboundPolicy, receiver) -> None:  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        async with AsyncWebhookSender(local_policy, timeout=0.5, connect_timeout=0.2) as s:
            return await s.send(receiver.url("/trickle"), HEADERS, BODY)

    start = time.perf_counter()
    outcome = asyncio.run(main())
    assert time.perf_counter() - start < 2.0  # the receiver would take 5 s
    assert (outcome.disposition, outcome.error) == (Disposition.RETRY, "no response within 0.7 s")


def test_async_rebinding_is_refused(make_resolver, receiver) -> None:  # type: ignore[no-untyped-def]
    resolver = make_resolver({"hooks.example.com": ["192.168.1.20"]})

    async def main():  # type: ignore[no-untyped-def]
        async with AsyncWebhookSender(OutboundPolicy(allow_http=True), resolver=resolver) as s:
            return await s.send(f"http://hooks.example.com:{receiver.port}/ok", HEADERS, BODY)

    outcome = asyncio.run(main())
    assert outcome.disposition is Disposition.REFUSED
    assert outcome.error == "refused: private address 192.168.1.20 (resolved from hooks.example.com)"


def test_retry_after_date_in_the_past_is_zero() -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(past) == 0.0


def test_idle_per_host_pools_are_evicted(local_policy: OutboundPolicy, receiver, second_receiver, make_resolver) -> None:  # type: ignore[no-untyped-def]
    resolver = make_resolver({"receiver.test": ["127.0.0.1"]})
    made: list[AsyncGuardedTransport] = []

    def make_pool() -> AsyncGuardedTransport:
        made.append(AsyncGuardedTransport(local_policy, resolver=resolver))
        return made[-1]

    async def main() -> list[int]:
        transport = PerHostAsyncTransport(make_pool, max_pools=1)
        sizes = []
        async with httpx.AsyncClient(transport=transport) as client:
            slow = asyncio.create_task(client.post(second_receiver.url("/slow?delay=0.5")))
            await asyncio.sleep(0.1)
            assert (await client.post(receiver.url("/ok"))).status_code == 200
            sizes.append(len(transport))  # the busy pool is kept although max_pools=1
            assert (await slow).status_code == 200
            assert (await client.post(receiver.url("/ok"))).status_code == 200
            sizes.append(len(transport))  # reusing a pool evicts nothing
            assert (await client.post(receiver.url("/ok", host="receiver.test"))).status_code == 200
            sizes.append(len(transport))  # a new origin closes the idle pools beyond the limit
        return sizes

    assert asyncio.run(main()) == [2, 2, 1]
    assert len(made) == 3
