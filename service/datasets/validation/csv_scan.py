"""CSV datasets: rows mapped to chat examples (system / user / assistant columns) and checked as chat.

CSV fields may contain quoted newlines, so a CSV file cannot be cut at arbitrary newlines: it is scanned in one
process. Lines are still read through the bounded reader, so an over-long line is reported and skipped, never held.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from service.datasets.validation.options import CsvColumns
from service.datasets.validation.reader import TooLong, iter_lines
from service.datasets.validation.scan import RangeSketcher, ScanContext, new_result
from service.datasets.validation.sniff import UTF8_BOM
from service.datasets.validation.state import IssueCollector, RangeResult, excerpt

# Header names recognised when no mapping is given, in order of preference.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "system": ("system", "system_prompt", "system_message"),
    "user": ("user", "prompt", "question", "input", "query", "instruction"),
    "assistant": ("assistant", "completion", "answer", "output", "response"),
}
_MESSAGE_FIELD = re.compile(r"^messages\[(\d+)\]")


class _CsvIssues(IssueCollector):
    """Rewrites ``messages[i]`` field paths to the CSV column the message came from."""

    __slots__ = ("labels",)

    def __init__(self, cap: int) -> None:
        super().__init__(cap)
        self.labels: list[str] = []

    def add(self, code: str, line: int | None, field: str | None, message: str, example: str | None = None) -> None:
        if field == "messages":
            field = None  # the whole row; its line says which
        elif field is not None:
            match = _MESSAGE_FIELD.match(field)
            if match is not None and int(match.group(1)) < len(self.labels):
                rest = field[match.end() :]
                field = self.labels[int(match.group(1))] + ("" if rest == ".content" else rest)
        super().add(code, line, field, message, example)


def _resolve(header: list[str] | None, wanted: str | int | None, role: str) -> int | None:
    if wanted is None:
        return None
    if isinstance(wanted, int):
        return wanted
    assert header is not None
    if wanted in header:
        return header.index(wanted)
    lowered = [h.strip().lower() for h in header]
    if wanted.strip().lower() in lowered:
        return lowered.index(wanted.strip().lower())
    return -1


def _default_mapping(header: list[str]) -> dict[str, str | None]:
    lowered = {h.strip().lower(): h for h in header}
    found: dict[str, str | None] = {}
    for role, names in DEFAULT_COLUMNS.items():
        found[role] = next((lowered[n] for n in names if n in lowered), None)
    return found


def scan_csv(path: Path, ctx: ScanContext, columns: CsvColumns | None) -> RangeResult:
    result, checker = new_result(ctx)
    issues = _CsvIssues(ctx.max_issues_per_code)
    result.issues = issues
    checker.issues = issues
    stats = result.stats
    sketcher = RangeSketcher(ctx, result.sketches) if ctx.duplicates else None

    physical = 0

    def lines(f) -> Iterator[str]:
        nonlocal physical
        for raw in iter_lines(f, 0, None, ctx.max_line_bytes):
            physical += 1
            if type(raw) is TooLong:
                issues.add("line_too_long", physical, None, f"line is {raw.length:,} bytes; skipped")
                yield "\n"
                continue
            if physical == 1 and raw.startswith(UTF8_BOM):
                # Spreadsheet exports start with a BOM; harmless here since rows are converted.
                raw = raw[len(UTF8_BOM) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                issues.add(
                    "invalid_utf8",
                    physical,
                    None,
                    f"invalid UTF-8 byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line; line skipped",
                    excerpt(raw),
                )
                yield "\n"
                continue
            yield text + "\n"

    with open(path, "rb") as f:
        sample = f.read(65536)
        delimiter = columns.delimiter if columns and columns.delimiter else _sniff_delimiter(sample)
        f.seek(0)
        reader = csv.reader(lines(f), delimiter=delimiter)
        has_header = columns.header if columns else True
        header: list[str] | None = None
        try:
            if has_header:
                header = next(reader, None)
                if header is None:
                    issues.add("empty_file", None, None, "the CSV has no rows")
                    stats.lines = physical
                    return result
            mapping = _mapping(columns, header, issues)
            if mapping is None:
                stats.lines = physical
                return result
            width = len(header) if header is not None else None
            labels = {
                role: (f'column "{header[i]}"' if header is not None else f"column {i}")
                for role, i in mapping.items()
                if i is not None
            }
            system_prompt = columns.system_prompt if columns else None
            row_start = physical + 1
            for row in reader:
                line = row_start
                row_start = physical + 1
                if not row or (len(row) == 1 and not row[0].strip()):
                    stats.blank_lines += 1
                    continue
                if width is None:
                    width = len(row)
                    beyond = [role for role, i in mapping.items() if i is not None and i >= width]
                    if beyond:
                        for role in beyond:
                            issues.add(
                                "csv_missing_column",
                                line,
                                role,
                                f"column {mapping[role]} for {role} is past the {width} columns of the first row",
                            )
                        break
                if len(row) != width:
                    issues.add(
                        "csv_ragged_row",
                        line,
                        None,
                        f"the row has {len(row)} field{'s' if len(row) != 1 else ''}, the "
                        f"{'header' if header else 'first row'} {width}",
                        excerpt(delimiter.join(row)),
                    )
                    continue
                stats.examples += 1
                messages = []
                issues.labels = []
                system_index = mapping.get("system")
                if system_index is not None and row[system_index].strip():
                    messages.append({"role": "system", "content": row[system_index]})
                    issues.labels.append(labels["system"])
                elif system_prompt:
                    messages.append({"role": "system", "content": system_prompt})
                    issues.labels.append("system_prompt")
                skip = False
                for role in ("user", "assistant"):
                    value = row[mapping[role]]  # type: ignore[index]
                    if not value.strip():
                        issues.add("empty_content", line, labels[role], f"the {role} cell is empty")
                        skip = True
                    messages.append({"role": role, "content": value})
                    issues.labels.append(labels[role])
                if skip:
                    continue
                example = {"messages": messages}
                checker.chat(example, line)
                if sketcher is not None:
                    sketcher.add(line, example)
        except csv.Error as exc:
            issues.add("csv_parse_error", physical or None, None, f"cannot parse the CSV: {exc}")
    checker.flush()
    if sketcher is not None:
        sketcher.flush()
    stats.lines = physical
    return result


def _sniff_delimiter(sample: bytes) -> str:
    text = sample.decode("utf-8", "replace")
    try:
        return csv.Sniffer().sniff(text, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _mapping(
    columns: CsvColumns | None, header: list[str] | None, issues: IssueCollector
) -> dict[str, int | None] | None:
    """Column index per role; reports missing columns and returns None when user or assistant is unavailable."""
    if columns is not None and (columns.user is not None or columns.assistant is not None):
        wanted: dict[str, str | int | None] = {
            "system": columns.system,
            "user": columns.user,
            "assistant": columns.assistant,
        }
    elif header is not None:
        wanted = dict(_default_mapping(header))
    else:
        wanted = {"system": None, "user": None, "assistant": None}
    mapping: dict[str, int | None] = {}
    ok = True
    for role in ("system", "user", "assistant"):
        index = _resolve(header, wanted[role], role)
        width = len(header) if header is not None else None
        if index is None:
            if role != "system":
                known = ", ".join(DEFAULT_COLUMNS[role])
                issues.add(
                    "csv_missing_column",
                    1,
                    role,
                    f"no {role} column: map one (e.g. csv={{'{role}': 'column name'}}) or name a header column one of "
                    f"{known}",
                )
                ok = False
            mapping[role] = None
        elif index < 0 or (width is not None and index >= width):
            issues.add("csv_missing_column", 1, role, f"column {wanted[role]!r} for {role} is not in the header")
            ok = False
        else:
            mapping[role] = index
    return mapping if ok else None
