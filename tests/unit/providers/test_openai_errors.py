"""One decision per failed call, whoever made it: the jobs provider, batch evaluations and realtime generation all
read an answer (or a failure to get one) the same way, through ``service.providers.openai.errors``."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from email.utils import formatdate

import httpx
import pytest
from pydantic import SecretStr

from service.evaluations.generation import ChatRunner, FatalGenerationError, GenRequest, RateLimits
from service.evaluations.generation.batch import BatchError, BatchState, poll
from service.net import OutboundRefused, ResponseTooLarge
from service.providers.base import ProviderError
from service.providers.openai import client as openai_client
from service.providers.openai.client import ClientConfig, async_client, sync_client
from service.providers.openai.errors import classify
from service.providers.openai.provider import OpenAIProvider

BASE_URL = "https://api.example.test/v1"


def _error(status: int, code: str | None = None, err_type: str = "invalid_request_error", **headers: str):  # type: ignore[no-untyped-def]
    body = {
        "error": {"message": f"answer {status} {code or ''}".strip(), "type": err_type, "code": code, "param": None}
    }

    def answer(request: httpx.Request) -> httpx.Response:
        # An HTTP date is written when answering, 40 seconds ahead, like a server would.
        sent = {k: formatdate(time.time() + 40, usegmt=True) if v == "HTTP-date" else v for k, v in headers.items()}
        return httpx.Response(status, json=body, headers={"x-request-id": "req_1", **sent}, request=request)

    return answer


def _raise(exc: Exception):  # type: ignore[no-untyped-def]
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc

    return answer


@dataclass(frozen=True)
class Case:
    name: str
    answer: object
    kind: str
    retryable: bool
    fatal: bool
    retry_after: float | None = None


CASES = [
    Case("401", _error(401, "invalid_api_key"), "authentication", False, True),
    Case("403", _error(403, "unsupported_country_region_territory"), "permission", False, True),
    Case(
        "429 retry-after seconds",
        _error(429, "rate_limit_exceeded", "requests", **{"retry-after": "7"}),
        "rate_limited",
        True,
        False,
        7.0,
    ),
    Case(
        "429 retry-after HTTP-date",
        _error(429, "rate_limit_exceeded", "tokens", **{"retry-after": "HTTP-date"}),
        "rate_limited",
        True,
        False,
        40.0,
    ),
    Case(
        "429 retry-after-ms",
        _error(429, "rate_limit_exceeded", "requests", **{"retry-after-ms": "1500"}),
        "rate_limited",
        True,
        False,
        1.5,
    ),
    Case(
        "429 insufficient_quota",
        _error(429, "insufficient_quota", "insufficient_quota"),
        "insufficient_quota",
        False,
        True,
    ),
    Case("500", _error(500, None, "server_error"), "server_error", True, False),
    Case(
        "503 x-should-retry false",
        _error(503, None, "server_error", **{"x-should-retry": "false"}),
        "server_error",
        False,
        False,
    ),
    Case("400", _error(400, "invalid_value"), "bad_request", False, False),
    Case("connection error", _raise(httpx.ConnectError("connection refused")), "connection", True, False),
    Case(
        "response over the size cap",
        _raise(ResponseTooLarge("https://api.example.test", 1024, 10**9)),
        "bad_response",
        False,
        False,
    ),
    Case(
        "outbound refusal",
        _raise(OutboundRefused.for_address("10.0.0.5", ipaddress.ip_address("10.0.0.5"), "private")),
        "refused",
        False,
        True,
    ),
]


@pytest.fixture
def wire(monkeypatch):  # type: ignore[no-untyped-def]
    """The clients the factory builds answer with ``wire.answer`` (a mock transport under the real SDK)."""

    class Wire:
        answer: object = None

    w = Wire()
    transport = httpx.MockTransport(lambda request: w.answer(request))  # type: ignore[misc, operator]
    monkeypatch.setattr(openai_client.net, "sync_client", lambda **kw: httpx.Client(transport=transport))
    monkeypatch.setattr(openai_client.net, "async_client", lambda **kw: httpx.AsyncClient(transport=transport))
    return w


def _config() -> ClientConfig:
    return ClientConfig(base_url=BASE_URL, api_key=SecretStr("sk-test"), timeout_s=5)


def _close_to(value: float | None, expected: float | None) -> bool:
    if expected is None:
        return value is None
    return value is not None and abs(value - expected) <= 2.0


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_jobs_batches_and_realtime_decide_alike(case: Case, wire) -> None:  # type: ignore[no-untyped-def]
    wire.answer = case.answer

    # Jobs: the provider adapter raises ProviderError; transient means the job's step retries, else the job fails.
    provider = OpenAIProvider(api_key="sk-test", base_url=BASE_URL, max_retries=0)
    with pytest.raises(ProviderError) as job_error:
        provider.get_job("ftjob-1")
    assert job_error.value.transient == case.retryable, job_error.value.message
    assert _close_to(job_error.value.retry_after, case.retry_after)

    # Batch evaluations: BatchError, transient the same way (a fatal one fails the evaluation at once).
    with sync_client(_config(), max_retries=0) as client, pytest.raises(BatchError) as batch_error:
        poll(client, BatchState(tag="t", batch_id="batch_1", phase="submitted"))
    assert batch_error.value.transient == case.retryable
    assert batch_error.value.code == job_error.value.code
    assert _close_to(batch_error.value.retry_after, case.retry_after)

    # Realtime generation: fatal stops the run; retryable is tried again; the rest fails this one request.
    outcome = asyncio.run(_realtime(case))
    if case.fatal:
        assert outcome == ("fatal", case.kind)
    else:
        kind, attempts = outcome
        assert kind == case.kind and attempts == (2 if case.retryable else 1)


async def _realtime(case: Case) -> tuple[str, object]:
    now = [0.0]
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        now[0] += seconds

    limits = RateLimits(max_retries=1, backoff_base_s=0.01, backoff_max_s=0.01)
    runner = ChatRunner(
        client=async_client(_config(), max_connections=2), limits=limits, clock=lambda: now[0], sleep=sleep
    )
    request = GenRequest(key="k", model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    try:
        result = await runner.run(request)
    except FatalGenerationError as exc:
        return "fatal", exc.kind
    finally:
        await runner.aclose()
    if case.retry_after is not None:
        # The retry waited at least what the server asked for.
        assert sum(waited) >= case.retry_after - 2.0, waited
    return str(result.error_kind), result.attempts


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_classification_table(case: Case, wire) -> None:  # type: ignore[no-untyped-def]
    wire.answer = case.answer
    with sync_client(_config(), max_retries=0) as client, pytest.raises(Exception) as caught:
        client.fine_tuning.jobs.retrieve("ftjob-1")
    decided = classify(caught.value)
    assert (decided.kind, decided.retryable, decided.fatal) == (case.kind, case.retryable, case.fatal)
    assert _close_to(decided.retry_after, case.retry_after)
    if decided.status is not None:
        assert decided.request_id == "req_1"


@pytest.mark.strict_outbound
def test_the_real_outbound_layer_refuses_and_every_caller_stops(settings) -> None:  # type: ignore[no-untyped-def]
    """No mock: the factory's clients go through service.net, which refuses a loopback base URL at connect time."""
    config = ClientConfig(base_url="https://127.0.0.1:9/v1", api_key=SecretStr("sk-test"), timeout_s=5)
    provider = OpenAIProvider(api_key="sk-test", base_url=config.base_url, max_retries=0)
    with pytest.raises(ProviderError) as job_error:
        provider.get_job("ftjob-1")
    assert not job_error.value.transient and job_error.value.code == "url_not_allowed"
    assert "loopback" in job_error.value.message

    with sync_client(config, max_retries=0) as client, pytest.raises(BatchError) as batch_error:
        poll(client, BatchState(tag="t", batch_id="batch_1", phase="submitted"))
    assert not batch_error.value.transient

    async def realtime() -> str:
        async with ChatRunner(config, RateLimits(max_retries=3)) as runner:
            try:
                await runner.run(GenRequest(key="k", model="m", messages=[{"role": "user", "content": "hi"}]))
            except FatalGenerationError as exc:
                return exc.kind
        return "not stopped"

    assert asyncio.run(realtime()) == "refused"
