"""The evaluation state machine, as data."""

from __future__ import annotations

from api_schemas.evaluations import EvaluationStatus as S

TERMINAL: frozenset[S] = frozenset({S.succeeded, S.failed, S.cancelled})

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


class InvalidTransition(Exception):
    def __init__(self, current: S, target: S) -> None:
        super().__init__(f"evaluation cannot go from {current.value} to {target.value}")


def check_transition(current: S, target: S) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(current, target)
