"""Whole-file checks made on the first bytes: emptiness, binary content, encodings, JSON-not-JSONL, the format."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from api_schemas.dataset_report import DatasetFormat
from service.datasets.validation.options import CsvColumns
from service.datasets.validation.state import excerpt

HEAD_BYTES = 1024 * 1024
# A pretty-printed document up to this size is parsed whole to confirm it is one JSON value.
WHOLE_PARSE_BYTES = 8 * 1024 * 1024
DETECT_LINES = 1000
UTF8_BOM = b"\xef\xbb\xbf"

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "a gzip archive"),
    (b"PK\x03\x04", "a zip archive (or xlsx/docx)"),
    (b"PAR1", "a Parquet file"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"ARROW1", "an Arrow file"),
)
_UTF_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "UTF-32 LE"),
    (b"\x00\x00\xfe\xff", "UTF-32 BE"),
    (b"\xff\xfe", "UTF-16 LE"),
    (b"\xfe\xff", "UTF-16 BE"),
)
# Control bytes that never occur in text (tab, newlines, form feed, escape are allowed).
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))

Issue = tuple[str, int | None, str | None, str, str | None]  # code, line, field, message, excerpt

_CSV_SUFFIXES = {".csv", ".tsv"}


@dataclass
class Sniffed:
    size: int
    format: DatasetFormat | None
    detected: bool
    issues: list[Issue] = field(default_factory=list)
    fatal: bool = False
    skip_prefix: int = 0


def _binary_reason(head: bytes) -> tuple[str, str] | None:
    """(rule code, message) when the head is not UTF-8 text."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return "binary_file", f"the file is {what}, not text"
    for bom, name in _UTF_BOMS:
        if head.startswith(bom):
            return "wrong_encoding", f"the file is encoded as {name} (byte-order mark {bom.hex(' ')}); use UTF-8"
    nul = head.count(b"\x00")
    if nul:
        sample = head[:4096]
        if sample.count(b"\x00") == len(sample):
            return "binary_file", f"the file is only NUL bytes (all of the first {len(sample)}): not a text file"
        # UTF-16 text of a Latin script: NUL in every other byte, and text in the bytes between.
        half = len(sample) // 2
        for nuls, text in ((sample[1::2], sample[0::2]), (sample[0::2], sample[1::2])):
            if len(sample) >= 4 and nuls.count(b"\x00") >= half * 0.9 and text.count(b"\x00") <= half * 0.1:
                return "wrong_encoding", "the file looks like UTF-16 without a byte-order mark; use UTF-8"
        first_nul = head.index(0) + 1
        return "binary_file", f"the file contains NUL bytes (first at byte {first_nul}): not a text file"
    sample = head[:65536]
    controls = len(sample) - len(sample.translate(None, _CONTROL))
    if sample and controls / len(sample) > 0.1:
        return "binary_file", f"{controls} of the first {len(sample)} bytes are control characters: not a text file"
    return None


def _first_line(data: bytes) -> bytes:
    end = data.find(b"\n")
    return data if end < 0 else data[:end]


def _detect_jsonl_format(head: bytes, complete: bool) -> tuple[DatasetFormat | None, bool]:
    """The format of the first decisive example, and whether any line parsed as an object at all."""
    lines = head.split(b"\n")
    if not complete:
        lines = lines[:-1]  # the last piece may be cut in the middle
    saw_object = False
    for raw in lines[:DETECT_LINES]:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if type(obj) is not dict:
            continue
        saw_object = True
        if "input" in obj and ("preferred_output" in obj or "non_preferred_output" in obj):
            return DatasetFormat.preference, True
        if "messages" in obj:
            return DatasetFormat.chat, True
        if "prompt" in obj or "completion" in obj:
            return DatasetFormat.prompt_completion, True
    return None, saw_object


def looks_like_csv(text: str) -> bool:
    try:
        dialect = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|")
    except csv.Error:
        return False
    first = next(csv.reader([text.split("\n", 1)[0]], dialect), [])
    return len(first) >= 2


