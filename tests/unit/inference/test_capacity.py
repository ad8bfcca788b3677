"""A GPU batch is sized from free memory: the KV cache arithmetic on real model configurations, and the runtime
admitting rows only while their KV cache fits the lane's budget (a budget forced here, since no GPU is needed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import wait_for
from service.inference import ModelRef, SamplingParams
from service.inference.capacity import SAFETY_MARGIN, batch_from_memory, kv_bytes_per_token, kv_token_budget

GIB = 2**30


def smol_1_7b():  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig

    # SmolLM2-1.7B's shape (the GPU kit's smol1.7b): 24 layers, 32 KV heads of 64.
    return LlamaConfig(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32
    )


def llama_8b():  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128
    )


def test_kv_bytes_per_token_counts_layers_keys_values_kv_heads_and_head_dim():
    assert kv_bytes_per_token(smol_1_7b(), 2) == 24 * 2 * 32 * 64 * 2 == 196_608
    # Grouped-query attention: only the 8 KV heads are cached, not the 32 query heads.
    assert kv_bytes_per_token(llama_8b(), 2) == 32 * 2 * 8 * 128 * 2 == 131_072
    assert kv_bytes_per_token(smol_1_7b(), 4) == 2 * kv_bytes_per_token(smol_1_7b(), 2)


def test_the_batch_is_what_free_memory_minus_weights_holds_with_the_margin_and_the_cap():
    kv = kv_bytes_per_token(smol_1_7b(), 2)
    weights = int(3.4e9)
    free = 139 * GIB
    rows = batch_from_memory(free, kv, 128, cap=100_000, weights_bytes=weights)
    assert rows == int((free - weights) * (1 - SAFETY_MARGIN) // kv) // 128
    assert 4000 < rows < 5000  # an H200 holds thousands of 128-token rows of the 1.7B shape
    assert batch_from_memory(free, kv, 128, cap=256, weights_bytes=weights) == 256
    # Longer rows, fewer of them.
    assert batch_from_memory(free, kv, 4096, cap=100_000, weights_bytes=weights) == rows * 128 // 4096
    # A card the weights nearly fill still decodes one row at a time rather than none.
    assert batch_from_memory(weights + 2**20, kv, 128, cap=256, weights_bytes=weights) == 1
    assert kv_token_budget(10 * GIB, kv, margin=0.0) == 10 * GIB // kv


def test_on_cuda_the_budget_counts_free_device_memory_and_the_allocators_idle_blocks(monkeypatch):
    import types

    import torch

    from service.inference.capacity import cuda_kv_token_budget

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * GIB, 141 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 3 * GIB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1 * GIB)
    model = types.SimpleNamespace(config=smol_1_7b(), parameters=lambda: iter([torch.zeros(1, dtype=torch.bfloat16)]))
    budget = cuda_kv_token_budget(model, types.SimpleNamespace(type="cuda"))
    assert budget == kv_token_budget(12 * GIB, kv_bytes_per_token(smol_1_7b(), 2))
    assert cuda_kv_token_budget(model, types.SimpleNamespace(type="cpu")) is None


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="tokens_per_row"):
        batch_from_memory(GIB, 1024, 0, cap=8)
    with pytest.raises(ValueError, match="kv_bytes"):
        kv_token_budget(GIB, 0)


def test_rows_wait_while_their_kv_cache_would_not_fit_the_lane_budget(make_runtime, tiny_base: Path, monkeypatch):
    from service.inference import capacity

    runtime = make_runtime(max_batch_size=8)
    ref = ModelRef(str(tiny_base))
    prompt = [{"role": "user", "content": "What colour is the sky?"}]
    params = SamplingParams(max_tokens=450, temperature=0)  # the tiny model does not say its end token that soon
    width = len(runtime.encode(ref, prompt)) + params.max_tokens
    # Room for two such rows; this is what the lane computes from torch.cuda.mem_get_info on a GPU.
    monkeypatch.setattr(capacity, "cuda_kv_token_budget", lambda model, device: 2 * width + 1)
    first = runtime.stream(ref, prompt, params)
    next(first)
    second = runtime.stream(ref, prompt, params)
    next(second)
    third = runtime.submit(ref, prompt, SamplingParams(max_tokens=3, temperature=0))
    time.sleep(0.05)  # a few decode steps: the third would have joined by now if it fitted
    stats = runtime.stats()
    assert (stats.running, stats.queued) == (2, 1)
    first.close()  # a row leaves: the waiting one fits now
    wait_for(lambda: third.done, timeout=20)
    second.close()
    assert max(runtime.stats().batch_sizes) == 2
