"""Batch planning: which examples go in which row of which micro-batch, and the tensors for one micro-batch.

Planning is pure Python on example lengths, deterministic for (seed, epoch), so the whole run's plan is known before
the first step (the learning-rate schedule needs the step count) and a resume can jump to any step.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .chat_data import IGNORE_INDEX, TokenizedExample

if TYPE_CHECKING:
    import torch

# Without packing, examples are sorted by length inside windows of this many micro-batches: batches stay random across
# the epoch while rows inside a batch have similar lengths (little padding).
_BUCKET_WINDOW = 64


@dataclass(frozen=True)
class MicroBatch:
    rows: tuple[tuple[int, ...], ...]  # example indices per row, in order
    packed: bool

    def width(self, lengths: Sequence[int]) -> int:
        return max(sum(lengths[i] for i in row) for row in self.rows)

    def real_tokens(self, lengths: Sequence[int]) -> int:
        return sum(lengths[i] for row in self.rows for i in row)

    def slots(self, lengths: Sequence[int]) -> int:
        return self.width(lengths) * len(self.rows)


def _rng(seed: int, epoch: int) -> random.Random:
    # String seeds hash with SHA-512 (not Python's randomised hash), so the order is the same in every process.
    return random.Random(f"local-train:{seed}:{epoch}")


def pack_rows(order: Sequence[int], lengths: Sequence[int], capacity: int) -> list[tuple[int, ...]]:
    """Best-fit packing of examples (in `order`) into rows of at most `capacity` tokens; rows keep creation order."""
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, row index), sorted
    for index in order:
        length = lengths[index]
        if length > capacity:
            raise ValueError(f"example {index} has {length} tokens, more than the row capacity {capacity}")
        slot = bisect.bisect_left(free, (length, -1))
        if slot < len(free):
            remaining, row = free.pop(slot)
        else:
            rows.append([])
            remaining, row = capacity, len(rows) - 1
        rows[row].append(index)
        remaining -= length
        if remaining > 0:
            bisect.insort(free, (remaining, row))
    return [tuple(row) for row in rows]


def plan_epoch(
    lengths: Sequence[int],
    *,
    batch_size: int,
    max_seq_length: int,
    packing: bool,
    seed: int,
    epoch: int,
    shuffle: bool = True,
) -> list[MicroBatch]:
    order = list(range(len(lengths)))
    rng = _rng(seed, epoch)
    if shuffle:
        rng.shuffle(order)
    if packing:
        rows = pack_rows(order, lengths, max_seq_length)
        return [
            MicroBatch(rows=tuple(rows[start : start + batch_size]), packed=True)
            for start in range(0, len(rows), batch_size)
        ]
    window = batch_size * _BUCKET_WINDOW
    batches: list[MicroBatch] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(
            MicroBatch(rows=tuple((i,) for i in chunk[b : b + batch_size]), packed=False)
            for b in range(0, len(chunk), batch_size)
        )
    if shuffle:
        rng.shuffle(batches)
    return batches


def padding_share(batches: Sequence[MicroBatch], lengths: Sequence[int]) -> float:
    slots = sum(batch.slots(lengths) for batch in batches)
    real = sum(batch.real_tokens(lengths) for batch in batches)
    return 0.0 if slots == 0 else 1.0 - real / slots


def group_steps(batches: Sequence[MicroBatch], accumulation: int) -> list[list[MicroBatch]]:
    """Optimizer steps of one epoch: consecutive micro-batches, the last step possibly shorter."""
    return [list(batches[i : i + accumulation]) for i in range(0, len(batches), accumulation)]


def collate(
    batch: MicroBatch, examples: Sequence[TokenizedExample], pad_id: int, *, width: int | None = None
) -> dict[str, Any]:
    """Tensors for one micro-batch.

    Packed rows carry position ids that restart at 0 for each example and no attention mask: transformers then builds
    a block-diagonal causal mask, so examples never attend to each other. Each example's first label is ignored, as it
    would be in its own row (nothing precedes it to predict it from). Padding (at the row end) forms its own segment.
    Unpacked rows are right-padded with an attention mask. `width` pads every row to at least that many tokens (one
    shape for every batch, for kernels compiled per shape).
    """
    import torch

    width = max([sum(len(examples[i]) for i in row) for row in batch.rows] + [width or 0])
    ids: list[list[int]] = []
    labels: list[list[int]] = []
    positions: list[list[int]] = []
    mask: list[list[int]] = []
    for row in batch.rows:
        row_ids: list[int] = []
        row_labels: list[int] = []
        row_positions: list[int] = []
        for index in row:
            example = examples[index]
            row_ids.extend(example.input_ids)
            row_labels.append(IGNORE_INDEX)
            row_labels.extend(example.labels[1:])
            row_positions.extend(range(len(example)))
        real = len(row_ids)
        pad = width - real
        ids.append(row_ids + [pad_id] * pad)
        labels.append(row_labels + [IGNORE_INDEX] * pad)
        positions.append(row_positions + list(range(pad)))
        mask.append([1] * real + [0] * pad)
    out: dict[str, Any] = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
    }
    if batch.packed:
        out["position_ids"] = torch.tensor(positions, dtype=torch.long)
    else:
        out["attention_mask"] = torch.tensor(mask, dtype=torch.long)
    return out


def count_targets(batch: MicroBatch, examples: Sequence[TokenizedExample]) -> int:
    """Target tokens the loss of `batch` is taken over (the first label of each example never counts)."""
    return sum(examples[i].n_targets for row in batch.rows for i in row)


def target_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions whose next token carries loss in at least one row (the only logits worth computing)."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
