"""The vLLM backend against a fake ``vllm`` module (vLLM needs a GPU and is never a test dependency): what it asks the
engine for (engine arguments, sampling parameters, the prompt as our chat template's token ids, one LoRARequest per
adapter) and what callers get back (deltas in the engine's order, usage last, aborts when the consumer leaves), and
which backend ``auto`` picks."""

from __future__ import annotations

import asyncio
import enum
import importlib.machinery
import importlib.util
import logging
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for
from service.inference import InferenceError, InvalidRequest, ModelRef, SamplingParams, StreamEvent, Usage
from service.inference.backends import make_runtime, select_backend

MESSAGES = [{"role": "user", "content": "What colour is the sky?"}]


@dataclass
class Choice:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None


@dataclass
class Output:
    outputs: list[Choice]
    finished: bool


class Kwargs:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


@dataclass
class FakeEngine:
    args: Any
    model_config: Any = field(default_factory=lambda: types.SimpleNamespace(max_model_len=512))
    calls: list[dict[str, Any]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    endless: bool = False
    finish: str = "length"
    shut: bool = False

    async def generate(self, prompt: Any, sampling_params: Any, request_id: str, lora_request: Any = None):  # type: ignore[no-untyped-def]
        self.calls.append({"prompt": prompt, "sampling": sampling_params, "id": request_id, "lora": lora_request})
        steps = sampling_params.max_tokens
        step = 0
        while self.endless or step < steps:
            last = not self.endless and step == steps - 1
            # DELTA outputs: each choice's new text and token only; choice 1 runs one step behind choice 0.
            yield Output(
                [Choice(i, f"<{i}.{step}>", [step], (self.finish if last else None)) for i in range(sampling_params.n)],
                finished=last,
            )
            step += 1
            await asyncio.sleep(0.001)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def shutdown(self) -> None:
        self.shut = True


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    made: list[FakeEngine] = []

    class AsyncLLMEngine:
        @staticmethod
        def from_engine_args(args: Any) -> FakeEngine:
            engine = FakeEngine(args)
            made.append(engine)
            return engine

    class RequestOutputKind(enum.Enum):
        CUMULATIVE = 0
        DELTA = 1
        FINAL_ONLY = 2

    root = types.ModuleType("vllm")
    root.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    root.AsyncEngineArgs = Kwargs  # type: ignore[attr-defined]
    root.SamplingParams = Kwargs  # type: ignore[attr-defined]
    root.AsyncLLMEngine = AsyncLLMEngine  # type: ignore[attr-defined]
    root.TokensPrompt = dict  # type: ignore[attr-defined]
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.RequestOutputKind = RequestOutputKind  # type: ignore[attr-defined]
    lora = types.ModuleType("vllm.lora")
    lora_request = types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = Kwargs  # type: ignore[attr-defined]
    for name, module in {
        "vllm": root,
        "vllm.sampling_params": sampling,
        "vllm.lora": lora,
        "vllm.lora.request": lora_request,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(engines=made, kind=RequestOutputKind)


@pytest.fixture
def vllm_runtime(fake_vllm, tmp_path: Path):  # type: ignore[no-untyped-def]
    from service.inference.backends.vllm import VllmRuntime

    runtime = VllmRuntime(cache_dir=tmp_path, max_batch_size=8, max_queued=4, max_tokens=64)
    yield runtime
    runtime.close()


def test_requests_map_to_engine_arguments_sampling_params_token_ids_and_one_lora_per_adapter(
    fake_vllm, vllm_runtime, tiny_base: Path, adapters: list[Path], make_runtime
):
    params = SamplingParams(max_tokens=5, temperature=0.7, top_p=0.9, seed=3, n=2, stop=["END"])
    tuned = ModelRef(str(tiny_base), adapters[0], name="ft:one")
    result = vllm_runtime.generate(tuned, MESSAGES, params)

    (engine,) = fake_vllm.engines
    assert engine.args.model == engine.args.tokenizer == str(tiny_base)
    assert (engine.args.enable_lora, engine.args.max_num_seqs) == (True, 8)
    assert engine.args.max_loras >= 1 and engine.args.max_lora_rank >= 8
    call = engine.calls[0]
    # The prompt goes as token ids of the training chat template, exactly what the transformers runtime encodes.
    assert call["prompt"] == {"prompt_token_ids": make_runtime().encode(ModelRef(str(tiny_base)), MESSAGES)}
    sampling = call["sampling"]
    assert (sampling.n, sampling.temperature, sampling.top_p, sampling.seed) == (2, 0.7, 0.9, 3)
    assert (sampling.max_tokens, sampling.stop, sampling.include_stop_str_in_output) == (5, ["END"], False)
    assert sampling.output_kind is fake_vllm.kind.DELTA
    assert vllm_runtime.load(tuned).tokenizer.eos_token_id in sampling.stop_token_ids
    assert call["lora"].lora_path == str(adapters[0])

    assert [c.text for c in result.choices] == ["".join(f"<{i}.{s}>" for s in range(5)) for i in range(2)]
    assert [c.finish_reason for c in result.choices] == ["length", "length"]
    assert (result.prompt_tokens, result.completion_tokens) == (len(call["prompt"]["prompt_token_ids"]), 10)

    vllm_runtime.generate(ModelRef(str(tiny_base), adapters[1]), MESSAGES, SamplingParams(max_tokens=2))
    vllm_runtime.generate(tuned, MESSAGES, SamplingParams(max_tokens=2))
    vllm_runtime.generate(ModelRef(str(tiny_base)), MESSAGES, SamplingParams(max_tokens=2))
    loras = [c["lora"] for c in engine.calls]
    assert loras[0].lora_int_id == loras[2].lora_int_id != loras[1].lora_int_id
    assert loras[0].lora_name != loras[1].lora_name
    assert loras[3] is None  # the base alone
    assert len(fake_vllm.engines) == 1  # one engine serves the base and all its adapters


def test_streams_keep_the_engines_order_and_end_with_usage(vllm_runtime, tiny_base: Path):
    ref = ModelRef(str(tiny_base))
    params = SamplingParams(max_tokens=3, n=2, temperature=0)
    items = list(vllm_runtime.stream(ref, MESSAGES, params))
    assert isinstance(items[-1], Usage) and items[-1].completion_tokens == 6
    events = items[:-1]
    assert [(e.index, e.text) for e in events] == [(i, f"<{i}.{s}>") for s in range(3) for i in range(2)]
    assert [e.finish_reason for e in events] == [None] * 4 + ["length"] * 2

    async def from_the_loop() -> list[Any]:
        stream = await vllm_runtime.aopen_stream(ref, MESSAGES, params)
        return [item async for item in stream]

    assert asyncio.run(from_the_loop()) == items
    assert asyncio.run(vllm_runtime.agenerate(ref, MESSAGES, params)) == vllm_runtime.generate(ref, MESSAGES, params)


def test_a_consumer_that_leaves_aborts_its_request_in_the_engine(fake_vllm, vllm_runtime, tiny_base: Path):
    ref = ModelRef(str(tiny_base))
    vllm_runtime.load(ref)
    engine = fake_vllm.engines[0]
    engine.endless = True
    stream = vllm_runtime.stream(ref, MESSAGES, SamplingParams(max_tokens=64))
    assert isinstance(next(stream), StreamEvent)
    stream.close()
    wait_for(lambda: engine.aborted == [engine.calls[0]["id"]], timeout=5)
    wait_for(lambda: vllm_runtime.stats().running == 0, timeout=5)

    async def leave_early() -> None:
        events = await vllm_runtime.aopen_stream(ref, MESSAGES, SamplingParams(max_tokens=64))
        await anext(events)
        await events.aclose()

    asyncio.run(leave_early())
    wait_for(lambda: engine.aborted == [c["id"] for c in engine.calls], timeout=5)
    wait_for(lambda: vllm_runtime.stats().running == 0, timeout=5)


def test_bounds_and_engine_errors_come_as_the_runtimes_errors(fake_vllm, vllm_runtime, tiny_base: Path):
    ref = ModelRef(str(tiny_base))
    vllm_runtime.load(ref)
    with pytest.raises(InvalidRequest) as refused:
        vllm_runtime.generate(ref, MESSAGES, SamplingParams(max_tokens=65))
    assert refused.value.param == "max_tokens"
    with pytest.raises(InvalidRequest) as refused:
        vllm_runtime.generate(ref, MESSAGES, SamplingParams(max_tokens=2, n=9))
    assert refused.value.param == "n"
    assert fake_vllm.engines[0].calls == []  # refused before reaching the engine
    fake_vllm.engines[0].finish = "abort"
    with pytest.raises(InferenceError, match="engine ended the request"):
        vllm_runtime.generate(ref, MESSAGES, SamplingParams(max_tokens=2))
    with pytest.raises(Exception, match="one base model per process"):
        vllm_runtime.load(ModelRef(str(tiny_base.parent / "another"), name="other"))


def test_max_tokens_is_cut_to_the_engines_context(fake_vllm, tmp_path: Path, tiny_base: Path):
    from service.inference.backends.vllm import VllmRuntime

    runtime = VllmRuntime(cache_dir=tmp_path, max_batch_size=4, max_tokens=64)
    try:
        ref = ModelRef(str(tiny_base))
        base = runtime.load(ref)
        prompt = len(runtime.encode(ref, MESSAGES))
        base.max_context = prompt + 3
        runtime.generate(ref, MESSAGES, SamplingParams(max_tokens=50))
        assert fake_vllm.engines[0].calls[-1]["sampling"].max_tokens == 3
        base.max_context = prompt
        with pytest.raises(InvalidRequest):
            runtime.generate(ref, MESSAGES, SamplingParams(max_tokens=5))
    finally:
        runtime.close()
    assert fake_vllm.engines[0].shut
    with pytest.raises(InferenceError, match="shut down"):
        runtime.load(ModelRef(str(tiny_base)))


def test_auto_takes_vllm_only_with_the_package_and_a_gpu(fake_vllm, monkeypatch, caplog, tmp_path: Path):
    import torch

    caplog.set_level(logging.INFO, logger="service.inference.backends")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_backend("auto") == "vllm"
    assert select_backend("auto", device="cuda:0") == "vllm"
    assert select_backend("auto", device="cpu") == "transformers"
    assert select_backend("transformers") == "transformers"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    caplog.clear()
    assert select_backend("auto") == "transformers"
    assert "vllm skipped: no CUDA device" in caplog.text
    with pytest.raises(ValueError, match="no CUDA device"):
        select_backend("vllm")
    with pytest.raises(ValueError, match="one of"):
        select_backend("tensorrt")
    monkeypatch.delitem(sys.modules, "vllm")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    if importlib.util.find_spec("vllm") is None:
        caplog.clear()
        assert select_backend("auto") == "transformers"
        assert "vllm package is not installed" in caplog.text
    runtime = make_runtime("transformers", cache_dir=tmp_path, device="cpu")
    try:
        assert type(runtime).__name__ == "InferenceRuntime"
    finally:
        runtime.close()


def test_a_request_past_its_timeout_ends_and_is_aborted(fake_vllm, vllm_runtime, tiny_base: Path):
    from service.inference import InferenceTimeout

    ref = ModelRef(str(tiny_base))
    vllm_runtime.load(ref)
    engine = fake_vllm.engines[0]
    engine.endless = True
    with pytest.raises(InferenceTimeout):
        vllm_runtime.generate(ref, MESSAGES, SamplingParams(max_tokens=8), timeout_s=0.2)
    wait_for(lambda: engine.aborted == [engine.calls[0]["id"]], timeout=5)
    wait_for(lambda: vllm_runtime.stats().running == 0, timeout=5)
