"""The review queue state machine, as data: a queue is open until every item has the ratings it asked for."""

from __future__ import annotations

from api_schemas.reviews import ReviewQueueStatus as S
from service.work.machine import StateMachine

TRANSITIONS: dict[S, frozenset[S]] = {
    S.open: frozenset({S.completed}),
    S.completed: frozenset(),
}

EVENT_ON_ENTER: dict[S, str] = {S.completed: "review_queue.completed"}

MACHINE: StateMachine[S] = StateMachine("review_queue", TRANSITIONS, EVENT_ON_ENTER)
