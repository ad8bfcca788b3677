"""The corpus of broken files: each one reports exactly these rule codes, at these lines and fields.

Each file in ``corpus/`` shows one kind of problem (a few show a family of related ones, line by line). Expected
issues are (code, line, field) triples; a file must report all of them and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from api_schemas.dataset_report import DatasetFormat
from service.datasets.validation import ValidationOptions, validate_path

CORPUS = Path(__file__).parent / "corpus"
OPTIONS = ValidationOptions(min_examples=0, duplicates=False)

EXPECTED: dict[str, tuple[DatasetFormat | None, set[tuple[str, int | None, str | None]]]] = {
    "valid_chat.jsonl": (DatasetFormat.chat, set()),
    "empty.jsonl": (None, {("empty_file", None, None)}),
    "whitespace_only.jsonl": (None, {("empty_file", None, None)}),
    "gzip.jsonl": (None, {("binary_file", None, None)}),
    "nul_bytes.jsonl": (None, {("binary_file", None, None)}),
    "utf16.jsonl": (None, {("wrong_encoding", None, None)}),
    "bom.jsonl": (DatasetFormat.chat, {("bom", 1, None)}),
    "invalid_utf8.jsonl": (DatasetFormat.chat, {("invalid_utf8", 2, None)}),
    "array.json": (None, {("not_jsonl", 1, None)}),
    "pretty_object.json": (None, {("not_jsonl", 1, None)}),
    "pretty_array.json": (None, {("not_jsonl", 1, None)}),
    "unknown_format.jsonl": (None, {("unknown_format", None, None)}),
    # Line 2 nests 70 levels inside a tool schema (over the limit of 64); line 4 is 2,000 nested arrays, which the
    # JSON parser itself refuses.
    "deep.jsonl": (DatasetFormat.chat, {("too_deep", 2, None), ("too_deep", 4, None)}),
    "syntax_errors.jsonl": (
        DatasetFormat.chat,
        {("invalid_json", 2, None), ("invalid_json", 3, None), ("invalid_json", 5, None), ("blank_line", 6, None)},
    ),
    "blank_lines.jsonl": (DatasetFormat.chat, {("blank_line", 2, None), ("blank_line", 4, None)}),
    "plain.txt": (DatasetFormat.chat, {("invalid_json", 1, None), ("invalid_json", 2, None)}),
    "not_objects.jsonl": (
        DatasetFormat.chat,
        {
            ("not_an_object", 2, None),
            ("not_an_object", 3, None),
            ("not_an_object", 4, None),
            ("not_an_object", 5, None),
        },
    ),
    "structure.jsonl": (
        DatasetFormat.chat,
        {
            ("missing_key", 1, "messages"),
            ("unknown_key", 1, "msgs"),
            ("invalid_type", 2, "messages"),
            ("empty_messages", 3, "messages"),
            ("unknown_key", 4, "id"),
            ("unknown_key", 4, "messages[1].metadata"),
            ("unknown_role", 5, "messages[1].role"),
            ("missing_user_message", 5, "messages"),
            ("missing_key", 6, "messages[1].role"),
            ("missing_user_message", 6, "messages"),
            ("missing_key", 7, "messages[1].content"),
            ("not_an_object", 8, "messages[1]"),
            ("missing_user_message", 8, "messages"),
            # Lines 4-8 all end with the assistant answer "b".
            ("identical_assistant_messages", None, None),
        },
    ),
    "content.jsonl": (
        DatasetFormat.chat,
        {
            ("empty_content", 1, "messages[1].content"),
            ("empty_content", 2, "messages[2].content"),
            ("no_assistant_message", 3, "messages"),
            ("invalid_type", 4, "messages[1].content"),
            ("image_tokens_not_counted", 5, "messages"),
            ("unsupported_content", 6, "messages[1].content[0]"),
            ("invalid_content_part", 7, "messages[1].content[0].type"),
            ("last_message_not_assistant", 8, "messages"),
            ("invalid_name", 9, "messages[1].name"),
        },
    ),
    "weights.jsonl": (
        DatasetFormat.chat,
        {
            ("invalid_weight", 1, "messages[2].weight"),
            ("invalid_weight", 2, "messages[1].weight"),
            ("no_trainable_messages", 3, "messages"),
            ("invalid_weight", 4, "messages[2].weight"),
        },
    ),
    "tool_calls.jsonl": (
        DatasetFormat.chat,
        {
            ("malformed_tool_call", 2, "messages[2].tool_calls[0].function.arguments"),
            ("malformed_tool_call", 3, "messages[2].tool_calls[0].function.arguments"),
            ("malformed_tool_call", 4, "messages[2].tool_calls[0].id"),
            # The tool result on line 4 answers call_1, which (having no id) was never made.
            ("unmatched_tool_call", 4, "messages[3].tool_call_id"),
            ("unmatched_tool_call", 5, "messages[3].tool_call_id"),
            ("undefined_tool", 6, "messages[2].tool_calls[0].function.name"),
            ("invalid_tools", 7, "tools[0].function.name"),
            ("undefined_tool", 7, "messages[2].tool_calls[0].function.name"),
            ("invalid_type", 8, "parallel_tool_calls"),
            ("malformed_tool_call", 9, "messages[2].tool_calls[0].type"),
            ("legacy_function_call", 10, "messages[2].function_call"),
            ("legacy_function_call", 10, "messages[3].role"),
            ("missing_key", 11, "messages[3].tool_call_id"),
        },
    ),
    "special_tokens.jsonl": (
        DatasetFormat.chat,
        {("special_token_text", 1, "messages[1].content"), ("special_token_text", 3, "messages[2].content")},
    ),
    # The special token written with JSON escapes (\u003c...\u003e) is caught after decoding.
    "special_escaped.jsonl": (DatasetFormat.chat, {("special_token_text", 1, "messages[1].content")}),
    "preference.jsonl": (
        DatasetFormat.preference,
        {
            ("preference_shape", 2, "preferred_output"),
            ("preference_shape", 3, "preferred_output"),
            ("preference_shape", 4, "preferred_output[0].role"),
            ("identical_preference_outputs", 5, "preferred_output"),
            ("missing_key", 6, "non_preferred_output"),
            ("preference_shape", 7, "input.messages"),
        }
        | {("missing_system_message", line, "input.messages") for line in range(1, 8)},
    ),
    "prompt_completion.jsonl": (
        DatasetFormat.prompt_completion,
        {
            ("legacy_prompt_completion", None, None),
            ("invalid_type", 2, "completion"),
            ("empty_content", 3, "completion"),
            ("missing_key", 4, "prompt"),
            ("unknown_key", 5, "extra"),
        },
    ),
    # Row 2 holds a quoted newline (lines 3-4), so the ragged rows are on lines 5 and 6.
    "ragged.csv": (
        DatasetFormat.csv,
        {("csv_ragged_row", 5, None), ("csv_ragged_row", 6, None)}
        | {("missing_system_message", line, None) for line in (2, 3, 7)},
    ),
    "valid.csv": (DatasetFormat.csv, {("missing_system_message", 2, None), ("missing_system_message", 3, None)}),
    # A spreadsheet's BOM is fine in a CSV, and ';' is sniffed as the delimiter.
    "bom.csv": (DatasetFormat.csv, {("missing_system_message", 2, None), ("missing_system_message", 3, None)}),
    "no_columns.csv": (DatasetFormat.csv, {("csv_missing_column", 1, "user"), ("csv_missing_column", 1, "assistant")}),
    "empty_cell.csv": (
        DatasetFormat.csv,
        {
            ("missing_system_message", 2, None),
            ("empty_content", 3, 'column "answer"'),
            ("empty_content", 4, 'column "question"'),
        },
    ),
}


def test_every_corpus_file_has_an_expectation() -> None:
    assert {p.name for p in CORPUS.iterdir()} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file(name: str) -> None:
    fmt, expected = EXPECTED[name]
    report = validate_path(CORPUS / name, options=OPTIONS)
    got = {(i.code, i.line, i.field) for i in report.issues}
    assert got == expected
    assert report.format == fmt
    # Every issue is listed (the files are small), and counted once per listing.
    assert sum(c.count for c in report.issue_counts) == len(report.issues)
    has_errors = any(i.severity == "error" for i in report.issues)
    assert report.valid is not has_errors
