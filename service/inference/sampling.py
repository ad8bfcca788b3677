"""The next token of each row of a batch, each row with its own temperature, top_p and random generator.

A row's generator is its own (seeded from the request's seed and the choice index), so what it samples does not depend
on which other requests share the batch.
"""

from __future__ import annotations

import secrets
from typing import Any

import torch


def row_generator(seed: int | None, index: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed((seed if seed is not None else secrets.randbits(62)) * 1_000_003 + index & (2**63 - 1))
    return generator


def next_tokens(logits: torch.Tensor, rows: list[Any]) -> list[int]:
    """`logits` is (batch, vocab); each row has `temperature`, `top_p` and `generator`. Temperature 0 is argmax."""
    chosen = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        if row.temperature <= 0:
            continue
        scores = logits[i].float() / row.temperature
        probs = torch.softmax(scores, dim=-1)
        if row.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # Keep the smallest set of most likely tokens whose mass reaches top_p (the first token always stays).
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= row.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        chosen[i] = int(torch.multinomial(probs, 1, generator=row.generator).item())
    return chosen
