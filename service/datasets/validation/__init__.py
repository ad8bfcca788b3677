"""Streaming validation of training datasets: every problem located by line and field, statistics, exact token
counts and a cost estimate, in bounded memory and in parallel.

>>> report = validate_path("train.jsonl", model="gpt-4.1-mini-2025-04-14")
>>> report.valid, report.cost.estimated_cost_usd
"""

from service.datasets.validation.engine import DEFAULT_EXAMPLE_TOKEN_LIMIT, validate_path
from service.datasets.validation.options import CsvColumns, ValidationOptions
from service.datasets.validation.render import render_report
from service.datasets.validation.rules import RULES, RULES_VERSION, Rule, get_rule, list_rules

__all__ = [
    "DEFAULT_EXAMPLE_TOKEN_LIMIT",
    "RULES",
    "RULES_VERSION",
    "CsvColumns",
    "Rule",
    "ValidationOptions",
    "get_rule",
    "list_rules",
    "render_report",
    "validate_path",
]
