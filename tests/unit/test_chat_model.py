"""One chat message model: service.chat's rules, and one validated row read the same way by every reader
(validation's token counting, the trainer's chat data, the splitter's stratification key, the evaluation example
builder, the judge's transcript and duplicate detection's canonical text)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from service import chat
from service.datasets.canonical import canonical_example_text, normalize_whitespace
from service.datasets.split import split_dataset
from service.datasets.validation import ValidationOptions, validate_path
from service.evaluations.examples import to_example
from service.evaluations.graders.judge import render_conversation
from service.providers.local.chat_data import parse_chat_example, parse_prompt
from service.tokens import get_encoding

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def _parts(*texts: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": text} for text in texts]


# Text parts split mid-word: joining them with a space (as the splitter did) or a newline (as the judge did) reads
# "18 C" where the trainer reads "18C".
ROW_TEXT = {
    "messages": [
        {"role": "system", "content": _parts("You are ", "terse.")},
        {"role": "user", "name": "ada", "content": _parts("Weather in Par", "is?")},
        {"role": "assistant", "weight": 0, "content": _parts("Let me ", "check.")},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        {"role": "assistant", "name": "bot", "content": _parts("It is 18", "C and ", "sunny.")},
    ],
    "tools": TOOLS,
}
# The same conversation ending at the tool call: its answer is the call.
ROW_CALL = {"messages": [*ROW_TEXT["messages"][:2], ROW_TEXT["messages"][3]], "tools": TOOLS}


def test_text_parts_run_together_and_refusals_are_text() -> None:
    assert chat.text_of(_parts("wh", "ite")) == "white"
    assert chat.text_of([{"type": "refusal", "refusal": "No."}]) == "No."
    image = {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
    assert chat.text_of([*_parts("Describe"), image]) == "Describe"
    assert chat.text_of([*_parts("Describe"), image, *_parts("it")], placeholders=True) == "Describe [image_url] it"
    assert chat.text_of(None) == "" and chat.text_of("as is ") == "as is "


def test_the_answer_is_the_text_or_else_the_calls() -> None:
    assert chat.answer_of({"role": "assistant", "content": _parts("a", "b")}) == "ab"
    calls = chat.answer_of({"role": "assistant", "content": None, "tool_calls": [CALL]})
    assert calls == chat.canonical_json([CALL]) and json.loads(calls) == [CALL]
    assert chat.answer_of({"role": "assistant", "content": None, "refusal": "I can't."}) == "I can't."


@pytest.mark.parametrize(
    ("message", "field", "words"),
    [
        ("hi", "m", "must be an object"),
        ({"role": "robot", "content": "x"}, "m.role", "role must be one of"),
        ({"role": "user", "content": "x", "weight": 1}, "m.weight", "only allowed on assistant"),
        ({"role": "assistant", "content": "x", "weight": True}, "m.weight", "0 or 1"),
        ({"role": "tool", "content": "x", "name": "n"}, "m.name", "unrecognised keys"),
        ({"role": "user", "content": [{"type": "refusal", "refusal": "x"}]}, "m.content[0]", "cannot have"),
        ({"role": "assistant", "content": [{"type": "text", "text": 3}]}, "m.content[0].text", "string `text`"),
        ({"role": "user", "content": "  "}, "m.content", "empty"),
        ({"role": "assistant"}, "m.content", "no content"),
        ({"role": "user", "content": {"text": "x"}}, "m.content", "string or an array"),
    ],
)
def test_read_message_refuses_what_validation_refuses(message: object, field: str, words: str) -> None:
    with pytest.raises(chat.ChatFormatError, match=words) as caught:
        chat.read_message(message, "m")
    assert caught.value.field == field


def test_prompts_from_clients_are_read_leniently() -> None:
    (message,) = chat.parse_messages([{"role": "user", "content": "", "cache_control": 1}], prompt=True)
    assert message.text == "" and message.role == chat.USER


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_one_row_is_read_identically_by_every_reader(tmp_path: Path) -> None:
    rows = [ROW_TEXT, ROW_CALL]
    path = _write(tmp_path / "rows.jsonl", rows)
    read = [chat.parse_messages(row["messages"]) for row in rows]
    answers = [messages[chat.last_answer(messages)].answer for messages in read]
    assert answers == ["It is 18C and sunny.", chat.canonical_json([CALL])]

    # Validation accepts both rows, and counts exactly the strings the model reads as each message's text parts.
    report = validate_path(path, model="gpt-4.1-mini-2025-04-14", options=ValidationOptions(duplicates=False))
    assert [(i.code, i.line) for i in report.issues if i.line is not None and i.severity == "error"] == []
    enc = get_encoding("o200k_base")

    def count(text: str) -> int:
        return len(enc.encode(text))

    per_role: dict[str, int] = {}
    for message in (m for messages in read for m in messages):
        tokens = 3 + count(message.role) + sum(count(text) for text in chat.text_parts(message.content))
        if message.name is not None:
            tokens += count(message.name) + 1
        if message.tool_calls is not None:
            tokens += count(orjson.dumps(message.tool_calls).decode())
        if message.tool_call_id is not None:
            tokens += count(message.tool_call_id)
        per_role[message.role] = per_role.get(message.role, 0) + tokens
    counted = {role: dist.total for role, dist in report.statistics.tokens_per_role.items() if role != "tools"}
    assert counted == per_role

    # The trainer: the same text, names, weights and calls, message by message.
    for row, messages in zip(rows, read, strict=True):
        example = parse_chat_example(row)
        assert [m["content"] for m in example.messages] == [m.text for m in messages]
        assert [m.get("name") for m in example.messages] == [m.name for m in messages]
        assert example.weights == [m.weight if m.role == chat.ASSISTANT else None for m in messages]
        assert [m.get("tool_calls") for m in example.messages] == [m.tool_calls for m in messages]
    assert parse_chat_example(ROW_TEXT).weights[2] == 0

    # The splitter stratifies by the same answer (whitespace-normalised, as a class key).
    outputs = split_dataset(path, tmp_path / "split", fractions={"train": 1.0}, seed=1, stratify_by="assistant")
    assert set(outputs["train"].class_counts or {}) == {
        orjson.dumps(normalize_whitespace(answer)).decode() for answer in answers
    }

    for row, messages, answer in zip(rows, read, answers, strict=True):
        last = chat.last_answer(messages)
        # The evaluation: the answer is the reference, the messages before it the prompt (without weights).
        example = to_example(row, "test", 0)
        assert example.reference == answer
        assert [chat.read_message(m).text for m in example.prompt] == [m.text for m in messages[:last]]
        assert all("weight" not in m for m in example.prompt)
        # Local inference reads that prompt as the trainer reads the row.
        assert [m["content"] for m in parse_prompt(example.prompt).messages] == [m.text for m in messages[:last]]
        # The judge shows each message's text, its name and its calls.
        transcript = render_conversation(example.prompt)
        for message in messages[:last]:
            assert message.text in transcript
        assert "[user ada]\nWeather in Paris?" in transcript
        # Duplicate detection compares the same text.
        canonical = canonical_example_text(row)
        for message in messages:
            assert normalize_whitespace(message.text) in canonical
    assert 'call get_weather({"city": "Paris"})' in render_conversation(ROW_TEXT["messages"])
