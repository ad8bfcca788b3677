"""Direct preference optimisation (sigmoid DPO, Rafailov et al. 2023) for the local trainer: preference rows read into
token pairs, their batches, and the loss.

A row is OpenAI's DPO format: ``{"input": {"messages": [...], "tools"?}, "preferred_output": [assistant message],
"non_preferred_output": [assistant message]}``. Each side is the input conversation followed by its output, encoded by
the chat encoder with only the output as target, so log-probabilities are summed over the answer's tokens alone. The
reference model is the policy with its LoRA adapter switched off: the base model, with no second copy in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .chat_data import (
    IGNORE_INDEX,
    ChatEncoder,
    DatasetStats,
    TokenizedExample,
    iter_jsonl,
    parse_chat_example,
)
from .errors import DatasetFormatError
from .modeling import split_batch
from .packing import MicroBatch, collate


@dataclass
class PreferencePair:
    chosen: TokenizedExample
    rejected: TokenizedExample
    line: int = 0

    def __len__(self) -> int:
        return len(self.chosen) + len(self.rejected)

    @property
    def n_targets(self) -> int:
        return self.chosen.n_targets + self.rejected.n_targets


def encode_preference(obj: Any, encoder: ChatEncoder, *, path: str | None = None, line: int = 0) -> PreferencePair:
    """Both sides of one preference row; only the output message of each side is a target."""

    def fail(message: str, field_name: str | None = None) -> DatasetFormatError:
        return DatasetFormatError(message, path=path, line=line, field=field_name)

    if not isinstance(obj, dict) or "preferred_output" not in obj or "non_preferred_output" not in obj:
        raise fail("DPO needs preference examples: 'input', 'preferred_output' and 'non_preferred_output'")
    source = obj.get("input")
    if not isinstance(source, dict) or not isinstance(source.get("messages"), list):
        raise fail("'input' must be an object with a 'messages' list", "input")
    sides = []
    for key in ("preferred_output", "non_preferred_output"):
        output = obj[key]
        if not isinstance(output, list) or len(output) != 1:
            raise fail(f"'{key}' must be a list of exactly one assistant message", key)
        row = {"messages": [*source["messages"], *output]}
        if source.get("tools") is not None:
            row["tools"] = source["tools"]
        example = parse_chat_example(row, path=path, line=line)
        if example.messages[-1]["role"] != "assistant":
            raise fail(f"'{key}' must be an assistant message", key)
        # Assistant turns inside the input are context, not the answer being compared.
        example.weights = [0 if m["role"] == "assistant" else None for m in example.messages[:-1]] + [1]
        sides.append(encoder.encode(example, path=path, line=line))
    return PreferencePair(chosen=sides[0], rejected=sides[1], line=line)


def load_preference_dataset(path: Path, encoder: ChatEncoder) -> tuple[list[PreferencePair], DatasetStats]:
    """Every pair of a preference JSONL file; a pair whose answer was truncated away on either side is skipped."""
    pairs: list[PreferencePair] = []
    stats = DatasetStats()
    name = str(path)
    for line, obj in iter_jsonl(Path(path)):
        pair = encode_preference(obj, encoder, path=name, line=line)
        if pair.chosen.n_targets == 0 or pair.rejected.n_targets == 0:
            stats.skipped_no_target += 1
            stats.skipped_lines.append(line)
            continue
        pairs.append(pair)
        stats.examples += 1
        stats.tokens += len(pair)
        stats.target_tokens += pair.n_targets
        stats.truncated += int(pair.chosen.truncated or pair.rejected.truncated)
        stats.max_length = max(stats.max_length, len(pair.chosen), len(pair.rejected))
    if not pairs:
        raise DatasetFormatError("no preference pair has answer tokens on both sides to train on", path=name)
    return pairs, stats


def collate_pairs(batch: MicroBatch, pairs: Sequence[PreferencePair], pad_id: int) -> dict[str, torch.Tensor]:
    """One padded row per side: the chosen answers of the micro-batch's pairs first, then their rejected ones."""
    indices = [index for row in batch.rows for index in row]
    sides = [pairs[i].chosen for i in indices] + [pairs[i].rejected for i in indices]
    rows = MicroBatch(rows=tuple((k,) for k in range(len(sides))), packed=False)
    return collate(rows, sides, pad_id)


def sequence_logps(model: Any, batch: dict[str, torch.Tensor], *, keep_logits: bool) -> torch.Tensor:
    """Per row, the sum of log-probabilities of its target tokens (only logits at target positions are computed)."""
    inputs, labels, positions = split_batch(batch)
    if keep_logits:
        logits = model(**inputs, use_cache=False, logits_to_keep=positions).logits
    else:
        logits = model(**inputs, use_cache=False).logits[:, positions]
    targets = labels[:, 1:][:, positions]
    mask = targets != IGNORE_INDEX
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logps * mask).sum(dim=-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair: the sigmoid DPO loss, and the implicit rewards beta * (log pi - log ref) of each side."""
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


@dataclass
class PairLoss:
    """Sums over the pairs of a micro-batch (the trainer divides by the step's pair count)."""

    loss: torch.Tensor
    pairs: int
    correct: float  # pairs whose chosen reward is above the rejected one
    margin: float  # sum of (chosen reward - rejected reward)


def pair_loss(model: Any, batch: dict[str, torch.Tensor], beta: float, *, keep_logits: bool) -> PairLoss:
    """DPO loss of a collated pair batch: the policy with its adapter, the reference without it (no gradient)."""
    n = batch["input_ids"].shape[0] // 2
    policy = sequence_logps(model, batch, keep_logits=keep_logits)
    with torch.no_grad(), model.disable_adapter():
        reference = sequence_logps(model, batch, keep_logits=keep_logits)
    losses, chosen, rejected = dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], beta)
    return PairLoss(
        loss=losses.sum(),
        pairs=n,
        correct=float((chosen > rejected).sum()),
        margin=float((chosen - rejected).sum()),
    )
