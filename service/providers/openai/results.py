"""A finished job's result file: OpenAI's per-step metrics CSV (base64-encoded), read leniently."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math

# OpenAI's result CSV names token accuracy differently from its metrics events; we keep the events' names.
RESULT_COLUMN_ALIASES = {
    "train_accuracy": "train_mean_token_accuracy",
    "valid_accuracy": "valid_mean_token_accuracy",
    "validation_loss": "valid_loss",
}


def _decode_result(content: bytes) -> str | None:
    """OpenAI serves result files base64-encoded; compatible servers may send the CSV itself."""
    text = content.decode("utf-8-sig", errors="replace").strip()
    if "," in text.split("\n", 1)[0]:
        return text
    try:
        return base64.b64decode("".join(text.split()), validate=True).decode("utf-8-sig").strip()
    except (binascii.Error, ValueError):
        return None


def _number(value: str) -> int | float | None:
    value = value.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_result_csv(content: bytes) -> tuple[list[str], list[list[int | float | None]]] | None:
    """``(columns, rows)`` of a per-step metrics CSV, column names normalised, or None when it is not one.

    Lenient on purpose, since the columns have changed over the years: any column order, unknown numeric columns kept,
    empty or non-numeric cells become None, rows without an integer step are dropped. Only a ``step`` column is needed.
    """
    text = _decode_result(content)
    if not text:
        return None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        return None
    columns = [RESULT_COLUMN_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    if "step" not in columns:
        return None
    step_at = columns.index("step")
    rows: list[list[int | float | None]] = []
    for raw in reader:
        if len(raw) <= step_at:
            continue
        values = [_number(v) for v in raw[: len(columns)]]
        values += [None] * (len(columns) - len(values))
        step = values[step_at]
        if not isinstance(step, int) or step < 0:
            continue
        rows.append(values)
    return columns, rows
