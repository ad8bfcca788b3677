"""Regular-expression match on the output."""

from __future__ import annotations

import regex

from api_schemas.graders import RegexGraderSpec, Score
from service.evaluations.graders.base import Grader, GraderConfigError, GradingError, Sample
from service.evaluations.graders.registry import register_grader

# Patterns come from API clients: cap each match so a catastrophic pattern costs one error, not a stuck worker.
MATCH_TIMEOUT_S = 1.0
_MAX_SHOWN = 200


@register_grader
class RegexGrader(Grader[RegexGraderSpec]):
    spec_type = RegexGraderSpec
    description = "1 when the output matches the pattern (search or full match); expect_match=false inverts."
    needs_reference = False
    always_binary = True

    def __init__(self, spec: RegexGraderSpec) -> None:
        super().__init__(spec)
        flags = regex.VERSION0
        if spec.ignore_case:
            flags |= regex.IGNORECASE
        if spec.multiline:
            flags |= regex.MULTILINE
        if spec.dotall:
            flags |= regex.DOTALL
        try:
            self._pattern = regex.compile(spec.pattern, flags)
        except regex.error as exc:
            raise GraderConfigError(f"grader {spec.name!r}: pattern does not compile: {exc}") from None

    def _grade(self, sample: Sample) -> Score:
        text = sample.output or ""
        match_fn = self._pattern.fullmatch if self.spec.mode == "fullmatch" else self._pattern.search
        try:
            m = match_fn(text, timeout=MATCH_TIMEOUT_S)
        except TimeoutError:
            raise GradingError(f"pattern took longer than {MATCH_TIMEOUT_S}s on this output") from None
        passed = (m is not None) == self.spec.expect_match
        details = {"match": m.group(0)[:_MAX_SHOWN] if m else None}
        return Score(value=1.0 if passed else 0.0, passed=passed, details=details)
