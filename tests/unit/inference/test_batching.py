"""Continuous batching: concurrent requests share decode steps, a request's greedy output does not depend on what it
is batched with, and sampling, n, stop strings and streaming keep OpenAI's meaning."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from helpers import wait_for
from service.inference import Completion, ModelRef, SamplingParams, StreamEvent, Usage

GREEDY = SamplingParams(max_tokens=16, temperature=0)
PROMPTS = [
    [{"role": "user", "content": "sky?"}],
    [{"role": "system", "content": "Answer with one colour."}, {"role": "user", "content": "What colour is it?"}],
    [{"role": "user", "content": "hello world " * 6}],
    [{"role": "user", "content": "What colour is the honey?"}],
]


def texts(completions: list[Completion]) -> list[str]:
    return [c.choices[0].text for c in completions]


def run_concurrently(runtime, ref, prompts, params) -> list[Completion]:  # type: ignore[no-untyped-def]
    results: list[Completion | None] = [None] * len(prompts)
    start = threading.Barrier(len(prompts))

    def one(i: int) -> None:
        start.wait()
        results[i] = runtime.generate(ref, prompts[i], params)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]


def test_concurrent_requests_are_decoded_in_one_batch_with_the_same_greedy_output(make_runtime, tiny_base: Path):
    runtime = make_runtime()
    ref = ModelRef(str(tiny_base))
    alone = [runtime.generate(ref, p, GREEDY) for p in PROMPTS]
    assert max(runtime.stats().batch_sizes) == 1
    together = run_concurrently(runtime, ref, PROMPTS, GREEDY)
    assert texts(together) == texts(alone)
    assert [c.completion_tokens for c in together] == [c.completion_tokens for c in alone]
    assert [c.prompt_tokens for c in together] == [c.prompt_tokens for c in alone]
    assert max(runtime.stats().batch_sizes) == len(PROMPTS)


def test_a_request_joining_a_running_batch_gets_its_own_greedy_answer(make_runtime, tiny_base: Path):
    runtime = make_runtime()
    ref = ModelRef(str(tiny_base))
    expected = runtime.generate(ref, PROMPTS[0], GREEDY).choices[0].text
    long_run = runtime.stream(ref, PROMPTS[2], SamplingParams(max_tokens=200, temperature=0))
    next(long_run)  # the long request is decoding: the next one joins between its steps
    joined = runtime.generate(ref, PROMPTS[0], GREEDY)
    long_run.close()
    assert joined.choices[0].text == expected
    assert 2 in runtime.stats().batch_sizes


def test_streamed_deltas_join_to_the_text_and_usage_comes_last(make_runtime, tiny_base: Path):
    runtime = make_runtime()
    ref = ModelRef(str(tiny_base))
    params = SamplingParams(max_tokens=20, temperature=0.9, seed=7, n=2)
    whole = runtime.generate(ref, PROMPTS[1], params)
    events = list(runtime.stream(ref, PROMPTS[1], params))
    assert isinstance(events[-1], Usage)
    assert events[-1] == Usage(whole.prompt_tokens, whole.completion_tokens)
    deltas = [e for e in events if isinstance(e, StreamEvent)]
    for choice in whole.choices:
        mine = [e for e in deltas if e.index == choice.index]
        assert "".join(e.text for e in mine) == choice.text
        assert [e.finish_reason for e in mine][-1] == choice.finish_reason
        assert all(e.finish_reason is None for e in mine[:-1])


def test_seed_reproduces_choices_and_n_gives_independent_ones(make_runtime, tiny_base: Path):
    runtime = make_runtime()
    ref = ModelRef(str(tiny_base))
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=42, n=3)
    first = runtime.generate(ref, PROMPTS[0], params)
    again = runtime.generate(ref, PROMPTS[0], params)
    other = runtime.generate(ref, PROMPTS[0], SamplingParams(max_tokens=12, temperature=1.0, seed=43, n=3))
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert len({c.text for c in first.choices}) > 1  # the choices are sampled independently
    assert [c.text for c in other.choices] != [c.text for c in first.choices]
    assert first.completion_tokens == 36 or all(c.finish_reason for c in first.choices)
    # A seeded request samples the same inside a batch of other requests.
    busy = runtime.stream(ref, PROMPTS[2], SamplingParams(max_tokens=200, temperature=0))
    next(busy)
    assert [c.text for c in runtime.generate(ref, PROMPTS[0], params).choices] == [c.text for c in first.choices]
    busy.close()


def test_stop_strings_end_the_text_before_them(make_runtime, tiny_base: Path):
    runtime = make_runtime()
    ref = ModelRef(str(tiny_base))
    full = runtime.generate(ref, PROMPTS[3], SamplingParams(max_tokens=24, temperature=0)).choices[0].text
    assert len(full) > 6, full
    stop = full[4:7]
    cut = full[: full.index(stop)]
    params = SamplingParams(max_tokens=24, temperature=0, stop=[stop, "never-generated"])
    stopped = runtime.generate(ref, PROMPTS[3], params)
    assert stopped.choices[0].text == cut
    assert stopped.choices[0].finish_reason == "stop"
    streamed = [e for e in runtime.stream(ref, PROMPTS[3], params) if isinstance(e, StreamEvent)]
    assert "".join(e.text for e in streamed) == cut
    assert streamed[-1].finish_reason == "stop"


def test_raw_text_prompts_and_the_length_finish(make_runtime, tiny_base: Path):
    runtime = make_runtime()
    ref = ModelRef(str(tiny_base))
    result = runtime.generate(ref, "What colour is the sky", SamplingParams(max_tokens=5, temperature=0))
    assert result.prompt_tokens > 0
    assert result.completion_tokens <= 5
    if result.choices[0].finish_reason == "length":
        assert result.completion_tokens == 5


def test_async_twins_match_and_closing_the_stream_cancels(make_runtime, tiny_base: Path):
    runtime = make_runtime()
    ref = ModelRef(str(tiny_base))
    expected = runtime.generate(ref, PROMPTS[0], GREEDY)

    async def scenario() -> tuple[Completion, list]:  # type: ignore[type-arg]
        results = await asyncio.gather(*(runtime.agenerate(ref, PROMPTS[0], GREEDY) for _ in range(3)))
        stream = runtime.astream(ref, PROMPTS[2], SamplingParams(max_tokens=400, temperature=0))
        first = [await anext(stream)]
        await stream.aclose()
        return results[0], first

    completion, first = asyncio.run(scenario())
    assert completion == expected
    assert isinstance(first[0], StreamEvent)
    wait_for(lambda: runtime.stats().running == 0, timeout=20)


def test_a_burst_prefilled_in_small_groups_gives_the_same_answers(make_runtime, tiny_base: Path, monkeypatch):
    from service.inference import runtime as runtime_module

    monkeypatch.setattr(runtime_module, "PREFILL_TOKENS_PER_STEP", 16)  # about one of these prompts per step
    runtime = make_runtime()
    ref = ModelRef(str(tiny_base))
    alone = [runtime.generate(ref, p, GREEDY) for p in PROMPTS]
    steps_alone = len(runtime.stats().batch_sizes)
    together = run_concurrently(runtime, ref, PROMPTS, GREEDY)
    assert texts(together) == texts(alone)
    burst = runtime.stats().batch_sizes[steps_alone:]
    assert max(burst) == len(PROMPTS)
    assert burst[0] < len(PROMPTS)  # the rows joined over several steps, not in one prefill


def test_aopen_stream_refuses_before_the_first_event_and_streams_the_same_text(make_runtime, tiny_base: Path):
    import pytest

    from service.inference import InvalidRequest

    runtime = make_runtime()
    ref = ModelRef(str(tiny_base))
    expected = runtime.generate(ref, PROMPTS[1], GREEDY).choices[0].text

    async def scenario() -> str:
        with pytest.raises(InvalidRequest):
            await runtime.aopen_stream(ref, PROMPTS[1], SamplingParams(max_tokens=0))
        events = await runtime.aopen_stream(ref, PROMPTS[1], GREEDY)
        return "".join([e.text async for e in events if isinstance(e, StreamEvent)])

    assert asyncio.run(scenario()) == expected
