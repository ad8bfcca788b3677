"""API shapes of a work row's progress (``api_schemas.work``)."""

from __future__ import annotations

from typing import Any

from api_schemas.work import LastError


def last_error_out(row: Any) -> LastError | None:
    return LastError(message=row.last_error, at=row.last_error_at) if row.last_error else None
