"""State machines as data, and the one way to move an entity along one: ``transition`` checks the edge, sets the
status, runs the entity's own bookkeeping and writes the outbox event, all in the caller's transaction (so the event
exists exactly when the change does)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlmodel import Session

from service.events import service as events

S = TypeVar("S", bound=StrEnum)


class InvalidTransition(Exception):
    def __init__(self, entity: str, current: StrEnum, target: StrEnum) -> None:
        super().__init__(f"{entity} cannot go from {current.value} to {target.value}")
        self.entity, self.current, self.target = entity, current, target


@dataclass(frozen=True)
class StateMachine(Generic[S]):
    """An entity's states: the allowed moves from each, and the outbox event written on entering a state."""

    entity: str
    transitions: Mapping[S, frozenset[S]]
    events: Mapping[S, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for targets in self.transitions.values():
            unknown = targets - self.transitions.keys()
            if unknown:
                raise ValueError(f"{self.entity}: transitions to states without an entry: {sorted(unknown)}")

    @property
    def terminal(self) -> frozenset[S]:
        """States nothing leaves."""
        return frozenset(s for s, out in self.transitions.items() if not out)

    def can(self, current: S, target: S) -> bool:
        return target in self.transitions[current]

    def check(self, current: S, target: S) -> None:
        if not self.can(current, target):
            raise InvalidTransition(self.entity, current, target)


def transition(
    session: Session,
    row: Any,
    to: S,
    machine: StateMachine[S],
    *,
    view: Callable[[Any], Any],
    on_enter: Callable[[S], None] | None = None,
) -> bool:
    """Move ``row`` (with ``status`` and ``project_id``) to ``to``. Returns False when it is already there.

    Raises ``InvalidTransition`` for an edge the machine does not have. ``on_enter(old)`` is the entity's bookkeeping
    (timestamps, reasons, its own log), run after the status is set and before the event is written; entering a
    terminal state also clears ``next_run_at`` (nothing more for a worker to do). The event's object is ``view(row)``
    (a pydantic model), so it shows the row as it is after the change.
    """
    old = type(to)(row.status)
    if old == to:
        return False
    machine.check(old, to)
    row.status = to
    if to in machine.terminal and hasattr(row, "next_run_at"):
        row.next_run_at = None
    if on_enter is not None:
        on_enter(old)
    event_type = machine.events.get(to)
    if event_type is not None:
        events.record(session, row.project_id, event_type, view(row).model_dump(mode="json"))
    return True
