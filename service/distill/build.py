"""The teacher's answers as chat examples: the filters every answer must pass, exact and near-duplicate removal, and
the JSONL written in prompt order. Pure: no database, no HTTP."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from service import chat
from service.datasets.canonical import canonical_example_text
from service.datasets.dedupe import DuplicateFinder


@dataclass(frozen=True)
class Answer:
    """One stored teacher answer: prompt ``index``, answer number ``answer`` (0-based), the prompt's messages, the
    answer text and each grader's verdict (``passed`` per grader name; None when it could not grade)."""

    index: int
    answer: int
    prompt: list[dict[str, Any]]
    output: str
    passed: dict[str, bool | None]


@dataclass
class Built:
    examples: list[dict[str, Any]]
    filtered_out: dict[str, int] = field(default_factory=dict)
    exact_duplicates: int = 0
    near_duplicates: int = 0


def example(answer: Answer) -> dict[str, Any]:
    return {"messages": [*answer.prompt, {"role": chat.ASSISTANT, "content": answer.output}]}


def build(
    answers: Iterable[Answer],
    *,
    must_pass: Sequence[str],
    exact: bool,
    near: bool,
    near_threshold: float,
    workdir: Path | None = None,
) -> Built:
    """Examples from ``answers`` in (prompt, answer) order. An answer is dropped by the first grader of ``must_pass``
    that did not pass it (counted under that grader), then by dedupe (the first occurrence is kept)."""
    ordered = sorted(answers, key=lambda a: (a.index, a.answer))
    out = Built(examples=[], filtered_out=dict.fromkeys(must_pass, 0))
    kept: list[Answer] = []
    for answer in ordered:
        failed = next((name for name in must_pass if answer.passed.get(name) is not True), None)
        if failed is not None:
            out.filtered_out[failed] += 1
        else:
            kept.append(answer)
    rows = [example(a) for a in kept]
    if rows and (exact or near):
        drop = _duplicates(rows, exact=exact, near=near, threshold=near_threshold, workdir=workdir, out=out)
        rows = [row for i, row in enumerate(rows) if i not in drop]
    out.examples = rows
    return out


def _duplicates(
    rows: list[dict[str, Any]], *, exact: bool, near: bool, threshold: float, workdir: Path | None, out: Built
) -> set[int]:
    """0-based positions of the rows to drop: copies of an earlier row, and (``near``) rows with a near duplicate
    earlier in the set."""
    n = len(rows)
    with DuplicateFinder(
        near_threshold=threshold, workdir=workdir, max_exact_groups=n, max_group_lines=n + 1, max_near_pairs=4 * n
    ) as finder:
        for line, row in enumerate(rows, start=1):
            finder.add(line, canonical_example_text(row))
        result = finder.finish()
    drop: set[int] = set()
    # Exact copies: the finder keys them on the same canonical text the validator reports duplicates with. When exact
    # removal is off they stay, and near removal does not see them (the finder pairs only first lines).
    if exact:
        for group in result.exact:
            drop.update(line - 1 for line in sorted(group)[1:])
        out.exact_duplicates = len(drop)
    if near:
        before = len(drop)
        for a, b, _similarity in sorted(result.near, key=lambda p: (p[1], p[0])):
            if a - 1 not in drop:
                drop.add(b - 1)
        out.near_duplicates = len(drop) - before
    return drop


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    with path.open("wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row) + b"\n")
    return path
