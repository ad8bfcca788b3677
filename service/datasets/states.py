"""The dataset state machine, as data: a dataset is validated once and ends ready or invalid (an invalid dataset is
kept with its report)."""

from __future__ import annotations

from api_schemas.datasets import DatasetStatus as S
from service.work.machine import StateMachine

TRANSITIONS: dict[S, frozenset[S]] = {
    S.validating: frozenset({S.ready, S.invalid}),
    S.ready: frozenset(),
    S.invalid: frozenset(),
}

EVENT_ON_ENTER: dict[S, str] = {S.ready: "dataset.ready", S.invalid: "dataset.invalid"}

MACHINE: StateMachine[S] = StateMachine("dataset", TRANSITIONS, EVENT_ON_ENTER)
