from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from dsops_helpers import write_jsonl

from service.datasets.convert import ChatTemplate, ConversionError, prompt_completion_to_chat


def messages(path: Path) -> list[list[tuple[str, str]]]:
    return [[(m["role"], m["content"]) for m in json.loads(line)["messages"]] for line in path.read_text().splitlines()]


def test_auto_strips_the_shared_separator_and_stop(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "legacy.jsonl",
        [
            {"prompt": "Translate: cat\n\n###\n\n", "completion": " chat END"},
            {"prompt": "Translate: dog\n\n###\n\n", "completion": " chien END", "extra": 1},
        ],
    )
    result = prompt_completion_to_chat(src, tmp_path / "chat.jsonl", template=ChatTemplate(system="You translate."))
    assert messages(tmp_path / "chat.jsonl") == [
        [("system", "You translate."), ("user", "Translate: cat"), ("assistant", "chat")],
        [("system", "You translate."), ("user", "Translate: dog"), ("assistant", "chien")],
    ]
    assert (result.prompt_separator, result.completion_stop) == ("\n\n###\n\n", " END")
    assert (result.rows_read, result.examples_written, result.rows_skipped) == (2, 2, 0)
    assert result.sha256 == hashlib.sha256((tmp_path / "chat.jsonl").read_bytes()).hexdigest()


def test_auto_strips_nothing_unless_every_row_shares_the_suffix(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "legacy.jsonl",
        [{"prompt": "Q: a ->", "completion": " yes END"}, {"prompt": "Q: b", "completion": " THE END"}],
    )
    result = prompt_completion_to_chat(src, tmp_path / "chat.jsonl")
    assert result.prompt_separator is None
    assert result.completion_stop == " END"
    assert messages(tmp_path / "chat.jsonl") == [
        [("user", "Q: a ->"), ("assistant", "yes")],
        [("user", "Q: b"), ("assistant", "THE")],
    ]


def test_explicit_and_disabled_rules(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "legacy.jsonl", [{"prompt": "  Hi<SEP>", "completion": "  there.\n"}])
    explicit = ChatTemplate(prompt_separator="<SEP>", completion_stop=None, strip_whitespace=False)
    prompt_completion_to_chat(src, tmp_path / "a.jsonl", template=explicit)
    assert messages(tmp_path / "a.jsonl") == [[("user", "  Hi"), ("assistant", " there.\n")]]
    untouched = ChatTemplate(
        prompt_separator=None, completion_stop=None, strip_leading_space=False, strip_whitespace=False
    )
    prompt_completion_to_chat(src, tmp_path / "b.jsonl", template=untouched)
    assert messages(tmp_path / "b.jsonl") == [[("user", "  Hi<SEP>"), ("assistant", "  there.\n")]]


def test_bad_rows_are_reported_and_skipped(tmp_path: Path) -> None:
    src = tmp_path / "legacy.jsonl"
    src.write_text(
        "\n".join(
            [
                '{"prompt": "ok", "completion": " fine"}',
                "",
                "{not json",
                "[1, 2]",
                '{"prompt": "no completion"}',
                '{"prompt": ["tokens"], "completion": "x"}',
                '{"prompt": "empty", "completion": "   "}',
                '{"prompt": " \\t ", "completion": "x"}',
                '{"prompt": "last", "completion": " good"}',
            ]
        )
        + "\n"
    )
    result = prompt_completion_to_chat(src, tmp_path / "chat.jsonl", template=ChatTemplate(prompt_separator=None))
    assert [(p.line, p.code, p.column) for p in result.problems] == [
        (3, "invalid_json", None),
        (4, "not_an_object", None),
        (5, "missing_field", "completion"),
        (6, "invalid_type", "prompt"),
        (7, "empty_completion", "completion"),
        (8, "empty_prompt", "prompt"),
    ]
    assert (result.rows_read, result.examples_written, result.rows_skipped, result.blank_lines) == (8, 2, 6, 1)
    assert result.problems_total == 6
    assert messages(tmp_path / "chat.jsonl") == [
        [("user", "ok"), ("assistant", "fine")],
        [("user", "last"), ("assistant", "good")],
    ]


def test_problem_list_is_capped_but_counted(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text("nope\n" * 10)
    result = prompt_completion_to_chat(src, tmp_path / "chat.jsonl", max_problems=3)
    assert len(result.problems) == 3 and result.problems_total == 10 and result.rows_skipped == 10
    assert (tmp_path / "chat.jsonl").read_bytes() == b""


def test_output_is_deterministic(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "l.jsonl", [{"prompt": f"p{i}", "completion": f" c{i}"} for i in range(50)])
    a = prompt_completion_to_chat(src, tmp_path / "a.jsonl")
    b = prompt_completion_to_chat(src, tmp_path / "b.jsonl")
    assert a.sha256 == b.sha256
    assert (tmp_path / "a.jsonl").read_bytes().startswith(b'{"messages":[{"role":"user","content":"p0"}')


def test_invalid_template_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ChatTemplate(prompt_separator="")
    with pytest.raises(ConversionError, match="no such file"):
        prompt_completion_to_chat(tmp_path / "missing.jsonl", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
