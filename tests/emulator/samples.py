"""Well-formed inputs for the emulator (and the real API): training files and batch input files as JSONL bytes."""

from __future__ import annotations

import json
from collections.abc import Iterable


def chat_example(question: str, answer: str, *, system: str | None = "You answer briefly.") -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def preference_example(question: str, preferred: str, rejected: str) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": question}]},
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }


def jsonl(items: Iterable[dict]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def training_jsonl(n: int = 12) -> bytes:
    return jsonl(chat_example(f"What is {i} plus {i}?", f"{2 * i}") for i in range(n))


def preference_jsonl(n: int = 12) -> bytes:
    return jsonl(preference_example(f"Say hello number {i}", f"Hello {i}!", "Go away.") for i in range(n))


def batch_line(custom_id: str, model: str, prompt: str, **body: object) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": prompt}], **body},
    }


def batch_jsonl(prompts: dict[str, str], model: str = "gpt-4o-mini") -> bytes:
    """One chat-completions request per (custom_id, prompt)."""
    return jsonl(batch_line(custom_id, model, prompt) for custom_id, prompt in prompts.items())
