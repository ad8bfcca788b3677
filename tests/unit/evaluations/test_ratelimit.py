from __future__ import annotations

import asyncio
from email.utils import formatdate

import pytest

from service.evaluations.generation.ratelimit import RateLimiter, Reservation
from service.providers.openai.headers import RateLimitHeaders, parse_duration, parse_retry_after


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def _limiter(t: FakeTime, **kwargs) -> RateLimiter:
    return RateLimiter(clock=t.clock, sleep=t.sleep, **kwargs)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1.5s", 1.5),
        ("1h2m3s", 3723.0),
        ("1m30.5s", 90.5),
        ("0s", 0.0),
        ("250us", 0.00025),
        ("20", 20.0),
        (" 2s ", 2.0),
        ("", None),
        ("soon", None),
        ("5x", None),
        ("1s5", None),
        ("-3s", None),
        (None, None),
    ],
)
def test_parse_duration(text: str | None, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "junk", "retry-after": "3"}) == 3.0
    date = formatdate(1_000_030, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=1_000_000) == pytest.approx(30.0)
    assert parse_retry_after({"retry-after": "whenever"}) is None
    assert parse_retry_after({}) is None


def test_rate_limit_headers() -> None:
    headers = RateLimitHeaders.parse(
        {
            "x-ratelimit-limit-requests": "3000",
            "x-ratelimit-remaining-requests": "2999",
            "x-ratelimit-reset-requests": "20ms",
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "1m0s",
        }
    )
    assert (headers.limit_requests, headers.remaining_requests, headers.reset_requests_s) == (3000, 2999, 0.02)
    # 250 of 1000 tokens come back after a quarter of the minute it takes to refill all of them.
    assert headers.seconds_until("tokens", 250) == pytest.approx(15.0)
    assert headers.seconds_until("requests", 1) == 0.0
    assert RateLimitHeaders.parse({}).seconds_until("requests", 1) is None


async def test_requests_are_paced_evenly_after_a_one_second_burst() -> None:
    t = FakeTime()
    limiter = _limiter(t, requests_per_minute=600)  # 10 per second, burst of 10
    times = []
    for _ in range(30):
        await limiter.acquire(0)
        times.append(t.now - 1000.0)
    assert times[:10] == [0.0] * 10
    assert times[10:] == pytest.approx([0.1 * i for i in range(1, 21)])


async def test_concurrent_callers_share_the_budget() -> None:
    t = FakeTime()
    limiter = _limiter(t, requests_per_minute=120, burst_seconds=1.0)  # 2 per second, burst of 2
    stamps: list[float] = []

    async def caller() -> None:
        for _ in range(5):
            await limiter.acquire(0)
            stamps.append(t.now - 1000.0)

    await asyncio.gather(*(caller() for _ in range(4)))
    assert len(stamps) == 20
    # Two at once (the burst), then the other 18 at two per second, whoever asks.
    assert sorted(stamps) == pytest.approx([0.0, 0.0] + [0.5 * i for i in range(1, 19)])


async def test_token_reservations_are_corrected_with_usage() -> None:
    t = FakeTime()
    limiter = _limiter(t, tokens_per_minute=6000)  # 100 per second, burst of 100
    first = await limiter.acquire(80)
    limiter.settle(first, 20)  # the call used 20, not 80: 60 come back
    await limiter.acquire(80)
    assert t.now == 1000.0
    await limiter.acquire(80)  # 0 left after 20 + 80, needs 80 more: 0.8 s
    assert t.now == pytest.approx(1000.8)
    # A request larger than the burst waits for a full bucket and runs into debt rather than forever.
    big = await limiter.acquire(1000)
    assert big.tokens == 1000 and limiter.bucket_level("tokens") < 0


async def test_limits_are_learned_from_headers_and_configured_ones_are_ceilings() -> None:
    t = FakeTime()
    learner = _limiter(t)
    assert learner.limits == {"requests": None, "tokens": None}
    r = await learner.acquire(10)
    learner.observe(RateLimitHeaders(limit_requests=120, limit_tokens=60_000), r)
    assert learner.limits == {"requests": 120.0, "tokens": 60_000.0}
    capped = _limiter(t, requests_per_minute=60)
    r = await capped.acquire(0)
    capped.observe(RateLimitHeaders(limit_requests=3000), r)
    assert capped.limits["requests"] == 60.0
    lowered = _limiter(t, requests_per_minute=6000)
    r = await lowered.acquire(0)
    lowered.observe(RateLimitHeaders(limit_requests=600), r)
    assert lowered.limits["requests"] == 600.0
    ignoring = _limiter(t, learn_from_headers=False)
    ignoring.observe(RateLimitHeaders(limit_requests=10), Reservation(1, 0))
    assert ignoring.limits["requests"] is None


async def test_remaining_header_lowers_the_local_level_minus_later_requests() -> None:
    t = FakeTime()
    limiter = _limiter(t, requests_per_minute=6000)  # burst of 100
    first = await limiter.acquire(0)
    for _ in range(4):
        await limiter.acquire(0)
    # The server had 10 left after the first request; 4 went out after it, so at most 6 remain.
    limiter.observe(RateLimitHeaders(remaining_requests=10), first)
    assert limiter.bucket_level("requests") == pytest.approx(6.0)
    # A header can lower the level but never raise it.
    limiter.observe(RateLimitHeaders(remaining_requests=90), first)
    assert limiter.bucket_level("requests") == pytest.approx(6.0)


async def test_pause_holds_everyone_and_restarts_paced() -> None:
    t = FakeTime()
    limiter = _limiter(t, requests_per_minute=600)
    await limiter.acquire(0)
    limiter.pause(5.0)
    assert limiter.paused_until == pytest.approx(1005.0)
    await limiter.acquire(0)
    # After the pause the bucket starts empty: the first request waits one interval (0.1 s), not a burst.
    assert t.now == pytest.approx(1005.1)
    await limiter.acquire(0)
    assert t.now == pytest.approx(1005.2)
