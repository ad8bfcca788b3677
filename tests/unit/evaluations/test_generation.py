"""The generator against the OpenAI emulator, a real HTTP server: results, resumption, limits, retries, faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from evaluations_support.recording import RecordingTransport
from openai import AsyncOpenAI

from emulator import EmulatorConfig, OpenAIEmulator, RateLimit
from service.evaluations.generation import (
    ChatRunner,
    ClientConfig,
    GenRequest,
    GenResult,
    JudgeChatClient,
    RateLimits,
    generate_all,
    generate_all_sync,
)
from service.evaluations.graders import Sample, get_grader

MODEL = "gpt-4o-mini"
CHAT = "POST /v1/chat/completions"


def _requests(n: int, *, prefix: str = "k", **params) -> list[GenRequest]:
    return [
        GenRequest(
            key=f"{prefix}{i}",
            model=MODEL,
            messages=[{"role": "user", "content": f"question {i}"}],
            params={"temperature": 0, **params},
        )
        for i in range(n)
    ]


@pytest.fixture
def emu_config() -> EmulatorConfig:
    return EmulatorConfig(chat_latency_seconds=0.02)


@pytest.fixture
def emu(emu_config: EmulatorConfig) -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(config=emu_config) as emulator:
        yield emulator


class Wire:
    """An SDK client whose traffic is recorded."""

    def __init__(self, emu: OpenAIEmulator, *, api_key: str = "sk-test", timeout: float = 10.0) -> None:
        self.transport = RecordingTransport()
        self.client = AsyncOpenAI(
            base_url=emu.base_url,
            api_key=api_key,
            timeout=timeout,
            http_client=httpx.AsyncClient(transport=self.transport, timeout=timeout),
        )

    async def run(self, requests, **kwargs) -> tuple[list[GenResult], object]:
        results: list[GenResult] = []
        kwargs.setdefault("on_result", results.append)
        try:
            stats = await generate_all(requests, client=self.client, **kwargs)
        finally:
            await self.client.close()
        return results, stats


async def test_generates_every_request_once_within_concurrency(emu: OpenAIEmulator) -> None:
    wire = Wire(emu)
    stored: dict[str, GenResult] = {}

    async def store(result: GenResult) -> None:  # async callbacks are awaited
        assert result.key not in stored
        stored[result.key] = result

    _, stats = await wire.run(_requests(40), on_result=store, limits=RateLimits(max_concurrency=6))
    assert sorted(stored) == sorted(f"k{i}" for i in range(40))
    first = stored["k3"]
    assert first.ok and first.output == "Emulated reply from gpt-4o-mini-2024-07-18 to: question 3"
    assert first.finish_reason == "stop" and first.attempts == 1 and first.request_id
    assert first.input_tokens > 0 and first.output_tokens > 0 and first.latency_s >= 0.02
    assert (stats.succeeded, stats.failed, stats.attempts, stats.retries) == (40, 0, 40, 0)
    assert stats.input_tokens == sum(r.input_tokens for r in stored.values())
    assert 2 <= wire.transport.max_in_flight <= 6 and stats.max_in_flight <= 6
    assert stats.latency_p50_s is not None and stats.latency_p95_s >= stats.latency_p50_s
    assert emu.calls(CHAT) == 40


async def test_resumed_run_skips_done_keys_and_duplicates(emu: OpenAIEmulator) -> None:
    requests = _requests(12)
    results, stats = await Wire(emu).run([*requests, requests[0]], skip_keys={"k0", "k1", "k2"})
    assert sorted(r.key for r in results) == sorted(f"k{i}" for i in range(3, 12))
    assert (stats.total, stats.skipped, stats.succeeded) == (13, 4, 9)
    assert emu.calls(CHAT) == 9


async def test_rate_limit_429_obeys_retry_after_and_pauses_everyone(emu: OpenAIEmulator) -> None:
    emu.add_fault(CHAT, "429", count=2, retry_after_seconds=0.4)
    wire = Wire(emu)
    results, stats = await wire.run(_requests(6), limits=RateLimits(max_concurrency=1))
    assert all(r.ok for r in results) and len(results) == 6
    assert (stats.rate_limited, stats.rate_limited_unretried, stats.retries) == (2, 0, 2)
    exchanges = sorted(wire.transport.exchanges, key=lambda e: e.started)
    for i, exchange in enumerate(exchanges[:-1]):
        if exchange.status == 429:
            assert exchanges[i + 1].started - exchange.ended >= 0.4


async def test_global_pause_after_429_holds_concurrent_requests(emu: OpenAIEmulator) -> None:
    emu.add_fault(CHAT, "429", count=1, retry_after_seconds=0.5)
    wire = Wire(emu)
    results, stats = await wire.run(_requests(20), limits=RateLimits(max_concurrency=4))
    assert len(results) == 20 and all(r.ok for r in results) and stats.rate_limited == 1
    rejected = next(e for e in wire.transport.exchanges if e.status == 429)
    # No request starts while the pause is in force (only those already on the wire finish).
    assert not [e for e in wire.transport.exchanges if rejected.ended < e.started < rejected.ended + 0.5]


async def test_real_limit_from_the_emulator_is_learned_and_respected() -> None:
    config = EmulatorConfig(rate_limits={"gpt-4o-mini-2024-07-18": RateLimit(requests_per_minute=240)})
    with OpenAIEmulator(config=config) as emu:
        for _ in range(240):  # spend the whole minute's allowance before we start
            emu.core.limiter.take("gpt-4o-mini-2024-07-18")
        wire = Wire(emu)
        started = time.monotonic()
        results, stats = await wire.run(_requests(6), limits=RateLimits(max_concurrency=4))
        elapsed = time.monotonic() - started
    assert len(results) == 6 and all(r.ok for r in results)
    assert stats.rate_limited >= 1 and stats.rate_limited_unretried == 0
    assert stats.limits[MODEL]["requests_per_minute"] == 240.0
    # The server refills 4 per second, so 6 requests after an empty bucket need about 1.5 s; a client that ignored
    # the limit would have spun on 429s and one that gave up would have failed some.
    assert elapsed >= 1.4


async def test_transient_errors_are_retried_and_bad_requests_are_not(emu: OpenAIEmulator) -> None:
    emu.add_fault(CHAT, "500", count=2)
    emu.add_fault(CHAT, "503", count=1)
    limits = RateLimits(max_concurrency=1, backoff_base_s=0.01)
    bad = GenRequest(key="bad", model=MODEL, messages=[{"role": "user", "content": "x"}], params={"temperature": 7})
    results, stats = await Wire(emu).run([*_requests(3), bad], limits=limits)
    by_key = {r.key: r for r in results}
    assert all(by_key[f"k{i}"].ok for i in range(3))
    assert stats.server_errors == 3 and stats.retries == 3
    failed = by_key["bad"]
    assert not failed.ok and failed.attempts == 1 and failed.status_code == 400
    assert failed.error_kind == "bad_request" and "temperature" in (failed.error or "")
    assert stats.failed == 1


async def test_retry_cap_fails_the_request(emu: OpenAIEmulator) -> None:
    emu.add_fault(CHAT, "500", count=10)
    results, stats = await Wire(emu).run(
        _requests(1), limits=RateLimits(max_concurrency=1, max_retries=2, backoff_base_s=0.01)
    )
    assert len(results) == 1 and not results[0].ok
    assert results[0].attempts == 3 and results[0].error_kind == "server_error" and stats.failed == 1


async def test_timeouts_are_retried(emu: OpenAIEmulator) -> None:
    emu.add_fault(CHAT, "timeout", count=1, delay_seconds=3)
    wire = Wire(emu, timeout=0.5)
    results, stats = await wire.run(_requests(2), limits=RateLimits(max_concurrency=1, backoff_base_s=0.01))
    assert all(r.ok for r in results) and stats.timeouts == 1


async def test_connection_drop_is_retried(emu: OpenAIEmulator) -> None:
    emu.add_fault(CHAT, "act_then_drop", count=1)
    results, stats = await Wire(emu).run(_requests(2), limits=RateLimits(max_concurrency=1, backoff_base_s=0.01))
    assert all(r.ok for r in results) and stats.retries == 1


@pytest.mark.parametrize("emu_config", [EmulatorConfig(api_keys=["sk-good"])])
async def test_bad_key_aborts_the_run_without_reporting_samples(emu: OpenAIEmulator) -> None:
    results, stats = await Wire(emu, api_key="sk-bad").run(_requests(30), limits=RateLimits(max_concurrency=3))
    assert results == []  # nothing is marked done, so a fixed key resumes everything
    assert stats.aborted and "authentication" in (stats.abort_reason or "")
    assert emu.calls(CHAT) <= 3


async def test_unknown_model_aborts(emu: OpenAIEmulator) -> None:
    request = GenRequest(key="x", model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    results, stats = await Wire(emu).run([request])
    assert results == [] and stats.aborted and "not_found" in (stats.abort_reason or "")


async def test_should_stop_and_callback_errors(emu: OpenAIEmulator) -> None:
    done: list[GenResult] = []
    _, stats = await Wire(emu).run(
        _requests(50), on_result=done.append, should_stop=lambda: len(done) >= 5, limits=RateLimits(max_concurrency=2)
    )
    assert stats.stopped and 5 <= len(done) <= 7

    def broken(result: GenResult) -> None:
        raise RuntimeError("database is gone")

    with pytest.raises(ExceptionGroup) as info:
        await Wire(emu).run(_requests(5), on_result=broken)
    assert info.group_contains(RuntimeError, match="database is gone")


def test_sync_wrapper_outside_and_inside_an_event_loop(emu: OpenAIEmulator, settings) -> None:  # type: ignore[no-untyped-def]
    # ``settings``: the test policy, which lets clients built from a config reach the emulator on loopback.
    config = ClientConfig(base_url=emu.base_url, api_key="sk-test")
    results: list[GenResult] = []
    stats = generate_all_sync(_requests(3), on_result=results.append, client_config=config)
    assert stats.succeeded == 3 and len(results) == 3

    async def inside() -> int:
        return generate_all_sync(_requests(2, prefix="j"), on_result=results.append, client_config=config).succeeded

    assert asyncio.run(inside()) == 2


async def test_judge_calls_share_the_runner(emu: OpenAIEmulator, settings) -> None:  # type: ignore[no-untyped-def]
    emu.core.config.answer_fn = lambda model, messages: "Accurate.\nSCORE: 4" if model == "gpt-4o" else None
    async with ChatRunner(ClientConfig(base_url=emu.base_url, api_key="sk-test"), RateLimits()) as runner:
        grader = get_grader(
            {"type": "llm_rubric", "model": "gpt-4o", "rubric": "Accurate?"}, chat_client=JudgeChatClient(runner)
        )
        score = await grader.agrade(Sample(output="Paris", messages=[{"role": "user", "content": "Capital?"}]))
    assert (score.value, score.passed) == (4.0, True)
    assert score.details["input_tokens"] > 0
    assert runner.stats.succeeded == 1


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="params must not set model, stream"):
        GenRequest(
            key="k", model=MODEL, messages=[{"role": "user", "content": "x"}], params={"stream": True, "model": "y"}
        )
