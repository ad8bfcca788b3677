"""The engine end to end: exact statistics and cost for hand-counted files, parallel == serial, bounded memory."""

from __future__ import annotations

import json
import os
import random
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pytest

from api_schemas.dataset_report import DatasetFormat, DatasetReport
from service.datasets.validation import CsvColumns, ValidationOptions, parallel, validate_path
from service.datasets.validation.parallel import plan_ranges
from service.datasets.validation.reader import TooLong, first_line_start, iter_lines
from service.datasets.validation.scan import scan_range
from service.tokens import get_encoding

NO_DUPS = ValidationOptions(duplicates=False)
SYSTEM = {"role": "system", "content": "You are a terse assistant."}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(user: str, assistant: str, system: dict | None = SYSTEM) -> dict:
    messages = ([system] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ]
    return {"messages": messages}


def codes(report: DatasetReport) -> dict[str, int]:
    return {c.code: c.count for c in report.issue_counts}


def test_hand_counted_tokens_and_cost(tmp_path: Path) -> None:
    # Each example: user message 3 + "user" (1) + "hello world" (2) = 6; assistant 3 + 1 + 2 = 6; reply primer 3.
    for name in ("o200k_base", "cl100k_base"):
        enc = get_encoding(name)  # type: ignore[arg-type]
        assert [len(enc.encode(s)) for s in ("user", "assistant", "hello world")] == [1, 1, 2]
    path = write_jsonl(tmp_path / "tiny.jsonl", [chat("hello world", "hello world", None)] * 10)
    report = validate_path(path, model="gpt-4.1-mini-2025-04-14", options=NO_DUPS)
    stats = report.statistics
    assert stats.tokens_per_example.model_dump() == {
        "count": 10,
        "total": 150,
        "min": 15,
        "max": 15,
        "mean": 15.0,
        "p50": 15,
        "p95": 15,
    }
    assert stats.tokens_per_role["user"].total == 60 and stats.tokens_per_role["assistant"].total == 60
    assert {k: v.total_tokens for k, v in stats.tokens_by_encoding.items()} == {"o200k_base": 150, "cl100k_base": 150}
    cost = report.cost
    assert cost is not None
    # 10 examples: auto picks min(25, 100 // 10) = 10 epochs; 10 * 150 = 1,500 tokens at USD 5/M = USD 0.0075.
    assert (cost.n_epochs_auto, cost.n_epochs, cost.billable_tokens) == (10, 10, 1500)
    assert Decimal(cost.estimated_cost_usd) == Decimal("0.0075")
    assert cost.usd_per_1m_tokens == "5.00" and cost.price_table_version == "2026-11-01"
    assert cost.base_model == "gpt-4.1-mini-2025-04-14" and cost.encoding == "o200k_base"
    assert report.valid
    assert codes(report) == {
        "missing_system_message": 10,
        "identical_assistant_messages": 1,
        "model_retiring": 1,
    }


def test_limit_truncates_billable_tokens_and_warns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "tiny.jsonl", [chat("hello world", "hello world", None)] * 10)
    options = ValidationOptions(duplicates=False, example_token_limit=12, n_epochs=2)
    report = validate_path(path, model="ft:gpt-4.1-mini-2025-04-14:acme::x", options=options)
    assert report.statistics.examples_over_limit == 10
    assert codes(report)["over_token_limit"] == 10
    assert report.cost is not None
    assert (report.cost.n_epochs, report.cost.billable_tokens) == (2, 2 * 10 * 12)
    assert Decimal(report.cost.estimated_cost_usd) == Decimal("0.0012")


