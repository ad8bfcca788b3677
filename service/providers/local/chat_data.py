"""Chat JSONL (OpenAI fine-tuning format) -> token ids and labels via the model's own chat template.

Labels are -100 everywhere except the tokens of assistant messages whose `weight` is not 0. The assistant spans are
found on the rendered text: rendering the conversation up to message i with a generation prompt, and up to message i
included, gives the exact characters the template emits for that message; tokens overlapping those characters (from
the fast tokenizer's offsets) are the targets. This works for any template that renders a conversation as a prefix of
its extensions, which is checked per example.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import chat

from .errors import ChatTemplateError, DatasetFormatError

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    line: int = 0
    truncated: bool = False

    @property
    def n_targets(self) -> int:
        """Tokens that carry loss; the first token never does, as nothing precedes it to predict it from."""
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class DatasetStats:
    examples: int = 0
    tokens: int = 0
    target_tokens: int = 0
    truncated: int = 0
    skipped_no_target: int = 0
    max_length: int = 0
    skipped_lines: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "tokens": self.tokens,
            "target_tokens": self.target_tokens,
            "truncated": self.truncated,
            "skipped_no_target": self.skipped_no_target,
            "max_length": self.max_length,
            "mean_length": round(self.tokens / self.examples, 1) if self.examples else 0.0,
        }


@dataclass
class ChatExample:
    messages: list[dict[str, Any]]
    weights: list[int | None]
    tools: list[dict[str, Any]] | None = None


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; errors name the file and line."""
    with Path(path).open("r", encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as exc:
                message = f"invalid JSON: {exc.msg} at column {exc.colno}"
                raise DatasetFormatError(message, path=str(path), line=number) from exc
            yield number, parsed


def parse_chat_example(obj: Any, *, path: str | None = None, line: int | None = None) -> ChatExample:
    """Read one JSONL object of the chat format (as ``service.chat`` reads it) and normalise it for a chat template."""

    def fail(message: str, field_name: str | None = None) -> DatasetFormatError:
        return DatasetFormatError(message, path=path, line=line, field=field_name)

    if not isinstance(obj, dict):
        raise fail("each line must be a JSON object with a 'messages' list")
    if "preferred_output" in obj or "non_preferred_output" in obj:
        raise fail("preference (DPO) examples are not supported as supervised chat data; use method type 'dpo'")
    if "prompt" in obj and "completion" in obj and "messages" not in obj:
        raise fail("legacy prompt/completion examples are not supported: convert them to chat 'messages'")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise fail("'messages' must be a non-empty list", "messages")
    tools = obj.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise fail("'tools' must be a list", "tools")
    try:
        read = chat.parse_messages(messages)
    except chat.ChatFormatError as exc:
        raise fail(exc.message, exc.field) from None
    normalised = [_template_message(message, f"messages[{i}]", fail) for i, message in enumerate(read)]
    if not any(message.role == chat.ASSISTANT for message in read):
        raise fail("example has no assistant message to learn from", "messages")
    return ChatExample(
        messages=normalised,
        weights=[message.weight if message.role == chat.ASSISTANT else None for message in read],
        tools=tools,
    )


def _template_message(message: chat.Message, where: str, fail: Any) -> dict[str, Any]:
    """A message as chat templates take it: text content, and the system role for ``developer`` (most open-model
    templates know no developer role)."""
    if message.images:
        raise fail("only text content parts are supported by the local provider", f"{where}.content")
    out: dict[str, Any] = {"role": chat.SYSTEM if message.role == chat.DEVELOPER else message.role}
    out["content"] = message.text
    if message.name is not None:
        out["name"] = message.name
    for key in ("tool_calls", "function_call", "tool_call_id"):
        value = getattr(message, key)
        if value is not None:
            out[key] = value
    return out


class ChatEncoder:
    """Turns chat examples into TokenizedExample with one tokenizer and its chat template."""

    def __init__(self, tokenizer: Any, max_seq_length: int):
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError("The base model's tokenizer has no chat template; chat data cannot be formatted")
        if not getattr(tokenizer, "is_fast", False):
            raise ChatTemplateError("A fast (Rust) tokenizer is needed to locate assistant tokens")
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        specials = set(getattr(tokenizer, "all_special_tokens", []))
        for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
            if getattr(token, "special", False):
                specials.add(str(token.content))
        self._special_texts = sorted(text for text in specials if text)

    def render(self, example: ChatExample, upto: int, *, add_generation_prompt: bool) -> str:
        if upto == 0:
            # An assistant message first: its prefix is whatever the template emits before any message, if anything.
            try:
                text = self.tokenizer.apply_chat_template(
                    [], tools=example.tools, tokenize=False, add_generation_prompt=add_generation_prompt
                )
            except Exception:
                return ""
            return text if isinstance(text, str) else ""
        text = self.tokenizer.apply_chat_template(
            example.messages[:upto],
            tools=example.tools,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
        if not isinstance(text, str):
            raise ChatTemplateError("apply_chat_template(tokenize=False) did not return text")
        return text

    def check_special_tokens(self, example: ChatExample, *, path: str | None, line: int | None) -> None:
        for index, message in enumerate(example.messages):
            content = message.get("content") or ""
            for special in self._special_texts:
                if special in content:
                    raise DatasetFormatError(
                        f"content contains the special token text {special!r}, which would change the conversation "
                        "structure",
                        path=path,
                        line=line,
                        field=f"messages[{index}].content",
                    )

    def encode(self, example: ChatExample, *, path: str | None = None, line: int = 0) -> TokenizedExample:
        self.check_special_tokens(example, path=path, line=line)
        try:
            full = self.render(example, len(example.messages), add_generation_prompt=False)
            spans = []
            for index, message in enumerate(example.messages):
                if message["role"] != "assistant":
                    continue
                before = self.render(example, index, add_generation_prompt=True)
                upto = self.render(example, index + 1, add_generation_prompt=False)
                if not (upto.startswith(before) and full.startswith(upto)):
                    raise ChatTemplateError(
                        "the chat template does not render a conversation as a prefix of its continuation, so "
                        "assistant tokens cannot be located"
                    )
                if example.weights[index] != 0:
                    spans.append((len(before), len(upto)))
        except ChatTemplateError:
            raise
        except Exception as exc:  # jinja raises TemplateError subclasses for roles a template refuses
            raise DatasetFormatError(f"the base model's chat template failed: {exc}", path=path, line=line) from exc
        encoding = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        input_ids = list(encoding["input_ids"])
        labels = [IGNORE_INDEX] * len(input_ids)
        span_index = 0
        for position, (start, end) in enumerate(encoding["offset_mapping"]):
            while span_index < len(spans) and spans[span_index][1] <= start:
                span_index += 1
            if span_index == len(spans):
                break
            span_start, span_end = spans[span_index]
            if start < span_end and end > span_start:
                labels[position] = input_ids[position]
        truncated = len(input_ids) > self.max_seq_length
        if truncated:
            input_ids = input_ids[: self.max_seq_length]
            labels = labels[: self.max_seq_length]
        return TokenizedExample(input_ids=input_ids, labels=labels, line=line, truncated=truncated)

    def encode_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids of a conversation followed by the assistant generation prompt (for inference)."""
        example = parse_prompt(messages)
        text = self.render(example, len(example.messages), add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def parse_prompt(messages: Any) -> ChatExample:
    """Read a prompt (a message list that need not contain an assistant turn) as chat servers do (``service.chat``)."""
    if not isinstance(messages, list) or not messages:
        raise DatasetFormatError("a prompt must be a non-empty list of messages")

    def fail(message: str, field_name: str | None = None) -> DatasetFormatError:
        return DatasetFormatError(message, field=field_name)

    try:
        read = chat.parse_messages(messages, prompt=True)
    except chat.ChatFormatError as exc:
        raise fail(exc.message, exc.field) from None
    normalised = [_template_message(message, f"messages[{i}]", fail) for i, message in enumerate(read)]
    return ChatExample(messages=normalised, weights=[None] * len(normalised))


def load_chat_dataset(path: Path, encoder: ChatEncoder) -> tuple[list[TokenizedExample], DatasetStats]:
    """Tokenize every example of a chat JSONL file; examples left without any target token are skipped and counted."""
    examples: list[TokenizedExample] = []
    stats = DatasetStats()
    name = str(path)
    for line, obj in iter_jsonl(Path(path)):
        example = encoder.encode(parse_chat_example(obj, path=name, line=line), path=name, line=line)
        if example.n_targets == 0:
            stats.skipped_no_target += 1
            stats.skipped_lines.append(line)
            continue
        examples.append(example)
        stats.examples += 1
        stats.tokens += len(example)
        stats.target_tokens += example.n_targets
        stats.truncated += int(example.truncated)
        stats.max_length = max(stats.max_length, len(example))
    if not examples:
        raise DatasetFormatError("no example has an assistant token to train on", path=name)
    return examples, stats
