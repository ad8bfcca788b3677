"""How many sequences a GPU batch can hold: the KV cache that decoding grows, against the device's free memory.

A decode step reads every weight once whatever the batch, so tokens per second grow with the batch until the KV cache
fills the memory the weights leave free. A fixed batch (16) leaves most of a large GPU idle; too big a batch fails
with out-of-memory in the middle of a step. So on CUDA the batch is sized from ``torch.cuda.mem_get_info()``: each
sequence needs, for every token it will hold (prompt and new tokens), a key and a value vector per layer and KV head.
On CPU nothing here applies: batches keep their configured size.
"""

from __future__ import annotations

from typing import Any

# Share of the free memory left unused: activations of a prefill, the logits of a step, the allocator's fragments and
# the moment a cache layer is copied to grow (the dynamic cache concatenates) all need room beside the KV cache.
SAFETY_MARGIN = 0.15


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Bytes of KV cache one token holds: layers x 2 (key, value) x KV heads x head dim x dtype bytes."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = int(text.num_hidden_layers)
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return layers * 2 * kv_heads * head_dim * dtype_bytes


def kv_token_budget(free_bytes: int, kv_bytes: int, *, weights_bytes: int = 0, margin: float = SAFETY_MARGIN) -> int:
    """Tokens of KV cache that fit in `free_bytes` (less `weights_bytes` still to be loaded) with the margin kept."""
    if kv_bytes < 1:
        raise ValueError("kv_bytes must be positive")
    usable = max(0, free_bytes - weights_bytes) * (1.0 - margin)
    return int(usable // kv_bytes)


def batch_from_memory(
    free_bytes: int,
    kv_bytes: int,
    tokens_per_row: int,
    *,
    cap: int,
    weights_bytes: int = 0,
    margin: float = SAFETY_MARGIN,
) -> int:
    """Rows of `tokens_per_row` (prompt + max new tokens) whose KV cache fits, between 1 and `cap`."""
    if tokens_per_row < 1:
        raise ValueError("tokens_per_row must be at least 1")
    rows = kv_token_budget(free_bytes, kv_bytes, weights_bytes=weights_bytes, margin=margin) // tokens_per_row
    return max(1, min(cap, rows))


def cuda_kv_token_budget(model: Any, device: Any) -> int | None:
    """The KV tokens that fit beside `model` (already loaded) on its CUDA device now; None off CUDA."""
    if getattr(device, "type", None) != "cuda":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    # Blocks torch's caching allocator holds but no tensor uses (a finished batch's cache) are free to this process,
    # though the driver counts them as taken.
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    dtype_bytes = next(model.parameters()).element_size()
    return kv_token_budget(free, kv_bytes_per_token(model.config, dtype_bytes))


def rows_fit(budget_tokens: int | None, rows: int, widest: int) -> bool:
    """Whether `rows` left-padded rows fit: each is as wide as the widest row will become (prompt + its limit)."""
    return budget_tokens is None or rows * widest <= budget_tokens
