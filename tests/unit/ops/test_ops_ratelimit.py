"""Rate limits: token buckets per API key (in-process and Redis), 429 problems with headers, health exempt, stricter
limits per address without a valid key. Time is travelled with the limiter's clock, never slept."""

from __future__ import annotations

import asyncio
import os

import pytest

from service.api.ratelimit import Limits, MemoryBuckets, RateLimiter, decide
from service.openai_compat.errors import is_openai_path


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_bucket_allows_the_burst_then_refills_at_the_rate():
    buckets, limits, now = MemoryBuckets(), Limits(rate_per_s=2.0, burst=3), 100.0
    assert [buckets.take("k", limits, 1, now)[0] for _ in range(4)] == [True, True, True, False]
    allowed, tokens = buckets.take("k", limits, 1, now)
    d = decide(allowed, tokens, limits, 1)
    assert not d.allowed and d.remaining == 0 and d.retry_after_s == 1 and d.reset_s == 2
    assert buckets.take("k", limits, 1, now + 0.49)[0] is False  # 0.98 of a token
    assert buckets.take("k", limits, 1, now + 0.5)[0] is True
    # A long idle time refills to the burst, never above it.
    assert [buckets.take("k", limits, 1, now + 3600)[0] for _ in range(4)] == [True, True, True, False]
    assert buckets.take("other", limits, 1, now)[0] is True  # buckets are independent


def test_memory_buckets_stay_bounded():
    buckets, limits = MemoryBuckets(max_entries=100), Limits(rate_per_s=1.0, burst=5)
    for i in range(1000):
        buckets.take(f"k{i}", limits, 1, float(i))
    assert len(buckets) <= 100


def _limiter(key_burst: int = 3, anon_burst: int = 2, **kwargs) -> RateLimiter:  # type: ignore[no-untyped-def]
    return RateLimiter(Limits(1.0, key_burst), Limits(0.5, anon_burst), clock=Clock(), **kwargs)


def test_redis_buckets_are_shared_between_processes():
    fakeredis = pytest.importorskip("fakeredis")
    server = fakeredis.FakeServer()

    def connect():  # type: ignore[no-untyped-def]
        return fakeredis.FakeAsyncRedis(server=server)

    a, b = _limiter(redis_connect=connect), _limiter(redis_connect=connect)
    b.clock = a.clock

    async def run() -> list[bool]:
        out = []
        for limiter in (a, b, a, b):
            out.append((await limiter.take("key:x", limiter.key_limits)).allowed)
        a.clock.t += 1.0  # type: ignore[attr-defined]
        out.append((await b.take("key:x", b.key_limits)).allowed)
        return out

    # Burst 3 shared by both "processes"; a second later one more request fits.
    assert asyncio.run(run()) == [True, True, True, False, True]
    assert len(a.memory) == 0 and len(b.memory) == 0


def test_redis_failure_falls_back_to_in_process_limits(caplog):
    def connect():  # type: ignore[no-untyped-def]
        raise ConnectionError("redis is down")

    limiter = _limiter(redis_connect=connect)

    async def run() -> list[bool]:
        return [(await limiter.take("key:x", limiter.key_limits)).allowed for _ in range(4)]

    assert asyncio.run(run()) == [True, True, True, False]
    assert "cannot reach Redis" in caplog.text


@pytest.mark.redis
def test_real_redis_bucket():
    import redis.asyncio

    from service.api.ratelimit import key_digest

    url = os.environ.get("FINETUNE_TEST_REDIS_URL") or os.environ["FINETUNE_TEST_BROKER_URL"]
    limiter = _limiter(redis_connect=lambda: redis.asyncio.Redis.from_url(url))
    bucket = f"key:{key_digest(os.urandom(8).hex())}"

    async def run() -> list[bool]:
        return [(await limiter.take(bucket, limiter.key_limits)).allowed for _ in range(4)]

    assert asyncio.run(run()) == [True, True, True, False]
    assert len(limiter.memory) == 0


