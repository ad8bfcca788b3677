"""What the evaluation page shows: per grader and candidate the metrics with intervals, the paired comparisons, and
examples of a candidate beside the baseline's (all, the flipped ones, or those where either failed), word-diffed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlmodel import Session, select

from service.chat import text_of
from service.evaluations import service as evaluations
from service.evaluations.models import Evaluation, EvaluationSample
from service.ui.diff import Piece, word_diff

PAGE_SIZE = 20
Only = Literal["disagreements", "failed"]


@dataclass
class Side:
    output: str | None
    ok: bool
    error: str | None
    pieces: list[Piece]
    scores: dict[str, dict[str, Any]]


@dataclass
class ExampleRow:
    key: str
    index: int
    prompt: list[tuple[str, str]]
    reference: str | None
    baseline: Side | None
    candidate: Side | None
    flipped: list[str] = field(default_factory=list)  # "grader: baseline only" / "grader: candidate only"


@dataclass
class Examples:
    baseline: str
    candidate: str | None
    candidates: list[str]
    only: str | None
    page: int
    total: int
    rows: list[ExampleRow]

    @property
    def pages(self) -> int:
        return max((self.total + PAGE_SIZE - 1) // PAGE_SIZE, 1)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        return "\n".join(text_of(m.get("content")) for m in value if m.get("role") == "assistant") or None
    return json.dumps(value, ensure_ascii=False)


def _prompt(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(str(m.get("role", "")), text_of(m.get("content"), placeholders=True)) for m in messages or []]


def flips_by_key(evaluation: Evaluation, baseline: str, candidate: str) -> dict[str, list[str]]:
    """Example key -> which grader flipped it and which way, from the stored comparison of the pair."""
    out: dict[str, list[str]] = {}
    for comparison in (evaluation.summary or {}).get("comparisons") or []:
        if (comparison.get("baseline"), comparison.get("candidate")) != (baseline, candidate):
            continue
        for name, grader in (comparison.get("graders") or {}).items():
            flips = grader.get("flips") or {}
            for key in flips.get("a_only") or []:
                out.setdefault(key, []).append(f"{name}: only {baseline} passed")
            for key in flips.get("b_only") or []:
                out.setdefault(key, []).append(f"{name}: only {candidate} passed")
    return out


def _index(key: str) -> int:
    try:
        return int(key.split(":", 1)[1])
    except (IndexError, ValueError):
        return 0


def _pieces(a: EvaluationSample | None, b: EvaluationSample | None) -> tuple[list[Piece], list[Piece]]:
    """Word-diffed answers when both sides answered; a lone or failed side is shown as it is, not as all removed."""
    if a is not None and b is not None and a.ok and b.ok:
        return word_diff(a.output, b.output)

    def plain(row: EvaluationSample | None) -> list[Piece]:
        return [Piece("same", row.output)] if row is not None and row.output else []

    return plain(a), plain(b)


def examples(db: Session, evaluation: Evaluation, candidate: str | None, only: Only | None, page: int) -> Examples:
    config = evaluation.config
    names = [c["name"] for c in config.get("candidates", [])]
    baseline = config.get("baseline") or names[0]
    others = [n for n in names if n != baseline]
    if candidate not in others:
        candidate = others[0] if others else None
    shown = [n for n in (baseline, candidate) if n is not None]
    stmt = evaluations.list_samples_stmt(evaluation.id).where(
        EvaluationSample.candidate.in_(shown),  # type: ignore[attr-defined]
        EvaluationSample.split == "test",
    )
    if only == "failed":
        stmt = stmt.where(EvaluationSample.ok.is_(False))  # type: ignore[attr-defined]
    keyed = db.exec(
        select(EvaluationSample.example_key).where(
            EvaluationSample.id.in_(stmt.with_only_columns(EvaluationSample.id))  # type: ignore[attr-defined]
        )
    ).all()
    flips = flips_by_key(evaluation, baseline, candidate) if candidate else {}
    keys = sorted(set(keyed), key=_index)
    if only == "disagreements":
        keys = [k for k in keys if k in flips]
    page = min(max(page, 1), max((len(keys) + PAGE_SIZE - 1) // PAGE_SIZE, 1))
    page_keys = keys[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    rows = (
        db.exec(
            evaluations.list_samples_stmt(evaluation.id).where(
                EvaluationSample.candidate.in_(shown),  # type: ignore[attr-defined]
                EvaluationSample.example_key.in_(page_keys),  # type: ignore[attr-defined]
            )
        ).all()
        if page_keys
        else []
    )
    by = {(r.candidate, r.example_key): r for r in rows}
    out = []
    for key in page_keys:
        a, b = by.get((baseline, key)), by.get((candidate, key)) if candidate else None
        left, right = _pieces(a, b)
        first = a or b
        assert first is not None
        out.append(
            ExampleRow(
                key=key,
                index=first.example_index,
                prompt=_prompt(first.input),
                reference=_text(first.reference),
                baseline=Side(a.output, a.ok, a.error, left, a.scores or {}) if a else None,
                candidate=Side(b.output, b.ok, b.error, right, b.scores or {}) if b else None,
                flipped=flips.get(key, []),
            )
        )
    return Examples(baseline, candidate, others, only, page, len(keys), out)
