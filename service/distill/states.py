"""The distillation state machines, as data."""

from __future__ import annotations

from api_schemas.distill import DistillationStatus as R
from api_schemas.distill import DistillRunStatus as D
from service.work.machine import StateMachine

# A cancelled or failed dataset distillation can be resumed: a new generation pass that keeps every answer the
# earlier ones paid for.
RUN_TRANSITIONS: dict[D, frozenset[D]] = {
    D.generating: frozenset({D.succeeded, D.failed, D.cancelled}),
    D.succeeded: frozenset(),
    D.failed: frozenset({D.generating}),
    D.cancelled: frozenset({D.generating}),
}
RUN_MACHINE: StateMachine[D] = StateMachine("dataset distillation", RUN_TRANSITIONS)
RUN_ENDED = frozenset({D.succeeded, D.failed, D.cancelled})

_STOP = frozenset({R.failed, R.cancelled})
RECIPE_TRANSITIONS: dict[R, frozenset[R]] = {
    R.distilling: frozenset({R.splitting} | _STOP),
    R.splitting: frozenset({R.training} | _STOP),
    R.training: frozenset({R.evaluating} | _STOP),
    R.evaluating: frozenset({R.succeeded} | _STOP),
    R.succeeded: frozenset(),
    R.failed: frozenset(),
    R.cancelled: frozenset(),
}
RECIPE_EVENTS: dict[R, str] = {
    R.succeeded: "distillation.succeeded",
    R.failed: "distillation.failed",
    R.cancelled: "distillation.cancelled",
}
RECIPE_MACHINE: StateMachine[R] = StateMachine("distillation", RECIPE_TRANSITIONS, RECIPE_EVENTS)
