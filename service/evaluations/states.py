"""The evaluation state machine, as data."""

from __future__ import annotations

from api_schemas.evaluations import EvaluationStatus as S
from service.work.machine import InvalidTransition, StateMachine

TRANSITIONS: dict[S, frozenset[S]] = {
    S.queued: frozenset({S.running, S.failed, S.cancelled}),
    S.running: frozenset({S.succeeded, S.failed, S.cancelled}),
    S.succeeded: frozenset(),
    S.failed: frozenset(),
    S.cancelled: frozenset(),
}

EVENT_ON_ENTER: dict[S, str] = {
    S.succeeded: "evaluation.succeeded",
    S.failed: "evaluation.failed",
    S.cancelled: "evaluation.cancelled",
}

MACHINE: StateMachine[S] = StateMachine("evaluation", TRANSITIONS, EVENT_ON_ENTER)
TERMINAL: frozenset[S] = MACHINE.terminal
check_transition = MACHINE.check

__all__ = ["EVENT_ON_ENTER", "MACHINE", "TERMINAL", "TRANSITIONS", "InvalidTransition", "check_transition"]
