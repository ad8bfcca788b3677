"""Graders: plug-ins that score model outputs, with a registry, aggregates and honest statistics.

Built-in graders register themselves on import of this package; ``get_grader(spec)`` builds one from its spec.
"""

from service.evaluations.graders import (  # noqa: F401  (imported for their registration)
    classification,
    exact,
    json_graders,
    judge,
    regex_match,
    rouge,
    sacrebleu_metrics,
)
from service.evaluations.graders.analysis import GraderComparison, GraderSummary, MetricComparison, compare, summarize
from service.evaluations.graders.base import Grader, GraderConfigError, GradingError, Sample
from service.evaluations.graders.grading import compare_all, grade_all
from service.evaluations.graders.judge import ChatClient, ChatReply, InMemoryVerdictCache, VerdictCache
from service.evaluations.graders.registry import get_grader, list_graders, parse_grader_spec, register_grader

__all__ = [
    "ChatClient",
    "ChatReply",
    "Grader",
    "GraderComparison",
    "GraderConfigError",
    "GraderSummary",
    "GradingError",
    "InMemoryVerdictCache",
    "MetricComparison",
    "Sample",
    "VerdictCache",
    "compare",
    "compare_all",
    "get_grader",
    "grade_all",
    "list_graders",
    "parse_grader_spec",
    "register_grader",
    "summarize",
]