def sniff(path: Path, declared: DatasetFormat | None, csv_columns: CsvColumns | None) -> Sniffed:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    complete = len(head) == size
    out = Sniffed(size=size, format=declared, detected=declared is None)
    if not head.strip() and size <= HEAD_BYTES:
        out.issues.append(("empty_file", None, None, "the file is empty" if not size else "only whitespace", None))
        out.fatal = True
        return out
    reason = _binary_reason(head)
    if reason is not None:
        out.issues.append((reason[0], None, None, reason[1], excerpt(head[:32].hex(" "))))
        out.fatal = True
        return out

    as_csv = declared is DatasetFormat.csv or (
        declared is None and (csv_columns is not None or path.suffix.lower() in _CSV_SUFFIXES)
    )
    if as_csv:
        out.format = DatasetFormat.csv
        return out

    if head.startswith(UTF8_BOM):
        out.issues.append(("bom", 1, None, "the file starts with a UTF-8 byte-order mark (EF BB BF)", None))
        out.skip_prefix = len(UTF8_BOM)
    body = head[out.skip_prefix :]
    stripped = body.lstrip()
    if not stripped:
        # Whitespace for the whole first MiB of a larger file: the scan reports what follows.
        out.format = out.format or DatasetFormat.chat
        return out
    first_char = stripped[:1]
    if first_char in (b"[", b"{") and _not_jsonl(path, body, complete, out):
        return out
    if declared is not None:
        return out
    if first_char not in (b"{", b"["):
        text = body.decode("utf-8", "replace")
        if looks_like_csv(text):
            out.format = DatasetFormat.csv
            return out
    fmt, saw_object = _detect_jsonl_format(body, complete)
    if fmt is None and saw_object:
        out.issues.append(
            (
                "unknown_format",
                None,
                None,
                "no example in the first lines has `messages`, `input` + `preferred_output`, or `prompt` + "
                "`completion`",
                None,
            )
        )
        out.fatal = True
        return out
    out.format = fmt or DatasetFormat.chat
    return out


def _not_jsonl(path: Path, body: bytes, complete: bool, out: Sniffed) -> bool:
    """Report (and return True) when the file is one JSON document rather than JSON Lines.

    ``body`` is the head of the file after any BOM and starts (after whitespace) with ``[`` or ``{``.
    """
    stripped = body.lstrip()
    first = _first_line(stripped)
    line = body[: len(body) - len(stripped)].count(b"\n") + 1
    try:
        value = orjson.loads(first)
        parsed_first = True
    except orjson.JSONDecodeError as exc:
        if "depth" in exc.msg or "recursion" in exc.msg:
            return False  # a complete line, nested too deep: the scan reports it as such (too_deep)
        value = None
        parsed_first = False

    def report(message: str) -> bool:
        out.issues.append(("not_jsonl", line, None, message, excerpt(first)))
        out.fatal = True
        return True

    if parsed_first:
        rest_is_blank = complete and not stripped[len(first) :].strip()
        if type(value) is list and rest_is_blank:
            return report(f"the file is one JSON array of {len(value)} items; write one JSON object per line instead")
        # A complete first line followed by more lines: JSON Lines, whatever line 1 holds (the scan reports it).
        return False
    # The first line is not a complete value: one document spread over several lines (or a line over 1 MiB).
    if out.size <= WHOLE_PARSE_BYTES:
        with open(path, "rb") as f:
            f.seek(out.skip_prefix)
            data = f.read()
        try:
            whole = orjson.loads(data)
        except orjson.JSONDecodeError:
            whole = None
        else:
            what = f"an array of {len(whole)} items" if type(whole) is list else "one object"
            lines = data.count(b"\n") + 1
            return report(
                f"the file is a single JSON document ({what}) spread over {lines} lines; write one compact JSON "
                "object per line"
            )
        finally:
            del data
    if stripped[:1] == b"[":
        # No JSON Lines file starts with an array that does not even end on its line.
        return report(
            "the file starts with '[' and its first line is not a complete JSON value: a JSON array, not JSON Lines"
        )
    if first.strip() == b"{":
        return report(
            "the first line is only '{': this looks like pretty-printed JSON, not one compact object per line"
        )
    return False
