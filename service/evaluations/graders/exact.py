"""Exact match after normalisation."""

from __future__ import annotations

from api_schemas.graders import ExactMatchGraderSpec, Score
from service.evaluations.graders.base import Grader, Sample
from service.evaluations.graders.registry import register_grader
from service.evaluations.graders.text import normalize


@register_grader
class ExactMatchGrader(Grader[ExactMatchGraderSpec]):
    spec_type = ExactMatchGraderSpec
    description = "1 when the output equals a reference after the chosen normalisation, else 0."
    always_binary = True

    def _grade(self, sample: Sample) -> Score:
        opts = self.spec.normalization
        output = normalize(sample.output or "", opts)
        for i, ref in enumerate(sample.references):
            if normalize(ref, opts) == output:
                return Score(value=1.0, passed=True, details={"matched_reference": i})
        return Score(value=0.0, passed=False)