@pytest.fixture
def limited(settings, monkeypatch):  # type: ignore[no-untyped-def]
    """An app with small limits and a clock the test moves."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("FINETUNE_RATE_LIMIT_PER_S", "1")
    monkeypatch.setenv("FINETUNE_RATE_LIMIT_BURST", "5")
    monkeypatch.setenv("FINETUNE_ANONYMOUS_RATE_LIMIT_PER_S", "0.5")
    monkeypatch.setenv("FINETUNE_ANONYMOUS_RATE_LIMIT_BURST", "3")
    # In-process buckets here (a Redis one would keep its level between test runs); Redis is tested above.
    monkeypatch.delenv("FINETUNE_REDIS_URL", raising=False)
    reset_settings_cache()
    app = create_app(get_settings().model_copy(update={"broker_url": "memory://"}))
    clock = app.state.rate_limiter.clock = Clock()
    with TestClient(app, raise_server_exceptions=False) as c:
        c.clock = clock  # type: ignore[attr-defined]
        yield c


def test_api_key_gets_429_problem_with_headers_after_its_burst(limited, project):
    seen = [limited.get("/v1/project", headers=project["headers"]) for _ in range(6)]
    assert [r.status_code for r in seen] == [200] * 5 + [429]
    assert [r.headers["x-ratelimit-remaining"] for r in seen[:5]] == ["4", "3", "2", "1", "0"]
    assert seen[0].headers["x-ratelimit-limit"] == "5"
    refused = seen[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-ratelimit-reset"] == "5"
    body = refused.json()
    assert body["status"] == 429 and body["code"] == "rate_limited" and body["retry_after"] == 1
    assert body["request_id"] == refused.headers["x-request-id"]
    limited.clock.t += 1.0
    assert limited.get("/v1/project", headers=project["headers"]).status_code == 200


def test_openai_routes_answer_the_rate_limit_in_openai_shape(limited, project):
    """The SDK reads the status and retry-after (and raises RateLimitError); the body is OpenAI's error object."""
    seen = [limited.get("/v1/models", headers=project["headers"]) for _ in range(6)]
    assert [r.status_code for r in seen] == [200] * 5 + [429]
    refused = seen[-1]
    assert refused.headers["retry-after"] == "1" and refused.headers["content-type"] == "application/json"
    assert refused.json() == {
        "error": {
            "message": refused.json()["error"]["message"],
            "type": "requests",
            "param": None,
            "code": "rate_limited",
        }
    }


def test_keys_have_their_own_buckets(limited, project, other_project):
    for _ in range(5):
        assert limited.get("/v1/project", headers=project["headers"]).status_code == 200
    assert limited.get("/v1/project", headers=project["headers"]).status_code == 429
    assert limited.get("/v1/project", headers=other_project["headers"]).status_code == 200


def test_health_is_never_limited(limited):
    assert all(limited.get("/healthz").status_code == 200 for _ in range(20))
    assert all(limited.get("/readyz").status_code in (200, 503) for _ in range(5))
    assert "x-ratelimit-limit" not in limited.get("/healthz").headers


def test_requests_without_a_key_are_limited_per_address_more_strictly(limited, project):
    codes = [limited.get("/v1/project").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    # A known good key is limited by its own bucket, not the address's.
    assert limited.get("/v1/project", headers=project["headers"]).status_code in (200, 429)


def test_guessed_keys_cost_the_address_and_cannot_dodge_it(limited, project):
    # A key first seen works (its first request also needs room at the address): learn it before the address fills.
    assert limited.get("/v1/project", headers=project["headers"]).status_code == 200
    codes = [limited.get("/v1/project", headers={"Authorization": f"Bearer guess-{i}"}).status_code for i in range(5)]
    # Each guess has a fresh key bucket, but every 401 costs the address: after the burst of 3, guesses are refused.
    assert codes == [401, 401, 401, 429, 429]
    refused = limited.get("/v1/project", headers={"Authorization": "Bearer guess-new"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    # The known key from the same address still works.
    assert limited.get("/v1/project", headers=project["headers"]).status_code == 200
    limited.clock.t += 2.0  # one anonymous request's worth
    assert limited.get("/v1/project", headers={"Authorization": "Bearer guess-late"}).status_code == 401


def test_limits_off_with_rate_zero(settings):
    from service.api.app import create_app

    app = create_app(settings.model_copy(update={"rate_limit_per_s": 0.0}))
    assert app.state.rate_limiter is None


def test_429_is_documented_on_every_operation_but_health(app):
    spec = app.openapi()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path in ("/healthz", "/readyz"):
                assert "429" not in op["responses"]
                continue
            r = op["responses"].get("429")
            assert r is not None, f"{method} {path}"
            # The OpenAI-shaped routes answer OpenAI's error shape, so the SDK raises RateLimitError.
            shape = "OpenAIErrorResponse" if is_openai_path(path) else "Problem"
            assert r["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{shape}"}
            assert "Retry-After" in r["headers"]


@pytest.mark.redis
def test_the_app_keeps_its_buckets_in_redis(client, project, settings):
    import redis

    from service.api.ratelimit import key_digest, redis_url

    assert client.get("/v1/project", headers=project["headers"]).status_code == 200
    r = redis.Redis.from_url(redis_url(settings))
    assert r.exists(f"finetune:ratelimit:key:{key_digest(project['key'])}")
    assert len(client.app.state.rate_limiter.memory) == 0  # nothing fell back to in-process buckets
