"""``validate_path``: the whole validation of one dataset file, from the first bytes to the report."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from api_schemas.dataset_report import (
    CostEstimate,
    DatasetFormat,
    DatasetReport,
    DatasetStatistics,
    Distribution,
    DuplicatesSection,
    EncodingTotals,
    IssueCount,
    NearDuplicate,
    Severity,
    ValidationIssue,
)
from service.datasets.dedupe.minhash import Sketches
from service.datasets.validation.options import CsvColumns, ValidationOptions, coerce_csv_columns
from service.datasets.validation.parallel import default_workers, iter_results
from service.datasets.validation.rules import RULES, RULES_VERSION
from service.datasets.validation.scan import ScanContext, exact_digests
from service.datasets.validation.sniff import sniff
from service.datasets.validation.state import (
    SAMPLE_LINES,
    FinalAnswers,
    Histogram,
    IssueCollector,
    IssueRow,
    RangeStats,
    SystemPrompts,
)
from service.pricing import (
    ModelInfo,
    PriceTable,
    UnknownModel,
    auto_epochs,
    load_price_table,
    round_money,
)
from service.pricing.estimates import MILLION
from service.tokens import DEFAULT_ENCODING, EncodingName, other_encoding, resolve_model_encoding

DEFAULT_EXAMPLE_TOKEN_LIMIT = 65_536
# A system prompt is "the" prompt of a dataset when at least this share of the examples with one use it.
DOMINANT_SYSTEM_PROMPT_SHARE = 0.8

_METHOD_FOR_FORMAT = {
    DatasetFormat.chat: "supervised",
    DatasetFormat.csv: "supervised",
    DatasetFormat.preference: "dpo",
    DatasetFormat.prompt_completion: "supervised",
}


@dataclass
class _ModelPlan:
    model: str | None
    info: ModelInfo | None
    encoding: EncodingName
    token_limit: int | None
    issues: list[tuple[str, str]] = field(default_factory=list)  # (code, message)


def _plan_model(model: str | None, table: PriceTable, options: ValidationOptions) -> _ModelPlan:
    limit = options.example_token_limit
    if model is None:
        return _ModelPlan(None, None, DEFAULT_ENCODING, limit or DEFAULT_EXAMPLE_TOKEN_LIMIT)
    try:
        info = table.lookup(model)
    except UnknownModel:
        resolved = resolve_model_encoding(model)
        note = " (assumed: the name is not recognised)" if resolved.assumed else ""
        return _ModelPlan(
            model,
            None,
            resolved.encoding,
            limit or DEFAULT_EXAMPLE_TOKEN_LIMIT,
            [
                (
                    "unknown_model",
                    f"{model} is not in price table {table.version}: counting with {resolved.encoding}{note}, "
                    f"limit {limit or DEFAULT_EXAMPLE_TOKEN_LIMIT:,} tokens, no cost estimate",
                )
            ],
        )
    entry_limit = info.entry.training_example_token_limit
    plan = _ModelPlan(model, info, info.entry.encoding, limit or entry_limit or DEFAULT_EXAMPLE_TOKEN_LIMIT)  # type: ignore[arg-type]
    if info.entry.shutdown_date is not None:
        plan.issues.append(
            (
                "model_retiring",
                f"{info.name} shuts down on {info.entry.shutdown_date.isoformat()}; its fine-tunes stop serving then",
            )
        )
    return plan


def _distribution(hist: Histogram) -> Distribution:
    if not hist:
        return Distribution()
    count = sum(hist.values())
    total = sum(v * n for v, n in hist.items())
    values = sorted(hist)
    # Nearest-rank percentiles: the smallest value with at least p% of the data at or below it.
    ranks = {50: -(-count * 50 // 100), 95: -(-count * 95 // 100)}
    found: dict[int, int] = {}
    seen = 0
    for v in values:
        seen += hist[v]
        for p, rank in ranks.items():
            if p not in found and seen >= rank:
                found[p] = v
        if len(found) == len(ranks):
            break
    return Distribution(
        count=count,
        total=total,
        min=values[0],
        max=values[-1],
        mean=round(total / count, 3),
        p50=found[50],
        p95=found[95],
    )


def _billable_per_epoch(hist: Histogram, limit: int | None) -> int:
    if limit is None:
        return sum(v * n for v, n in hist.items())
    return sum(min(limit, v) * n for v, n in hist.items())


class _Merged:
    def __init__(self, cap: int) -> None:
        self.stats = RangeStats()
        self.issues = IssueCollector(cap)
        self.system_prompts = SystemPrompts()
        self.finals = FinalAnswers()


def _add_many(issues: IssueCollector, code: str, total: int, rows: list[IssueRow]) -> None:
    """Count ``total`` issues of ``code`` while listing only ``rows`` (already bounded by the caller)."""
    for row in rows[: issues.cap]:
        issues.add(code, *row)
    listed = min(len(rows), issues.cap)
    if total > listed:
        issues.counts[code] = issues.counts.get(code, 0) + total - listed


def _check_duplicates(
    sketch_batches: Iterator[Sketches],
    issues: IssueCollector,
    options: ValidationOptions,
    resolve: Callable[[np.ndarray], np.ndarray] | None = None,
) -> DuplicatesSection:
    """Feed the examples' sketches (in line order, made by the scan workers) to a DuplicateFinder and turn its result
    into issues. ``resolve``: how the finder digests candidate exact duplicates (sketches of JSONL lines carry their
    byte offsets instead of a digest).

    The finder is asked for no more groups and pairs than the report lists, so its result stays small.
    """
    from service.datasets.dedupe import DuplicateFinder

    cap = max(1, issues.cap)
    finder = DuplicateFinder(
        near_threshold=options.near_duplicate_threshold,
        workdir=options.workdir,
        memory_budget=options.duplicate_memory_bytes,
        max_exact_groups=cap,
        max_group_lines=cap + 1,
        max_near_pairs=4 * cap,
        resolve=resolve,
    )
    try:
        for batch in sketch_batches:
            finder.add_sketches(batch)
        result = finder.finish()
    finally:
        finder.close()
    exact_groups = [sorted(g) for g in result.exact]
    exact_total = result.exact_duplicate_lines
    rows: list[IssueRow] = [(ln, None, f"same as line {group[0]}", None) for group in exact_groups for ln in group[1:]]
    rows.sort(key=lambda r: r[0] or 0)
    _add_many(issues, "duplicate_example", exact_total, rows[: issues.cap])
    near_pairs = sorted(result.near, key=lambda p: (p[1], p[0]))
    seen: set[int] = set()
    near_rows: list[IssueRow] = []
    for a, b, similarity in near_pairs:
        if b not in seen:
            seen.add(b)
            near_rows.append((b, None, f"nearly the same as line {a} (estimated similarity {similarity:.2f})", None))
    _add_many(issues, "near_duplicate_example", result.near_duplicate_lines, near_rows[: issues.cap])
    return DuplicatesSection(
        checked=True,
        exact_groups=result.exact_groups_total,
        exact_examples=exact_total,
        near_pairs=result.near_pairs_total,
        exact=exact_groups[: issues.cap],
        near=[NearDuplicate(line_a=a, line_b=b, similarity=s) for a, b, s in near_pairs[: issues.cap]],
    )


def _dataset_warnings(merged: _Merged, fmt: DatasetFormat | None) -> None:
    issues = merged.issues
    prompts = merged.system_prompts
    if not prompts.overflow and len(prompts.groups) >= 2:
        groups = sorted(prompts.groups.values(), key=lambda g: -g[0])
        total = sum(g[0] for g in groups)
        dominant = groups[0]
        share = dominant[0] / total
        if share >= DOMINANT_SYSTEM_PROMPT_SHARE:
            rows = []
            minority = 0
            for count, lines, ex in groups[1:]:
                minority += count
                for ln in lines[:SAMPLE_LINES]:
                    rows.append(
                        (
                            ln,
                            "messages[0].content",
                            f"system prompt differs from the one used by {dominant[0]} of {total} examples "
                            f"({share:.0%}, e.g. line {dominant[1][0]}): {ex!r}",
                            ex,
                        )
                    )
            rows.sort(key=lambda r: r[0])
            _add_many(issues, "inconsistent_system_prompt", minority, rows)
    finals = merged.finals
    if finals.examples >= 2 and len(finals.seen) == 1:
        (answer,) = finals.seen.values()
        issues.add(
            "identical_assistant_messages",
            None,
            None,
            f"all {finals.examples} examples end with the same assistant message: {answer!r}",
            answer,
        )
    if fmt is DatasetFormat.prompt_completion:
        issues.add(
            "legacy_prompt_completion",
            None,
            None,
            "prompt/completion trains only babbage-002 and davinci-002; convert to chat for current models",
        )


def _cost(
    plan: _ModelPlan, fmt: DatasetFormat | None, stats: RangeStats, options: ValidationOptions, issues: IssueCollector
) -> CostEstimate | None:
    info = plan.info
    if info is None or fmt is None:
        return None
    method = _METHOD_FOR_FORMAT[fmt]
    legacy_only = info.entry.legacy_prompt_completion
    if not info.fine_tunable(method):  # type: ignore[arg-type]
        methods = ", ".join(info.entry.fine_tuning_methods) or "none"
        issues.add(
            "model_not_fine_tunable",
            None,
            None,
            f"{info.name} does not support {method} fine-tuning (supports: {methods})",
        )
    elif (fmt is DatasetFormat.prompt_completion) != legacy_only:
        issues.add(
            "model_not_fine_tunable",
            None,
            None,
            f"{info.name} trains on {'prompt/completion' if legacy_only else 'chat'} files, this dataset is "
            f"{fmt.value}",
        )
    price = info.entry.training_per_1m
    n = stats.counted_examples
    if price is None or n == 0:
        return None
    epochs_auto = auto_epochs(n)
    epochs = options.n_epochs or epochs_auto
    billable = epochs * _billable_per_epoch(stats.tokens_per_example, plan.token_limit)
    return CostEstimate(
        model=plan.model or info.name,
        base_model=info.name,
        encoding=plan.encoding,
        method=method,
        n_examples=n,
        n_epochs_auto=epochs_auto,
        n_epochs=epochs,
        token_limit=plan.token_limit,
        billable_tokens=billable,
        usd_per_1m_tokens=str(price),
        estimated_cost_usd=str(round_money(price * Decimal(billable) / MILLION)),
        price_table_version=info.table_version,
    )


def _coerce_format(value: DatasetFormat | str | None) -> DatasetFormat | None:
    if value is None or isinstance(value, DatasetFormat):
        return value
    try:
        return DatasetFormat(value)
    except ValueError:
        known = ", ".join(f.value for f in DatasetFormat)
        raise ValueError(f"unknown dataset format {value!r}; expected one of {known}") from None


def validate_path(
    path: Path | str,
    *,
    format: DatasetFormat | str | None = None,
    model: str | None = None,
    csv: CsvColumns | dict | Any | None = None,
    options: ValidationOptions | dict | None = None,
) -> DatasetReport:
    """Validate the dataset file at ``path`` and return its report (never raises for bad content).

    ``format``: declared format, else detected. ``model``: base or fine-tuned model for token limits, encoding and
    cost. ``csv``: column mapping for CSV files. ``options``: limits and performance settings.
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an unknown format or bad options.
    """
    return validate_path_with_stats(path, format=format, model=model, csv=csv, options=options)[0]


def validate_path_with_stats(
    path: Path | str,
    *,
    format: DatasetFormat | str | None = None,
    model: str | None = None,
    csv: CsvColumns | dict | Any | None = None,
    options: ValidationOptions | dict | None = None,
) -> tuple[DatasetReport, RangeStats]:
    """``validate_path`` plus the exact histograms the report's statistics were computed from."""
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    opts = options if isinstance(options, ValidationOptions) else ValidationOptions.model_validate(options or {})
    columns = coerce_csv_columns(csv)
    declared = _coerce_format(format)
    table = load_price_table(opts.price_table_path)
    plan = _plan_model(model, table, opts)
    other = other_encoding(plan.encoding) if opts.count_other_encoding else None

    merged = _Merged(opts.max_issues_per_code)
    sniffed = sniff(path, declared, columns)
    for code, line, fld, message, ex in sniffed.issues:
        merged.issues.add(code, line, fld, message, ex)
    for code, message in plan.issues:
        merged.issues.add(code, None, None, message)

    duplicates = DuplicatesSection(checked=False)
    fmt = sniffed.format
    if not sniffed.fatal and fmt is not None:
        ctx = ScanContext(
            path=str(path),
            format=fmt,
            primary=plan.encoding,
            other=other,
            token_limit=plan.token_limit,
            max_line_bytes=opts.max_line_bytes,
            max_depth=opts.max_depth,
            max_issues_per_code=opts.max_issues_per_code,
            duplicates=opts.duplicates,
            skip_prefix=sniffed.skip_prefix,
            near_threshold=opts.near_duplicate_threshold,
        )
        if fmt is DatasetFormat.csv:
            from service.datasets.validation.csv_scan import scan_csv

            results = iter([scan_csv(path, ctx, columns)])
        else:
            workers = opts.workers or default_workers()
            if sniffed.size < opts.parallel_min_bytes:
                workers = 1
            results = iter_results(ctx, sniffed.size, workers, opts.chunk_bytes)

        def merged_batches() -> Iterator[Sketches]:
            offset = 0
            for result in results:
                merged.stats.merge(result.stats)
                merged.issues.merge(result.issues, offset)
                merged.system_prompts.merge(result.system_prompts, offset)
                merged.finals.merge(result.finals)
                for batch in result.sketches:
                    yield batch.shifted(offset)
                offset += result.stats.lines

        if opts.duplicates:
            resolve = None if fmt is DatasetFormat.csv else functools.partial(exact_digests, str(path))
            duplicates = _check_duplicates(merged_batches(), merged.issues, opts, resolve)
        else:
            for _ in merged_batches():
                pass
        _dataset_warnings(merged, fmt)

    stats = merged.stats
    issues = merged.issues
    # Without a usable column mapping no row was read: counting examples would only add noise.
    if not sniffed.fatal and "csv_missing_column" not in issues.counts:
        has_errors = any(RULES[c].severity is Severity.error for c in issues.counts)
        if stats.examples == 0 and not has_errors:
            issues.add("empty_file", None, None, "the file has no examples, only blank lines")
        elif stats.examples < opts.min_examples:
            issues.add(
                "too_few_examples",
                None,
                None,
                f"{stats.examples} examples; at least {opts.min_examples} are required",
            )
    cost = _cost(plan, fmt, stats, opts, issues) if not sniffed.fatal else None

    report = _build_report(
        path=path,
        sniffed_size=sniffed.size,
        fmt=fmt,
        detected=sniffed.detected,
        model=model,
        plan=plan,
        other=other,
        merged=merged,
        cost=cost,
        duplicates=duplicates,
        opts=opts,
        started=started,
    )
    return report, stats


