"""What the engine knows about one kind of work row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from service.work.names import DEFAULT_QUEUE


@dataclass(frozen=True)
class StepFailure:
    """Why a row's step keeps failing: its last error and how many attempts failed in a row."""

    message: str
    attempts: int


@dataclass(frozen=True)
class WorkKind:
    """A table whose rows the sweeper watches, the task that advances one row, and how to end a row that cannot go on.

    ``give_up`` fails the row's object when its step failed ``max_step_attempts`` times in a row (it runs in the
    transaction that records the last failure; the engine clears ``next_run_at`` afterwards, with or without one). ``cancel_requested`` and
    ``cancel`` make a cancel win over retries: a step that fails while a cancel is pending ends the object cancelled
    instead of backing off. Kinds without ``cancel`` have no cancel or carry it out in their step only.
    """

    name: str
    model: Any
    task: str
    queue: str = DEFAULT_QUEUE
    # A column naming the queue of each row (it overrides ``queue``): rows of one kind may need different workers.
    queue_column: str | None = None
    # The task takes no row id and serves every due row (a dispatcher): the sweeper sends it once, not once per row.
    batched: bool = False
    give_up: Callable[[Session, Any, StepFailure], None] | None = None
    cancel_requested: Callable[[Any], bool] | None = None
    cancel: Callable[[Session, Any, str], None] | None = None

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkKind) and other.name == self.name
