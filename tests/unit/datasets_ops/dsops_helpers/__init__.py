"""Deterministic text and file builders for the dataset-operation tests."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

VOCABULARY = [f"{stem}{i}" for i, stem in enumerate(["alpha", "bravo", "carbon", "delta", "ember", "fjord"] * 400)]


def words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(VOCABULARY) for _ in range(n)]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(words(rng, n))


def change_one_word(text: str, position: int | None = None) -> str:
    tokens = text.split()
    index = len(tokens) // 2 if position is None else position
    tokens[index] = "replacement"
    return " ".join(tokens)


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def chat(user: str, assistant: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], **extra}
