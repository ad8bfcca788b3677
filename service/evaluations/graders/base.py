"""The grader protocol: a sample in, a ``Score`` out; an aggregate over many; sufficient statistics for intervals."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel

from api_schemas.graders import GraderCapabilities, Score
from service.evaluations.stats import SufficientStatistics

SpecT = TypeVar("SpecT", bound=BaseModel)


class GradingError(Exception):
    """This sample cannot be graded (e.g. its reference is not a valid label). Becomes ``Score.error``."""


class GraderConfigError(ValueError):
    """The grader cannot be built as specified (unknown type, missing judge client, ...)."""


@dataclass(frozen=True)
class Sample:
    """One example as graders see it.

    ``output`` is the candidate's answer (None when generation failed). ``reference`` is a string, a list of
    acceptable strings, or (for JSON graders) a JSON value. ``messages`` is the prompt, for judges.
    """

    output: str | None
    reference: Any = None
    messages: Sequence[Mapping[str, Any]] = ()
    key: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def references(self) -> list[str]:
        """The reference(s) as text; a JSON value reference is serialised canonically."""
        ref = self.reference
        if ref is None:
            return []
        if isinstance(ref, str):
            return [ref]
        if isinstance(ref, list | tuple) and all(isinstance(r, str) for r in ref):
            return list(ref)
        return [json.dumps(ref, sort_keys=True, ensure_ascii=False)]


class Grader(ABC, Generic[SpecT]):
    """Base of all graders. Subclasses set the class attributes and implement ``_grade``."""

    spec_type: ClassVar[type[BaseModel]]
    description: ClassVar[str]
    needs_reference: ClassVar[bool] = True
    needs_llm: ClassVar[bool] = False
    is_pairwise: ClassVar[bool] = False
    corpus_metrics: ClassVar[bool] = False
    # Whether scores carry pass/fail for every configuration; threshold graders are binary only when configured.
    always_binary: ClassVar[bool] = False

    def __init__(self, spec: SpecT) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name  # type: ignore[attr-defined]

    @property
    def type(self) -> str:
        return self.spec.type  # type: ignore[attr-defined]

    @property
    def is_binary(self) -> bool:
        return self.always_binary or getattr(self.spec, "pass_threshold", None) is not None

    @classmethod
    def capabilities(cls) -> GraderCapabilities:
        return GraderCapabilities(
            needs_reference=cls.needs_reference,
            is_binary=cls.always_binary,
            needs_llm=cls.needs_llm,
            is_pairwise=cls.is_pairwise,
            corpus_metrics=cls.corpus_metrics,
        )

    # -- per sample ---------------------------------------------------------------------------------------------------

    def grade(self, sample: Sample) -> Score:
        """Score one sample. Never raises for bad sample content: that becomes ``Score.error``."""
        problem = self._precheck(sample)
        if problem is not None:
            return Score(value=None, error=problem)
        try:
            return self._grade(sample)
        except GradingError as exc:
            return Score(value=None, error=str(exc))

    async def agrade(self, sample: Sample) -> Score:
        """Async form; graders that call a model override it, the others are CPU-bound and answer directly."""
        return self.grade(sample)

    def _precheck(self, sample: Sample) -> str | None:
        if sample.output is None:
            return "no output to grade"
        if self.needs_reference and not sample.references:
            return f"grader {self.name!r} needs a reference answer and the sample has none"
        return None

    @abstractmethod
    def _grade(self, sample: Sample) -> Score: ...

    def _threshold(self, value: float) -> bool | None:
        threshold = getattr(self.spec, "pass_threshold", None)
        return None if threshold is None else value >= threshold

    # -- over many ----------------------------------------------------------------------------------------------------

    def statistics(self, scores: Sequence[Score], samples: Sequence[Sample]) -> SufficientStatistics:
        """Sufficient statistics of this grader's metrics over graded scores (every ``value`` set), aligned with
        ``samples``. Default: the mean of values, and the pass rate when binary."""
        _require_graded(scores, samples)
        values = np.array([s.value for s in scores], dtype=np.float64)
        ones = np.ones_like(values)
        if not self.is_binary:
            return SufficientStatistics(np.column_stack([values, ones]), {"mean": _ratio(0, 1)}, ("value", "count"))
        passed = np.array([bool(s.passed) for s in scores], dtype=np.float64)
        return SufficientStatistics(
            np.column_stack([values, ones, passed]),
            {"mean": _ratio(0, 1), "pass_rate": _ratio(2, 1)},
            ("value", "count", "passed"),
        )

    def aggregate(self, scores: Sequence[Score], samples: Sequence[Sample]) -> dict[str, Any]:
        """Point estimates over all scores: counts, every metric over the graded ones, and grader-specific extras."""
        graded = [i for i, s in enumerate(scores) if s.value is not None]
        out: dict[str, Any] = {"n": len(scores), "n_graded": len(graded), "n_errors": len(scores) - len(graded)}
        if graded:
            g_scores = [scores[i] for i in graded]
            g_samples = [samples[i] for i in graded]
            out.update(self.statistics(g_scores, g_samples).evaluate())
            out.update(self.extras(g_scores, g_samples))
        return out

    def extras(self, scores: Sequence[Score], samples: Sequence[Sample]) -> dict[str, Any]:
        """Aggregate details that are not scalar metrics (e.g. a confusion matrix). Over graded scores only."""
        return {}


def _ratio(num: int, den: int):
    def ratio(sums: np.ndarray) -> np.ndarray:
        return sums[:, num] / sums[:, den]

    return ratio


def _require_graded(scores: Sequence[Score], samples: Sequence[Sample]) -> None:
    if len(scores) != len(samples):
        raise ValueError(f"scores and samples differ in length: {len(scores)} vs {len(samples)}")
    if any(s.value is None for s in scores):
        raise ValueError("statistics need graded scores only; filter out scores whose value is None")
