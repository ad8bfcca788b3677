"""A human-readable rendering of a report for the terminal (``finetune validate``)."""

from __future__ import annotations

import io
from collections import defaultdict

from rich.console import Console
from rich.table import Table
from rich.text import Text

from api_schemas.dataset_report import DatasetReport, Distribution, Severity, ValidationIssue
from service.datasets.validation.rules import RULES

LINES_SHOWN = 12


def _lines(issues: list[ValidationIssue], count: int) -> str:
    """'lines 3, 7 and 12 more': distinct line numbers of the listed issues, and how many issues are not shown."""
    numbers = list(dict.fromkeys(i.line for i in issues if i.line is not None))
    if not numbers:
        return ""
    shown = ", ".join(str(n) for n in numbers[:LINES_SHOWN])
    located = sum(1 for i in issues if i.line is not None)
    more = count - located + max(0, len(numbers) - LINES_SHOWN)
    label = "line" if len(numbers) == 1 else "lines"
    return f"{label} {shown}" + (f" and {more:,} more" if more > 0 else "")


def _issue_section(console: Console, report: DatasetReport, severity: Severity) -> None:
    by_code: dict[str, list[ValidationIssue]] = defaultdict(list)
    for issue in report.issues:
        if issue.severity is severity:
            by_code[issue.code].append(issue)
    counts = [c for c in report.issue_counts if c.severity is severity]
    if not counts:
        return
    style = "bold red" if severity is Severity.error else "bold yellow"
    total = sum(c.count for c in counts)
    console.print(Text(f"{severity.value.capitalize()}s ({total:,})", style=style))
    for count in counts:
        rule = RULES[count.code]
        listed = by_code.get(count.code, [])
        head = Text("  ")
        head.append(f"{count.code}", style=style)
        head.append(f"  {rule.title}: {count.count:,}")
        where = _lines(listed, count.count)
        if where:
            head.append(f"  ({where})", style="dim")
        console.print(head)
        for issue in listed[:3]:
            location = f"line {issue.line}" if issue.line is not None else "file"
            if issue.field:
                location += f", {issue.field}"
            line = Text(f"    {location}: ", style="dim")
            line.append(issue.message)
            console.print(line)
    console.print()


def _dist_row(name: str, d: Distribution) -> list[str]:
    if not d.count:
        return [name, "0", "-", "-", "-", "-", "-"]
    return [name, f"{d.count:,}", f"{d.min:,}", f"{d.mean:,.1f}", f"{d.p50:,}", f"{d.p95:,}", f"{d.max:,}"]


def render_report(report: DatasetReport, *, color: bool, width: int = 110) -> str:
    """The report as text: verdict, errors grouped by code with line numbers, warnings, statistics and cost."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        width=width,
        highlight=False,
    )
    verdict = Text()
    if report.valid:
        verdict.append("VALID", style="bold green")
    else:
        verdict.append("INVALID", style="bold red")
    fmt = report.format.value if report.format else "unknown"
    how = "detected" if report.format_detected else "declared"
    verdict.append(
        f"  format {fmt} ({how}), {report.statistics.examples:,} examples, {report.statistics.lines:,} lines, "
        f"{report.size_bytes:,} bytes: {report.error_count:,} errors, {report.warning_count:,} warnings"
    )
    console.print(verdict)
    console.print()
    _issue_section(console, report, Severity.error)
    _issue_section(console, report, Severity.warning)

    stats = report.statistics
    if stats.tokens_per_example.count:
        table = Table(title=f"Tokens ({stats.encoding})", title_justify="left", show_edge=False)
        for column in ("", "count", "min", "mean", "p50", "p95", "max"):
            table.add_column(column, justify="left" if not column else "right")
        table.add_row(*_dist_row("per example", stats.tokens_per_example))
        for role, dist in stats.tokens_per_role.items():
            table.add_row(*_dist_row(f"  {role} message" if role != "tools" else "  tool definitions", dist))
        table.add_row(*_dist_row("messages / example", stats.messages_per_example))
        console.print(table)
        totals = ", ".join(f"{t.total_tokens:,} {name}" for name, t in stats.tokens_by_encoding.items())
        console.print(f"Total tokens: {totals}")
        if stats.token_limit is not None:
            console.print(f"Examples over the {stats.token_limit:,}-token limit: {stats.examples_over_limit:,}")
        console.print(
            f"Examples without a system message: {stats.examples_missing_system:,}; "
            f"without a user message: {stats.examples_missing_user:,}"
        )
    dup = report.duplicates
    if dup.checked:
        console.print(
            f"Duplicates: {dup.exact_examples:,} exact repeats in {dup.exact_groups:,} groups, "
            f"{dup.near_pairs:,} near-duplicate pairs"
        )
    cost = report.cost
    if cost is not None:
        console.print()
        line = Text("Estimated training cost: ", style="bold")
        line.append(f"${cost.estimated_cost_usd}", style="bold cyan" if color else "")
        console.print(line)
        console.print(
            f"  {cost.base_model} ({cost.method}), {cost.n_examples:,} examples x {cost.n_epochs} epochs "
            f"(auto: {cost.n_epochs_auto}) = {cost.billable_tokens:,} billable tokens at ${cost.usd_per_1m_tokens}/1M "
            f"(price table {cost.price_table_version})"
        )
    elif report.model:
        console.print(f"\nNo cost estimate for {report.model}.")
    return buffer.getvalue()