def test_names_tools_and_tool_calls_are_counted(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    example = {
        "messages": [
            {"role": "user", "content": "hi", "name": "bob"},
            {"role": "assistant", "content": None, "tool_calls": [call], "weight": 1},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            {"role": "assistant", "content": "done"},
        ],
        "tools": tools,
    }
    path = write_jsonl(tmp_path / "tools.jsonl", [example])
    report = validate_path(path, options=ValidationOptions(duplicates=False, min_examples=1))
    count = get_encoding("o200k_base").encode_ordinary

    def n(s: str) -> int:
        return len(count(s))

    compact = json.dumps(tools, separators=(",", ":"))
    calls = json.dumps([call], separators=(",", ":"))
    expected = (
        (3 + n("user") + n("hi") + n("bob") + 1)
        + (3 + n("assistant") + n(calls))  # content null and weight are not text
        + (3 + n("tool") + n("c1") + n("ok"))
        + (3 + n("assistant") + n("done"))
        + n(compact)
        + 3
    )
    assert report.statistics.tokens_per_example.total == expected
    assert report.statistics.tokens_per_role["tools"].total == n(compact)
    assert report.valid


def test_percentiles_are_nearest_rank(tmp_path: Path) -> None:
    rows = [chat("hi", "word " * k) for k in range(1, 21)]
    report = validate_path(write_jsonl(tmp_path / "p.jsonl", rows), options=NO_DUPS)
    per_example = report.statistics.tokens_per_example
    totals = sorted(
        3 + (3 + 1 + 6) + (3 + 1 + 1) + (3 + 1 + len(get_encoding("o200k_base").encode("word " * k)))
        for k in range(1, 21)
    )
    assert per_example.min == totals[0] and per_example.max == totals[-1]
    assert per_example.p50 == totals[9]  # rank ceil(0.5 * 20) = 10
    assert per_example.p95 == totals[18]  # rank ceil(0.95 * 20) = 19
    assert per_example.total == sum(totals)


def _mixed_rows(rng: random.Random, n: int) -> list[str]:
    lines = []
    for i in range(n):
        r = rng.random()
        if r < 0.05:
            lines.append("{not json")
        elif r < 0.08:
            lines.append("")
        elif r < 0.1:
            lines.append(json.dumps(chat("q", "")))
        elif r < 0.12:
            lines.append(json.dumps(chat("<|endoftext|>", "a")))
        else:
            lines.append(json.dumps(chat(f"question {i} " * rng.randint(1, 30), f"answer {i}", SYSTEM)))
    return lines


def test_parallel_scan_equals_serial_scan(tmp_path: Path) -> None:
    rng = random.Random(5)
    lines = _mixed_rows(rng, 3000)
    lines[1234] = json.dumps(chat("x" * 200_000, "y"))  # spans several 64 KiB ranges; over the 100 KB line limit
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    common = {"duplicates": False, "max_line_bytes": 100_000, "max_issues_per_code": 10_000}
    serial = validate_path(path, options=ValidationOptions(workers=1, **common))
    parallel = validate_path(
        path,
        options=ValidationOptions(workers=2, chunk_bytes=64 * 1024, parallel_min_bytes=0, **common),
    )
    assert path.stat().st_size > 10 * 64 * 1024
    assert serial.model_dump(exclude={"duration_s"}) == parallel.model_dump(exclude={"duration_s"})
    too_long = [i for i in serial.issues if i.code == "line_too_long"]
    assert [i.line for i in too_long] == [1235]
    expected_invalid = [n + 1 for n, line in enumerate(lines) if line == "{not json"]
    assert [i.line for i in serial.issues if i.code == "invalid_json"] == expected_invalid
    assert serial.statistics.lines == len(lines)


def test_duplicates_found_by_parallel_workers_equal_a_direct_search(tmp_path: Path) -> None:
    """Workers sketch their ranges' examples; the parent only joins the sketches: the result must be the one
    DuplicateFinder gives for the canonical texts, whatever the ranges and however many workers."""
    from service.datasets.canonical import canonical_example_text
    from service.datasets.dedupe import DuplicateFinder

    rng = random.Random(11)
    words = [f"w{i}" for i in range(3000)]
    rows: list = []
    for _ in range(2500):
        draw = rng.random()
        if rows and draw < 0.05:
            rows.append(rng.choice(rows))  # exact copy, anywhere earlier in the file
        elif rows and draw < 0.08:
            text = rng.choice(rows)["messages"][1]["content"].split()
            text[len(text) // 2] = "edited"  # one-word edit of an earlier example: a near duplicate
            rows.append(chat(" ".join(text), "fine"))
        else:
            rows.append(chat(" ".join(rng.choices(words, k=80)), "fine"))
    path = write_jsonl(tmp_path / "dups.jsonl", rows)
    common = {"max_issues_per_code": 10_000}
    serial = validate_path(path, options=ValidationOptions(workers=1, **common))
    parallel_report = validate_path(
        path, options=ValidationOptions(workers=2, chunk_bytes=64 * 1024, parallel_min_bytes=0, **common)
    )
    assert path.stat().st_size > 10 * 64 * 1024
    assert serial.model_dump(exclude={"duration_s"}) == parallel_report.model_dump(exclude={"duration_s"})
    with DuplicateFinder(max_near_pairs=40_000, max_exact_groups=10_000, max_group_lines=10_001) as finder:
        for line, row in enumerate(rows, start=1):
            finder.add(line, canonical_example_text(row))
        direct = finder.finish()
    dups = serial.duplicates
    assert dups.checked and dups.exact_groups > 50 and dups.near_pairs > 20
    assert (dups.exact_groups, dups.exact_examples, dups.near_pairs) == (
        direct.exact_groups_total,
        direct.exact_duplicate_lines,
        direct.near_pairs_total,
    )
    assert dups.exact == [sorted(g) for g in direct.exact]
    assert [(p.line_a, p.line_b, p.similarity) for p in dups.near] == sorted(direct.near, key=lambda p: (p[1], p[0]))


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_ranges_cover_every_line_exactly_once(tmp_path: Path, chunk: int) -> None:
    rng = random.Random(chunk)
    data = (
        b"".join(b"x" * rng.choice([0, 1, 2, 5, 9, 30]) + rng.choice([b"\n", b"\n", b"y\n"]) for _ in range(200))
        + b"tail-without-newline"
    )
    path = tmp_path / "lines.txt"
    path.write_bytes(data)
    expected = data.split(b"\n")
    got: list[bytes | TooLong] = []
    with open(path, "rb") as f:
        for lo, hi in plan_ranges(len(data), chunk):
            begin = first_line_start(f, lo, hi, block=4)
            if begin is None or (hi is not None and begin >= hi):
                continue
            got.extend(iter_lines(f, begin, hi, max_line_bytes=20, block=4))
    assert [g if isinstance(g, bytes) else len(expected[i]) for i, g in enumerate(got)] == [
        e if len(e) <= 20 else len(e) for e in expected
    ]
    assert all(g.length == len(expected[i]) for i, g in enumerate(got) if isinstance(g, TooLong))


def test_ranges_inside_a_long_line_do_not_scan_past_their_end(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_bytes(b"a\n" + b"x" * 1000 + b"\nb\n")

    class CountingFile:
        def __init__(self, f) -> None:
            self.f, self.read_bytes = f, 0

        def seek(self, pos: int) -> None:
            self.f.seek(pos)

        def read(self, n: int) -> bytes:
            data = self.f.read(n)
            self.read_bytes += len(data)
            return data

    with open(path, "rb") as raw:
        f = CountingFile(raw)
        assert first_line_start(f, 100, 200, block=16) is None  # inside the long line
        assert f.read_bytes <= 100
        assert first_line_start(f, 100, None, block=16) == 1003  # open-ended: the line after it
        assert first_line_start(f, 1, 2) is None and first_line_start(f, 2, 3) == 2
        assert first_line_start(f, 1003, 1004) == 1003  # offset-1 is the newline: a line starts at the offset


def test_a_huge_line_is_skipped_without_being_held_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps(chat("a", "b")) + "\n")
        f.write('{"messages": [{"role": "user", "content": "' + "z" * (40 * 1024 * 1024))
        f.write('"}]}\n')
        f.write(json.dumps(chat("c", "d")) + "\n")
    options = ValidationOptions(duplicates=False, min_examples=1, max_line_bytes=1024 * 1024, workers=1)
    tracemalloc.start()
    try:
        report = validate_path(path, options=options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak traced memory {peak:,} bytes"
    assert [(i.code, i.line) for i in report.issues if i.severity == "error"] == [("line_too_long", 2)]
    assert report.statistics.examples == 2 and report.statistics.lines == 3


def test_issue_lists_are_bounded_but_counts_are_complete(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("nope\n" * 5000)
    report = validate_path(path, options=ValidationOptions(max_issues_per_code=7, duplicates=False))
    count = {c.code: (c.count, c.listed) for c in report.issue_counts}
    assert count["invalid_json"] == (5000, 7)
    assert [i.line for i in report.issues if i.code == "invalid_json"] == [1, 2, 3, 4, 5, 6, 7]
    assert report.error_count == 5001  # and too_few_examples
    assert len(report.model_dump_json()) < 20_000


def test_too_few_examples(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "few.jsonl", [chat(f"q{i}", f"a{i}") for i in range(3)])
    report = validate_path(path, options=NO_DUPS)
    assert not report.valid
    assert [(i.code, i.line) for i in report.issues] == [("too_few_examples", None)]


def test_inconsistent_system_prompt(tmp_path: Path) -> None:
    rows = [chat(f"q{i}", f"a{i}") for i in range(20)]
    rows[7] = chat("q7", "a7", {"role": "system", "content": "You are a pirate."})
    report = validate_path(write_jsonl(tmp_path / "sys.jsonl", rows), options=NO_DUPS)
    issues = [i for i in report.issues if i.code == "inconsistent_system_prompt"]
    assert [(i.line, i.field) for i in issues] == [(8, "messages[0].content")]
    assert "19 of 20" in issues[0].message
    assert report.valid


def test_varied_system_prompts_are_not_flagged(tmp_path: Path) -> None:
    rows = [chat(f"q{i}", f"a{i}", {"role": "system", "content": f"Persona {i % 3}"}) for i in range(30)]
    report = validate_path(write_jsonl(tmp_path / "sys.jsonl", rows), options=NO_DUPS)
    assert "inconsistent_system_prompt" not in codes(report)


def test_exact_duplicates_are_reported_with_their_first_line(tmp_path: Path) -> None:
    rows = [chat(f"question number {i}", f"answer number {i}") for i in range(12)]
    rows.append(rows[3])
    rows.append(json.loads(json.dumps(rows[5]).replace('"role"', ' "role"')))  # same content, other spacing
    report = validate_path(write_jsonl(tmp_path / "dups.jsonl", rows))
    dups = [(i.line, i.message) for i in report.issues if i.code == "duplicate_example"]
    assert dups == [(13, "same as line 4"), (14, "same as line 6")]
    assert report.duplicates.checked and report.duplicates.exact_examples == 2
    assert report.duplicates.exact == [[4, 13], [6, 14]]


def test_model_dependent_warnings(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ok.jsonl", [chat(f"q{i}", f"a{i}") for i in range(10)])
    unknown = validate_path(path, model="llama-3-8b", options=NO_DUPS)
    assert "unknown_model" in codes(unknown) and unknown.cost is None and unknown.encoding == "o200k_base"
    legacy = validate_path(path, model="babbage-002", options=NO_DUPS)
    assert "model_not_fine_tunable" in codes(legacy) and legacy.encoding == "cl100k_base"
    turbo = validate_path(path, model="gpt-3.5-turbo", options=NO_DUPS)
    assert turbo.encoding == "cl100k_base" and turbo.statistics.token_limit == 16385
    assert set(turbo.statistics.tokens_by_encoding) == {"cl100k_base", "o200k_base"}
    assert "model_retiring" not in codes(turbo) and turbo.cost is not None
    one = validate_path(path, options=ValidationOptions(duplicates=False, count_other_encoding=False))
    assert set(one.statistics.tokens_by_encoding) == {"o200k_base"}


def test_preference_cost_uses_dpo(tmp_path: Path) -> None:
    row = {
        "input": {"messages": [{"role": "user", "content": "hello world"}]},
        "preferred_output": [{"role": "assistant", "content": "hello world"}],
        "non_preferred_output": [{"role": "assistant", "content": "no"}],
    }
    path = write_jsonl(tmp_path / "pref.jsonl", [row] * 10)
    report = validate_path(path, model="gpt-4o-mini-2024-07-18", options=NO_DUPS)
    assert report.format == DatasetFormat.preference and report.cost is not None
    assert report.cost.method == "dpo"
    # input 6 + primer 3 + preferred 6 + non-preferred (3 + 1 + "no" 1) = 20 per example.
    assert report.statistics.tokens_per_example.total == 200


def test_declared_format_overrides_detection(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", [chat(f"q{i}", f"a{i}") for i in range(10)])
    report = validate_path(path, format="preference", options=NO_DUPS)
    assert report.format == DatasetFormat.preference and not report.format_detected
    assert codes(report)["missing_key"] == 10 and codes(report)["unknown_key"] == 10
    with pytest.raises(ValueError, match="unknown dataset format"):
        validate_path(path, format="parquet")


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        validate_path("/nonexistent/file.jsonl")


def test_csv_with_an_explicit_mapping(tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"
    path.write_text("id\tq\ta\n" + "".join(f"{i}\tquestion {i}\tanswer {i}\n" for i in range(10)))
    columns = CsvColumns(user="q", assistant="a", system_prompt="Be brief.", delimiter="\t")
    report = validate_path(path, csv=columns, options=NO_DUPS)
    assert report.valid and report.format == DatasetFormat.csv
    assert report.statistics.examples == 10 and report.statistics.messages == 30
    assert report.issues == []


def test_headerless_csv_by_index(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("".join(f"question {i},answer {i}\n" for i in range(10)))
    report = validate_path(path, csv={"user": 0, "assistant": 1, "header": False}, options=NO_DUPS)
    assert report.statistics.examples == 10
    bad = validate_path(path, csv={"user": 0, "assistant": 5, "header": False}, options=NO_DUPS)
    assert [(i.code, i.line, i.field) for i in bad.issues if i.severity == "error"] == [
        ("csv_missing_column", 1, "assistant")
    ]


def test_csv_mapping_validation() -> None:
    with pytest.raises(ValueError, match="not both"):
        CsvColumns(user="q", assistant="a", system="s", system_prompt="x")
    with pytest.raises(ValueError, match="0-based indexes"):
        CsvColumns(user="q", assistant="a", header=False)


def test_crlf_line_endings_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"".join(json.dumps(chat(f"q{i}", f"a{i}")).encode() + b"\r\n" for i in range(10)))
    report = validate_path(path, options=NO_DUPS)
    assert report.valid and report.issues == [] and report.statistics.examples == 10


def test_concurrent_validations_in_threads_agree(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = write_jsonl(tmp_path / "t.jsonl", [chat(f"question {i} " * (i % 7 + 1), f"answer {i}") for i in range(300)])
    expected = validate_path(path, options=NO_DUPS).model_dump(exclude={"duration_s"})
    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda _: validate_path(path, options=NO_DUPS), range(8)))
    assert all(r.model_dump(exclude={"duration_s"}) == expected for r in reports)


def test_other_encoding_totals_and_limit(tmp_path: Path) -> None:
    text = "敏捷的棕色狐狸跳过了懒狗"
    path = write_jsonl(tmp_path / "zh.jsonl", [chat(text, text, None)] * 10)
    o200k = len(get_encoding("o200k_base").encode(text))
    cl100k = len(get_encoding("cl100k_base").encode(text))
    assert o200k < cl100k
    limit = 3 + 1 + o200k + 3 + 1 + o200k + 3  # exactly the o200k total: over the limit only in cl100k
    report = validate_path(path, options=ValidationOptions(duplicates=False, example_token_limit=limit))
    totals = report.statistics.tokens_by_encoding
    assert totals["o200k_base"].total_tokens == 10 * limit
    assert totals["cl100k_base"].total_tokens == 10 * (limit - 2 * o200k + 2 * cl100k)
    assert (totals["o200k_base"].examples_over_limit, totals["cl100k_base"].examples_over_limit) == (0, 10)


def test_a_huge_one_line_json_array_is_not_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "array.jsonl"
    item = json.dumps(chat("question " * 20, "answer"))
    with open(path, "w") as f:
        f.write("[" + ",".join([item] * 40_000) + "]\n")  # about 12 MB on one line
    assert path.stat().st_size > 9 * 1024 * 1024
    report = validate_path(path, options=NO_DUPS)
    assert [(i.code, i.line) for i in report.issues] == [("not_jsonl", 1)]


def test_an_array_on_the_first_line_of_a_jsonl_file_is_one_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text("[1, 2]\n" + "".join(json.dumps(chat(f"q{i}", f"a{i}")) + "\n" for i in range(10)))
    report = validate_path(path, options=NO_DUPS)
    assert [(i.code, i.line) for i in report.issues] == [("not_an_object", 1)]
    assert report.statistics.examples == 10


_PARENT_PID = os.getpid()


def _scan_that_kills_its_worker(ctx, lo, hi):  # type: ignore[no-untyped-def]
    if os.getpid() != _PARENT_PID and lo >= 3 * 64 * 1024:
        os._exit(1)  # a worker dying mid-file, as when the OOM killer takes it
    return scan_range(ctx, lo, hi)


def test_a_dead_worker_falls_back_to_scanning_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lines = _mixed_rows(random.Random(9), 3000)
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    common = {"duplicates": False, "max_issues_per_code": 10_000}
    serial = validate_path(path, options=ValidationOptions(workers=1, **common))
    monkeypatch.setattr(parallel, "scan_range", _scan_that_kills_its_worker)
    # The killing scan is a patch in this process, so the workers must be forked to inherit it. Other tests leave
    # threads running (the in-process Celery worker), which would make the engine spawn instead; the forked children
    # here only scan and exit, so forking beside those threads is safe.
    monkeypatch.setattr(parallel.threading, "active_count", lambda: 1)
    recovered = validate_path(
        path, options=ValidationOptions(workers=2, chunk_bytes=64 * 1024, parallel_min_bytes=0, **common)
    )
    assert recovered.model_dump(exclude={"duration_s"}) == serial.model_dump(exclude={"duration_s"})
    assert "scanning the remaining ranges in-process" in caplog.text


def test_csv_columns_of_the_converter_are_accepted(tmp_path: Path) -> None:
    from service.datasets.convert import CsvColumns as ConverterColumns

    path = tmp_path / "data.csv"
    path.write_text("q,a\n" + "".join(f"question {i},answer {i}\n" for i in range(10)))
    report = validate_path(
        path, csv=ConverterColumns(user="q", assistant="a", system_text="Be brief."), options=NO_DUPS
    )
    assert report.valid and report.statistics.messages == 30 and report.issues == []
    with pytest.raises(ValueError, match="unknown csv column settings"):
        validate_path(path, csv={"user": "q", "assistant": "a", "colour": "red"})
