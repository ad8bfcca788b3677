"""Held-out examples as the evaluation sees them: a prompt (the conversation before the answer) and a reference (the
answer the dataset gives), read from a ready dataset of any supported format."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service import chat
from service.errors import InvalidInput


@dataclass(frozen=True)
class Example:
    split: str  # "test" or "train" (the overfitting check)
    index: int  # 0-based among the file's examples
    prompt: list[dict[str, Any]]
    reference: Any

    @property
    def key(self) -> str:
        return f"{self.split}:{self.index}"


def _content(message: dict[str, Any]) -> Any:
    """The reference an assistant message gives: its answer as ``service.chat`` reads it (its text, or a
    tool-calling answer's calls as canonical JSON, so JSON graders can compare them). A message without text or
    calls keeps its null content: there is no reference."""
    if message.get("content") is None and not (
        message.get("tool_calls") or message.get("function_call") or message.get("refusal")
    ):
        return None
    return chat.answer_of(message)


def to_example(obj: Any, split: str, index: int) -> Example:
    """Prompt and reference of one dataset line: chat (the last assistant message is the reference), preference
    (the preferred output), or prompt/completion."""
    if isinstance(obj, dict) and isinstance(obj.get("messages"), list):
        messages = [m for m in obj["messages"] if isinstance(m, dict)]
        last = max((i for i, m in enumerate(messages) if m.get("role") == chat.ASSISTANT), default=None)
        if last is None:
            return Example(split, index, _plain(messages), None)
        return Example(split, index, _plain(messages[:last]), _content(messages[last]))
    if isinstance(obj, dict) and isinstance(obj.get("input"), dict):
        preferred = obj.get("preferred_output") or []
        reference = _content(preferred[-1]) if preferred and isinstance(preferred[-1], dict) else None
        return Example(split, index, _plain(obj["input"].get("messages") or []), reference)
    if isinstance(obj, dict) and "prompt" in obj:
        completion = obj.get("completion")
        return Example(
            split,
            index,
            [{"role": chat.USER, "content": str(obj["prompt"])}],
            completion.strip() if isinstance(completion, str) else completion,
        )
    raise InvalidInput(f"example {index + 1} of the {split} set has no messages, input or prompt")


def _plain(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    # Training-only keys (weight) would be rejected by chat endpoints.
    return [{k: v for k, v in m.items() if k != "weight"} for m in messages]


def read_examples(path: Path, split: str) -> Iterator[Example]:
    index = 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            yield to_example(orjson.loads(raw), split, index)
            index += 1


def load_examples(path: Path, split: str, *, limit: int | None = None, seed: int = 0) -> list[Example]:
    """The examples, or a seeded sample of ``limit`` of them in file order (same seed, same sample)."""
    examples = list(read_examples(path, split))
    if limit is None or limit >= len(examples):
        return examples
    chosen = np.random.default_rng(seed).choice(len(examples), size=limit, replace=False)
    return [examples[i] for i in sorted(chosen.tolist())]


def few_shot_turns(path: Path, k: int, seed: int) -> list[dict[str, Any]]:
    """k examples of a training set as alternating user/assistant turns (their system messages dropped: the
    evaluated prompt brings its own)."""
    pool = [e for e in read_examples(path, "train") if e.reference is not None]
    if len(pool) < k:
        raise InvalidInput(f"the few-shot dataset has {len(pool)} usable examples, fewer than k={k}")
    chosen = sorted(np.random.default_rng(seed).choice(len(pool), size=k, replace=False).tolist())
    turns: list[dict[str, Any]] = []
    for i in chosen:
        turns.extend(m for m in pool[i].prompt if m.get("role") not in chat.SYSTEM_ROLES)
        turns.append({"role": chat.ASSISTANT, "content": pool[i].reference})
    return turns


def with_few_shot(prompt: list[dict[str, Any]], turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not turns:
        return prompt
    head = 0
    while head < len(prompt) and prompt[head].get("role") in chat.SYSTEM_ROLES:
        head += 1
    return prompt[:head] + turns + prompt[head:]
