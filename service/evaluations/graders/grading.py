"""Running graders over many samples, concurrently where a grader calls a model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from api_schemas.graders import Score
from service.evaluations.graders.base import Grader, Sample


async def grade_all(grader: Grader[Any], samples: Sequence[Sample], *, concurrency: int = 16) -> list[Score]:
    """Scores for ``samples`` in order. Judges run up to ``concurrency`` at once; the others run inline."""
    if not grader.needs_llm:
        return [grader.grade(s) for s in samples]
    if grader.is_pairwise:
        raise TypeError("use compare_all for a pairwise grader")
    gate = asyncio.Semaphore(concurrency)

    async def one(sample: Sample) -> Score:
        async with gate:
            return await grader.agrade(sample)

    return list(await asyncio.gather(*(one(s) for s in samples)))


async def compare_all(
    grader: Any,
    samples: Sequence[Sample],
    outputs_a: Sequence[str | None],
    outputs_b: Sequence[str | None],
    *,
    concurrency: int = 16,
) -> list[Score]:
    """Pairwise verdicts (b against a) for aligned samples and outputs."""
    if not getattr(grader, "is_pairwise", False):
        raise TypeError(f"grader {grader.name!r} is not pairwise")
    if not (len(samples) == len(outputs_a) == len(outputs_b)):
        raise ValueError("samples, outputs_a and outputs_b must be aligned and of equal length")
    gate = asyncio.Semaphore(concurrency)

    async def one(sample: Sample, a: str | None, b: str | None) -> Score:
        async with gate:
            return await grader.compare(sample, a, b)

    return list(await asyncio.gather(*(one(*t) for t in zip(samples, outputs_a, outputs_b, strict=True))))
