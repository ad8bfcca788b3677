"""Conversions of legacy prompt/completion JSONL and of CSV tables to chat-format JSONL.

Both stream their input and write ``{"messages": [...]}`` lines (keys in a fixed order, so the same input always
gives the same bytes) to a temporary file renamed over the destination at the end. A row that cannot be converted
is skipped and reported with its line (and for CSV its row number and column); nothing is dropped silently.

Prompt/completion template (``ChatTemplate``), applied to each row in this order:

1. ``prompt_separator``: the separator that legacy datasets appended to every prompt (the old guide recommended
   ``"\\n\\n###\\n\\n"``). ``"auto"`` (default) removes the first of ``LEGACY_PROMPT_SEPARATORS`` that *every*
   prompt in the file ends with, and nothing if no candidate is shared by all; a string removes that suffix
   wherever present; ``None`` removes nothing.
2. ``completion_stop``: the stop sequence appended to every completion (``" END"``, ``"\\n###"``...), with the
   same ``"auto"`` / string / ``None`` rules over ``LEGACY_COMPLETION_STOPS``.
3. ``strip_leading_space``: remove one leading space from the completion (legacy completions started with a space
   for the old tokenizers).
4. ``strip_whitespace``: strip surrounding whitespace from both.
5. ``system``: when set, a system message with this text comes first; the prompt becomes the user message and the
   completion the assistant message. Other keys of the row are not carried over.

A row whose prompt or completion is empty after these steps is skipped and reported.

CSV (``CsvColumns``): columns are header names or 0-based positions; the system message may come from a column (an
empty cell means no system message) or be a constant. The file is read as UTF-8 (a byte-order mark is ignored), with
a declared delimiter or one sniffed from the first 64 KiB among ``, ; TAB |``. The header is detected (named columns
must all appear in the first row; for positions only, ``csv.Sniffer`` decides) unless ``has_header`` is given.
Quoted cells may contain delimiters and newlines. Cells are stripped of surrounding whitespace; rows whose field
count differs from the header's (ragged) or with an empty user or assistant cell are skipped and reported.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service import chat
from service.errors import InvalidInput

__all__ = [
    "LEGACY_COMPLETION_STOPS",
    "LEGACY_PROMPT_SEPARATORS",
    "ChatTemplate",
    "ConversionError",
    "ConversionProblem",
    "ConversionResult",
    "CsvColumns",
    "csv_to_chat",
    "prompt_completion_to_chat",
]

LEGACY_PROMPT_SEPARATORS = ("\n\n###\n\n", "\n\n###\n", "\n###\n", "###", " ->", "->")
LEGACY_COMPLETION_STOPS = ("\n\n###\n\n", "\n###", "###", " END", "<|endoftext|>")
_SNIFF_BYTES = 64 * 1024
_SNIFF_DELIMITERS = ",;\t|"
# csv's default field limit (128 KiB) is smaller than a long training example.
_CSV_FIELD_LIMIT = 64 * 1024 * 1024


class ConversionError(InvalidInput):
    """The whole file cannot be converted (unreadable encoding, unknown column, broken CSV quoting)."""

    code = "conversion_failed"


class ChatTemplate(BaseModel):
    """How a prompt/completion row becomes a chat example (see the module documentation for the exact rules)."""

    model_config = ConfigDict(frozen=True)

    system: str | None = Field(default=None, description="System message placed first, if any.")
    prompt_separator: str | Literal["auto"] | None = "auto"
    completion_stop: str | Literal["auto"] | None = "auto"
    strip_leading_space: bool = True
    strip_whitespace: bool = True

    @model_validator(mode="after")
    def _non_empty(self) -> ChatTemplate:
        for name in ("prompt_separator", "completion_stop"):
            if getattr(self, name) == "":
                raise ValueError(f"{name} must be a non-empty string, 'auto' or null")
        return self


class CsvColumns(BaseModel):
    """Which CSV columns (header names, or 0-based positions) hold each role."""

    model_config = ConfigDict(frozen=True)

    user: str | int
    assistant: str | int
    system: str | int | None = None
    system_text: str | None = Field(default=None, description="A constant system message for every row.")

    @model_validator(mode="after")
    def _check(self) -> CsvColumns:
        if self.system is not None and self.system_text is not None:
            raise ValueError("give either a system column or a constant system_text, not both")
        refs = [ref for ref in (self.user, self.assistant, self.system) if ref is not None]
        for ref in refs:
            if isinstance(ref, int) and ref < 0:
                raise ValueError(f"column positions are 0-based and >= 0, got {ref}")
            if isinstance(ref, str) and not ref:
                raise ValueError("column names must be non-empty")
        if len(set(refs)) != len(refs):
            raise ValueError("user, assistant and system must be different columns")
        return self

    def refs(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {"user": self.user, "assistant": self.assistant}
        if self.system is not None:
            out["system"] = self.system
        return out


class ConversionProblem(BaseModel):
    model_config = ConfigDict(frozen=True)

    line: int = Field(description="1-based line of the input where the row starts.")
    row: int | None = Field(default=None, description="CSV only: 1-based record number, the header being row 1.")
    column: str | None = None
    code: str
    message: str


class ConversionResult(BaseModel):
    source: Path
    destination: Path
    rows_read: int = Field(description="Rows (records) read, not counting a CSV header or blank lines.")
    examples_written: int
    rows_skipped: int
    blank_lines: int
    problems: list[ConversionProblem] = Field(description="The first max_problems problems, in input order.")
    problems_total: int
    sha256: str
    size_bytes: int
    prompt_separator: str | None = Field(default=None, description="Prompt suffix that was removed, if any.")
    completion_stop: str | None = Field(default=None, description="Completion suffix that was removed, if any.")
    delimiter: str | None = None
    header: list[str] | None = None


class _Output:
    """Writes JSONL to a temporary file next to the destination and collects problems."""

    def __init__(self, dst: Path, max_problems: int) -> None:
        self.dst = dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        self._fh: BinaryIO = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish/abort
        self._hash = hashlib.sha256()
        self.size = 0
        self.written = 0
        self.rows = 0
        self.skipped = 0
        self.blank = 0
        self.problems: list[ConversionProblem] = []
        self.problems_total = 0
        self._max_problems = max_problems

    def write(self, messages: list[dict[str, str]]) -> None:
        data = orjson.dumps({"messages": messages}) + b"\n"
        self._fh.write(data)
        self._hash.update(data)
        self.size += len(data)
        self.written += 1

    def problem(self, line: int, code: str, message: str, *, row: int | None = None, column: str | None = None) -> None:
        self.skipped += 1
        self.problems_total += 1
        if len(self.problems) < self._max_problems:
            self.problems.append(ConversionProblem(line=line, row=row, column=column, code=code, message=message))

    def finish(self, src: Path, **extra: Any) -> ConversionResult:
        self._fh.close()
        os.replace(self.tmp, self.dst)
        return ConversionResult(
            source=src,
            destination=self.dst,
            rows_read=self.rows,
            examples_written=self.written,
            rows_skipped=self.skipped,
            blank_lines=self.blank,
            problems=self.problems,
            problems_total=self.problems_total,
            sha256=self._hash.hexdigest(),
            size_bytes=self.size,
            **extra,
        )

    def abort(self) -> None:
        self._fh.close()
        self.tmp.unlink(missing_ok=True)


def _messages(system: str | None, user: str, assistant: str) -> list[dict[str, str]]:
    messages = [{"role": chat.SYSTEM, "content": system}] if system else []
    messages.append({"role": chat.USER, "content": user})
    messages.append({"role": chat.ASSISTANT, "content": assistant})
    return messages


# ---------------------------------------------------------------------------------------------------------------------
# prompt / completion


def _legacy_rows(src: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or the decode error) for each non-blank line; blank lines yield (line, None)."""
    with open(src, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                yield number, None
                continue
            try:
                yield number, orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield number, exc


def _detect_suffix(src: Path, field: str, candidates: tuple[str, ...]) -> str | None:
    """The first candidate that every string ``field`` in the file ends with (first pass of ``auto``)."""
    remaining = list(candidates)
    seen = False
    for _, obj in _legacy_rows(src):
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            continue
        seen = True
        value = obj[field]
        remaining = [suffix for suffix in remaining if value.endswith(suffix)]
        if not remaining:
            return None
    return remaining[0] if seen and remaining else None


def prompt_completion_to_chat(
    src: Path, dst: Path, *, template: ChatTemplate | None = None, max_problems: int = 1_000
) -> ConversionResult:
    """Convert legacy ``{"prompt", "completion"}`` JSONL at ``src`` to chat JSONL at ``dst`` (rules: module doc)."""
    src, dst = Path(src), Path(dst)
    template = template or ChatTemplate()
    if not src.is_file():
        raise ConversionError(f"{src}: no such file")
    separator = template.prompt_separator
    if separator == "auto":
        separator = _detect_suffix(src, "prompt", LEGACY_PROMPT_SEPARATORS)
    stop = template.completion_stop
    if stop == "auto":
        stop = _detect_suffix(src, "completion", LEGACY_COMPLETION_STOPS)

    out = _Output(dst, max_problems)
    try:
        for number, obj in _legacy_rows(src):
            if obj is None:
                out.blank += 1
                continue
            out.rows += 1
            if isinstance(obj, orjson.JSONDecodeError):
                out.problem(number, "invalid_json", f"not valid JSON: {obj}")
                continue
            if not isinstance(obj, dict):
                out.problem(number, "not_an_object", f"expected a JSON object, got {type(obj).__name__}")
                continue
            missing = [key for key in ("prompt", "completion") if key not in obj]
            if missing:
                out.problem(number, "missing_field", f"missing {' and '.join(missing)}", column=missing[0])
                continue
            prompt, completion = obj["prompt"], obj["completion"]
            bad = next(
                (key for key, value in (("prompt", prompt), ("completion", completion)) if not isinstance(value, str)),
                None,
            )
            if bad is not None:
                out.problem(
                    number, "invalid_type", f"{bad} must be a string, got {type(obj[bad]).__name__}", column=bad
                )
                continue
            if separator and prompt.endswith(separator):
                prompt = prompt[: -len(separator)]
            if stop and completion.endswith(stop):
                completion = completion[: -len(stop)]
            if template.strip_leading_space and completion.startswith(" "):
                completion = completion[1:]
            if template.strip_whitespace:
                prompt, completion = prompt.strip(), completion.strip()
            if not prompt:
                out.problem(number, "empty_prompt", "the prompt is empty after applying the template", column="prompt")
                continue
            if not completion:
                out.problem(
                    number,
                    "empty_completion",
                    "the completion is empty after applying the template",
                    column="completion",
                )
                continue
            out.write(_messages(template.system, prompt, completion))
    except BaseException:
        out.abort()
        raise
    return out.finish(src, prompt_separator=separator, completion_stop=stop)


# ---------------------------------------------------------------------------------------------------------------------
# CSV


def _open_text(src: Path) -> io.TextIOWrapper:
    # utf-8-sig drops a leading byte-order mark (Excel writes one) and reads plain UTF-8 unchanged.
    return open(src, encoding="utf-8-sig", newline="")


def _sniff(src: Path) -> str:
    with _open_text(src) as fh:
        try:
            return fh.read(_SNIFF_BYTES)
        except UnicodeDecodeError as exc:
            raise ConversionError(f"{src}: not valid UTF-8 (byte {exc.start} of the first 64 KiB)") from exc


def _resolve_columns(columns: CsvColumns, header: list[str] | None, width: int, src: Path) -> dict[str, int]:
    resolved: dict[str, int] = {}
    for role, ref in columns.refs().items():
        if isinstance(ref, int):
            if ref >= width:
                raise ConversionError(f"{src}: {role} column {ref} is out of range: rows have {width} fields")
            resolved[role] = ref
            continue
        if header is None:
            raise ConversionError(f"{src}: {role} column {ref!r} is a name but the file has no header row")
        matches = [i for i, name in enumerate(header) if name == ref]
        if not matches:
            raise ConversionError(f"{src}: {role} column {ref!r} not in the header {header}")
        if len(matches) > 1:
            raise ConversionError(f"{src}: {role} column {ref!r} appears {len(matches)} times in the header")
        resolved[role] = matches[0]
    return resolved


def csv_to_chat(
    src: Path,
    dst: Path,
    *,
    columns: CsvColumns,
    delimiter: str | None = None,
    has_header: bool | None = None,
    max_problems: int = 1_000,
) -> ConversionResult:
    """Convert the CSV table at ``src`` to chat JSONL at ``dst``, one example per data row (rules: module doc)."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ConversionError(f"{src}: no such file")
    if delimiter is not None and (len(delimiter) != 1 or delimiter in "\r\n\"'"):
        raise ConversionError(f"delimiter must be one character other than a quote or newline, got {delimiter!r}")
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    sample = _sniff(src)
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=_SNIFF_DELIMITERS).delimiter
        except csv.Error:
            delimiter = ","

    out = _Output(dst, max_problems)
    try:
        with _open_text(src) as fh:
            reader = csv.reader(fh, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)
            records = _records(reader, src)
            header: list[str] | None = None
            resolved: dict[str, int] | None = None
            width = 0
            for row_no, line, record in records:
                if not record or (len(record) == 1 and not record[0].strip()):
                    out.blank += 1
                    continue
                if resolved is None:
                    header = _detect_header(record, columns, has_header, sample, delimiter)
                    width = len(record)
                    resolved = _resolve_columns(columns, header, width, src)
                    if header is not None:
                        continue
                out.rows += 1
                if len(record) != width:
                    out.problem(line, "ragged_row", f"expected {width} fields, got {len(record)}", row=row_no)
                    continue
                cells = {role: record[index].strip() for role, index in resolved.items()}
                empty = next((role for role in ("user", "assistant") if not cells[role]), None)
                if empty is not None:
                    name = header[resolved[empty]] if header is not None else str(resolved[empty])
                    out.problem(line, "empty_cell", f"the {empty} cell is empty", row=row_no, column=name)
                    continue
                system = cells.get("system") or columns.system_text
                out.write(_messages(system, cells["user"], cells["assistant"]))
            if resolved is None:
                raise ConversionError(f"{src}: the file has no rows")
    except BaseException:
        out.abort()
        raise
    return out.finish(src, delimiter=delimiter, header=header)


def _records(reader: Any, src: Path) -> Iterator[tuple[int, int, list[str]]]:
    """(row number, starting line, fields) for each record, turning reader errors into ``ConversionError``."""
    row_no = 0
    while True:
        line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ConversionError(f"{src}: malformed CSV at line {line}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConversionError(f"{src}: not valid UTF-8 near line {line}") from exc
        row_no += 1
        yield row_no, line, record


def _detect_header(
    first: list[str], columns: CsvColumns, has_header: bool | None, sample: str, delimiter: str
) -> list[str] | None:
    if has_header is not None:
        return [cell.strip() for cell in first] if has_header else None
    names = [ref for ref in columns.refs().values() if isinstance(ref, str)]
    if names:
        # Named columns can only be found through a header, so the first row must be it.
        return [cell.strip() for cell in first]
    try:
        detected = csv.Sniffer().has_header(sample)
    except csv.Error:
        detected = False
    return [cell.strip() for cell in first] if detected else None
