"""A job's training curve: per-step loss and token accuracy, merged from the provider's metrics events (arriving while
the job runs, possibly with gaps) and its result file (complete, fetched once when the job succeeds).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Result files are stored as one job event of this type: one row per file, column-oriented to stay compact.
RESULT_FILE_EVENT = "result_file"


def result_event_data(file_id: str, columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"file_id": file_id, "columns": list(columns), "rows": [list(r) for r in rows]}


def result_event_summary(data: dict[str, Any]) -> dict[str, Any]:
    """What the events list shows of a result file event (the rows are served by /metrics)."""
    return {"file_id": data.get("file_id"), "columns": data.get("columns") or [], "steps": len(data.get("rows") or [])}


def merge_points(
    event_data: Iterable[dict[str, Any]], result_files: Iterable[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Points sorted by step, and how many steps each source gave.

    The result file wins where both have a value (it is what the provider settled on); events fill what it lacks, and
    an empty cell never erases a value.
    """
    points: dict[int, dict[str, Any]] = {}
    event_steps: set[int] = set()
    file_steps: set[int] = set()
    for data in event_data:
        step = data.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        event_steps.add(step)
        point = points.setdefault(step, {"step": step})
        point.update({k: v for k, v in data.items() if k not in ("step", "total_steps") and v is not None})
    for rf in result_files:
        columns = rf.get("columns") or []
        if "step" not in columns:
            continue
        at = columns.index("step")
        for row in rf.get("rows") or []:
            if len(row) <= at or not isinstance(row[at], int):
                continue
            step = row[at]
            file_steps.add(step)
            point = points.setdefault(step, {"step": step})
            point.update({c: v for c, v in zip(columns, row, strict=False) if c != "step" and v is not None})
    return [points[k] for k in sorted(points)], {"events": len(event_steps), "result_file": len(file_steps)}
