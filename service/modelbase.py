"""Column helpers and the work-item fields shared by every row that a worker advances.

A work item is a row with a state machine. ``next_run_at`` says when it next needs a worker (NULL: nothing to do), the
lease fields say which worker owns it until when. The sweeper re-enqueues rows that are due or whose lease expired, so a
lost queue message only delays work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from service.clock import utcnow
from service.db import JSONType, UTCDateTime


def ts_field(*, nullable: bool = False, index: bool = False, default_now: bool = False) -> Any:
    if default_now:
        return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=nullable, index=index)
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def json_field(default_factory: Any = dict, *, nullable: bool = False) -> Any:
    if default_factory is None:
        return Field(default=None, sa_type=JSONType, nullable=True)
    return Field(default_factory=default_factory, sa_type=JSONType, nullable=nullable)


class Timestamps(SQLModel):
    created_at: datetime = ts_field(default_now=True, index=True)
    updated_at: datetime = ts_field(default_now=True)


class WorkItem(SQLModel):
    next_run_at: datetime | None = ts_field(nullable=True, index=True)
    lease_expires_at: datetime | None = ts_field(nullable=True, index=True)
    lease_owner: str | None = Field(default=None, max_length=64)
    # Failed attempts in a row of the current step (0 after a step succeeds), and the last error with its time (kept
    # after a success, so the API can show what went wrong last).
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None)
    last_error_at: datetime | None = ts_field(nullable=True)
