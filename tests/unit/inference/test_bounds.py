"""The runtime bounds its work: a full queue refuses with a retry-after, a consumer that goes away frees its batch
slot, a request past its timeout ends, and out-of-range parameters are refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import wait_for
from service.inference import InferenceTimeout, InvalidRequest, ModelRef, Overloaded, SamplingParams

PROMPT = [{"role": "user", "content": "What colour is the sky?"}]
LONG = SamplingParams(max_tokens=450, temperature=0)


def test_a_full_queue_refuses_with_a_retry_after(make_runtime, tiny_base: Path):
    runtime = make_runtime(max_batch_size=1, max_queued=1)
    ref = ModelRef(str(tiny_base))
    running = runtime.stream(ref, PROMPT, LONG)
    next(running)
    waiting = runtime.submit(ref, PROMPT, LONG)
    assert runtime.stats().queued == 1 and runtime.stats().running == 1
    with pytest.raises(Overloaded) as refused:
        runtime.submit(ref, PROMPT, LONG)
    assert refused.value.retry_after_s >= 1
    waiting.cancel()
    running.close()
    wait_for(lambda: runtime.stats().queued == 0 and runtime.stats().running == 0, timeout=20)
    # Room again: the next request is served.
    assert runtime.generate(ref, PROMPT, SamplingParams(max_tokens=3, temperature=0)).choices


def test_closing_a_stream_frees_its_batch_slot_for_the_next_request(make_runtime, tiny_base: Path):
    runtime = make_runtime(max_batch_size=1)
    ref = ModelRef(str(tiny_base))
    stream = runtime.stream(ref, PROMPT, LONG)
    next(stream)
    assert runtime.stats().running == 1
    stream.close()
    steps_at_close = len(runtime.stats().batch_sizes)
    wait_for(lambda: runtime.stats().running == 0, timeout=20)
    # At most the step in flight ran after the close (uncancelled, this prompt runs 84 greedy steps to its end).
    assert len(runtime.stats().batch_sizes) - steps_at_close <= 2
    quick = runtime.generate(ref, PROMPT, SamplingParams(max_tokens=3, temperature=0), timeout_s=20)
    assert quick.completion_tokens <= 3


def test_a_request_past_its_timeout_ends_with_inference_timeout(make_runtime, tiny_base: Path):
    runtime = make_runtime(max_batch_size=1)
    ref = ModelRef(str(tiny_base))
    blocker = runtime.stream(ref, PROMPT, LONG)
    next(blocker)
    with pytest.raises(InferenceTimeout):
        # Waits behind the blocker, then times out. The blocker may stop early (the tiny random model can say its end
        # token at any step): a millisecond is less than any request of this model takes, so it times out anyway.
        runtime.generate(ref, PROMPT, LONG, timeout_s=0.001)
    blocker.close()
    wait_for(lambda: runtime.stats().running == 0 and runtime.stats().queued == 0, timeout=20)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(max_tokens=10_000), "max_tokens"),
        (SamplingParams(temperature=-0.1), "temperature"),
        (SamplingParams(temperature=2.5), "temperature"),
        (SamplingParams(top_p=0), "top_p"),
        (SamplingParams(n=0), "n"),
        (SamplingParams(stop=["a", "b", "c", "d", "e"]), "stop"),
        (SamplingParams(stop=[""]), "stop"),
    ],
)
def test_out_of_range_parameters_are_refused(make_runtime, tiny_base: Path, params, param):
    runtime = make_runtime(max_tokens=512)
    with pytest.raises(InvalidRequest) as refused:
        runtime.submit(ModelRef(str(tiny_base)), PROMPT, params)
    assert refused.value.param == param


def test_bad_prompts_are_refused_with_the_field(make_runtime, tiny_base: Path):
    runtime = make_runtime()
    ref = ModelRef(str(tiny_base))
    with pytest.raises(InvalidRequest) as refused:
        runtime.submit(ref, [{"role": "wizard", "content": "hi"}], SamplingParams())
    assert refused.value.param == "messages"
    with pytest.raises(InvalidRequest, match="context"):
        runtime.submit(ref, "hello world " * 400, SamplingParams())