def _build_report(
    *,
    path: Path,
    sniffed_size: int,
    fmt: DatasetFormat | None,
    detected: bool,
    model: str | None,
    plan: _ModelPlan,
    other: EncodingName | None,
    merged: _Merged,
    cost: CostEstimate | None,
    duplicates: DuplicatesSection,
    opts: ValidationOptions,
    started: float,
) -> DatasetReport:
    stats = merged.stats
    issues = merged.issues
    listed: list[ValidationIssue] = []
    counts: list[IssueCount] = []
    errors = warnings = 0
    for code, n in issues.counts.items():
        rule = RULES[code]
        rows = issues.listed.get(code, [])
        counts.append(IssueCount(code=code, severity=rule.severity, count=n, listed=len(rows)))
        if rule.severity is Severity.error:
            errors += n
        else:
            warnings += n
        listed.extend(
            ValidationIssue(code=code, severity=rule.severity, message=msg, line=ln, field=fld, example=ex)
            for ln, fld, msg, ex in rows
        )
    severity_order = {Severity.error: 0, Severity.warning: 1}
    listed.sort(key=lambda i: (i.line is not None, i.line or 0, severity_order[i.severity], i.code))
    counts.sort(key=lambda c: (severity_order[c.severity], -c.count, c.code))

    per_example = _distribution(stats.tokens_per_example)
    by_encoding = {
        plan.encoding: EncodingTotals(
            encoding=plan.encoding,
            total_tokens=per_example.total,
            max_example_tokens=per_example.max,
            examples_over_limit=stats.over_limit,
        )
    }
    if other is not None:
        other_dist = _distribution(stats.other_tokens_per_example)
        by_encoding[other] = EncodingTotals(
            encoding=other,
            total_tokens=other_dist.total,
            max_example_tokens=other_dist.max,
            examples_over_limit=stats.other_over_limit,
        )
    statistics = DatasetStatistics(
        lines=stats.lines,
        examples=stats.examples,
        blank_lines=stats.blank_lines,
        messages=stats.messages,
        messages_per_example=_distribution(stats.messages_per_example),
        tokens_per_role={role: _distribution(h) for role, h in sorted(stats.tokens_per_role.items())},
        tokens_per_example=per_example,
        encoding=plan.encoding,
        token_limit=plan.token_limit,
        examples_over_limit=stats.over_limit,
        examples_missing_system=stats.missing_system,
        examples_missing_user=stats.missing_user,
        tokens_by_encoding=by_encoding,
    )
    return DatasetReport(
        valid=errors == 0,
        format=fmt,
        format_detected=detected,
        model=model,
        encoding=plan.encoding,
        size_bytes=sniffed_size,
        error_count=errors,
        warning_count=warnings,
        issue_counts=counts,
        issues=listed,
        max_issues_per_code=opts.max_issues_per_code,
        statistics=statistics,
        cost=cost,
        duplicates=duplicates,
        rules_version=RULES_VERSION,
        duration_s=round(time.perf_counter() - started, 4),
    )


def failure_report(code: str, message: str) -> DatasetReport:
    """The report of a dataset that has no file to check (e.g. a derivation that failed): one file-level error."""
    rule = RULES[code]
    return DatasetReport(
        valid=rule.severity is not Severity.error,
        encoding=DEFAULT_ENCODING,
        size_bytes=0,
        error_count=1 if rule.severity is Severity.error else 0,
        warning_count=0 if rule.severity is Severity.error else 1,
        issue_counts=[IssueCount(code=code, severity=rule.severity, count=1, listed=1)],
        issues=[ValidationIssue(code=code, severity=rule.severity, message=message)],
        max_issues_per_code=ValidationOptions().max_issues_per_code,
        statistics=DatasetStatistics(lines=0, examples=0, encoding=DEFAULT_ENCODING),
        duplicates=DuplicatesSection(checked=False),
        rules_version=RULES_VERSION,
        duration_s=0.0,
    )
