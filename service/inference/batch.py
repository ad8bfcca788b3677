"""One running batch per base model: sequences join it between decode steps and leave it when they finish.

The batch keeps one KV cache, left-padded: row i's tokens are the right end of its row, the attention mask marks the
padding, and positions count only real tokens, so each row computes what it would compute alone. Joining sequences are
prefilled together (one forward over their left-padded prompts), then their cache is padded on the left to the batch's
length (or the batch's to theirs) and concatenated. Leaving rows are dropped with an index select, and columns that
became padding for every row are cut off, so a long finished request does not keep the batch wide.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .models import BASE_ROW, ResidentBase
from .sampling import next_tokens
from .text import TextAssembler

if TYPE_CHECKING:
    from .runtime import Request


@dataclass(eq=False)
class Sequence:
    """One choice of one request while it is generated."""

    request: Request
    index: int
    text: TextAssembler
    generator: torch.Generator
    limit: int  # tokens this choice may generate
    adapter: str = BASE_ROW
    tokens: int = 0
    last_token: int = -1
    finish_reason: str | None = None
    first_token_at: float | None = None

    @property
    def width(self) -> int:
        return len(self.request.prompt_ids) + self.limit

    @property
    def temperature(self) -> float:
        return self.request.params.temperature

    @property
    def top_p(self) -> float:
        return self.request.params.top_p


@dataclass(eq=False)
class Lane:
    base: ResidentBase
    waiting: deque[Sequence] = field(default_factory=deque)
    rows: list[Sequence] = field(default_factory=list)
    cache: Any = None
    mask: torch.Tensor | None = None  # (rows, cache length), 1 for real tokens
    kv_budget: int | None = None  # KV cache tokens the batch may hold (GPU: from free memory); None: no limit

    @classmethod
    def for_base(cls, base: ResidentBase) -> Lane:
        from .capacity import cuda_kv_token_budget

        return cls(base, kv_budget=cuda_kv_token_budget(base.model, base.device))

    def widest(self) -> int:
        """Tokens the widest running row will hold when it ends (prompt and its limit)."""
        return max((seq.width for seq in self.rows), default=0)

    @property
    def busy(self) -> bool:
        return bool(self.rows or self.waiting)

    def can_join_running(self) -> bool:
        """Rows can be merged into a running batch only when every cache layer is a plain dynamic layer."""
        from transformers.cache_utils import DynamicLayer

        return self.cache is None or all(type(layer) is DynamicLayer for layer in self.cache.layers)

    # Model steps -----------------------------------------------------------------------------------------------

    def prefill(self, joining: list[Sequence]) -> None:
        """Run the prompts of `joining` (left-padded together), sample their first token, merge them into the batch."""
        from transformers import DynamicCache

        prompts = [seq.request.prompt_ids for seq in joining]
        width = max(len(p) for p in prompts)
        device = self.base.device
        pad = int(self.base.tokenizer.pad_token_id)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], dtype=torch.long, device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long, device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.base.model.config)
        logits = self._forward(ids, mask, positions, cache, [seq.adapter for seq in joining])
        for seq, token in zip(joining, next_tokens(logits, joining), strict=True):
            seq.last_token = token
        self._merge(cache, mask, joining)

    def decode(self) -> None:
        """One token for every row."""
        assert self.mask is not None
        device = self.base.device
        ids = torch.tensor([[seq.last_token] for seq in self.rows], dtype=torch.long, device=device)
        positions = self.mask.sum(-1, keepdim=True)
        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=device)], -1)
        logits = self._forward(ids, self.mask, positions, self.cache, [seq.adapter for seq in self.rows])
        for seq, token in zip(self.rows, next_tokens(logits, self.rows), strict=True):
            seq.last_token = token

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any, adapters: list[str]) -> torch.Tensor:
        kwargs: dict[str, Any] = {self.base.cache_kwarg: cache}
        if self.base.peft is not None:
            kwargs["adapter_names"] = adapters
        with torch.inference_mode():
            out = self.base.forward(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **kwargs,
            )
        return out.logits[:, -1, :]

    # Batch bookkeeping ----------------------------------------------------------------------------------------

    def _merge(self, cache: Any, mask: torch.Tensor, joining: list[Sequence]) -> None:
        if self.cache is None or not self.rows:
            self.cache, self.mask, self.rows = cache, mask, list(joining)
            return
        assert self.mask is not None
        old, new = self.mask.shape[1], mask.shape[1]
        width = max(old, new)
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)], 0)
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)], 0)
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(mask, width, dim=1)], 0)
        self.rows.extend(joining)

    def drop(self, leaving: set[Sequence]) -> None:
        if not leaving:
            return
        keep = [i for i, seq in enumerate(self.rows) if seq not in leaving]
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache, self.mask = None, None
            return
        assert self.mask is not None
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask.index_select(0, index)
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0].item()) if len(used) else 0
        if first > 0 and self.can_join_running():  # other layer kinds keep positions of their own: leave them whole
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, first:, :]
                layer.values = layer.values[:, :, first:, :]
            self.mask = self.mask[:, first:]

    @staticmethod
    def note_tokens(rows: list[Sequence], eos: frozenset[int]) -> None:
        """Feed each row's new token to its text and decide whether the row is done."""
        now = time.monotonic()
        for seq in rows:
            if seq.finish_reason is not None:
                continue
            seq.tokens += 1
            if seq.first_token_at is None:
                seq.first_token_at = now
            if seq.last_token in eos:
                seq.finish_reason = "stop"
                continue
            seq.text.add(seq.last_token)
            if seq.text.stopped:
                seq.finish_reason = "stop"
            elif seq.tokens >= seq.limit:
                seq.finish_reason = "length"


def _left_pad(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim)
