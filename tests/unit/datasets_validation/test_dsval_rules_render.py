"""The rule registry (stable codes, listable docs) and the terminal rendering of a report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from api_schemas.dataset_report import Severity
from service.datasets.validation import RULES, get_rule, list_rules, render_report, validate_path
from service.datasets.validation.state import IssueCollector

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SOURCES = Path(__file__).resolve().parents[3] / "service" / "datasets" / "validation"


def test_rules_have_stable_codes_and_docs() -> None:
    for code, rule in RULES.items():
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", code)
        assert rule.code == code and rule.title and len(rule.doc) > 20 and rule.formats
    docs = list_rules()
    assert len(docs) == len(RULES)
    assert [d.severity for d in docs] == sorted((d.severity for d in docs), key=lambda s: s != Severity.error)
    assert get_rule("invalid_json").severity is Severity.error
    assert get_rule("duplicate_example").severity is Severity.warning
    with pytest.raises(KeyError, match="unknown validation rule"):
        get_rule("nope")


def test_every_code_used_in_the_engine_is_registered() -> None:
    used: set[str] = set()
    for path in SOURCES.glob("*.py"):
        text = path.read_text()
        used |= set(re.findall(r'(?:add|_add_many)\(\s*(?:issues,\s*)?"([a-z0-9_]+)"', text))
        used |= set(re.findall(r'\(\s*"([a-z0-9_]+)",\s*(?:None|1|\w+),', text)) & set(RULES)
    assert used, "found no rule codes in the sources"
    assert used == set(RULES), used ^ set(RULES)
    # The issue-list examples in the brief exist.
    for code in [
        "invalid_json",
        "bom",
        "invalid_utf8",
        "not_an_object",
        "missing_key",
        "unknown_key",
        "unknown_role",
        "empty_content",
        "no_assistant_message",
        "invalid_weight",
        "malformed_tool_call",
        "special_token_text",
        "preference_shape",
        "too_few_examples",
        "too_deep",
        "line_too_long",
        "empty_file",
        "not_jsonl",
        "binary_file",
        "csv_ragged_row",
        "missing_system_message",
        "over_token_limit",
        "duplicate_example",
        "near_duplicate_example",
        "inconsistent_system_prompt",
        "identical_assistant_messages",
    ]:
        assert code in RULES


def test_unregistered_codes_are_refused() -> None:
    with pytest.raises(KeyError, match="unregistered"):
        IssueCollector(10).add("made_up_code", 1, None, "x")


def test_rule_docs_serialise() -> None:
    payload = json.loads(json.dumps([d.model_dump(mode="json") for d in list_rules()]))
    assert {"code", "severity", "title", "doc", "formats"} <= set(payload[0])


def _bad_file(tmp_path: Path) -> Path:
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    lines = [json.dumps(good)] * 3 + ["{oops", json.dumps({"messages": [{"role": "user", "content": "x"}]})]
    lines += ["{oops"] * 20
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_render_plain(tmp_path: Path) -> None:
    report = validate_path(_bad_file(tmp_path), model="gpt-4.1-mini-2025-04-14")
    text = render_report(report, color=False)
    assert not ANSI.search(text)
    assert text.startswith("INVALID")
    errors_at = text.index("Errors (")
    warnings_at = text.index("Warnings (")
    assert errors_at < warnings_at
    assert "invalid_json" in text and "lines 4, 6, 7, 8, 9" in text and "and 9 more" in text
    assert "no_assistant_message" in text and "line 5, messages: no assistant message" in text
    assert "Tokens (o200k_base)" in text
    assert "Estimated training cost: $" in text and "price table 2026-11-01" in text


def test_render_color(tmp_path: Path) -> None:
    report = validate_path(_bad_file(tmp_path))
    assert ANSI.search(render_report(report, color=True))


def test_render_valid(tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps({**good, "messages": [*good["messages"]]}) + "\n" for _ in range(10)))
    text = render_report(validate_path(path), color=False)
    assert text.startswith("VALID")
    assert "Errors (" not in text
