"""The job state machine, as data. API, worker and tests all read it from here."""

from __future__ import annotations

from api_schemas.jobs import JobStatus as S
from service.work.machine import InvalidTransition, StateMachine

# Provider statuses can skip ours (a poll may miss "queued"), so forward jumps are allowed; nothing leaves a terminal state.
_AT_PROVIDER = {S.validating_files, S.queued, S.running, S.paused, S.succeeded, S.failed, S.cancelled}
TRANSITIONS: dict[S, frozenset[S]] = {
    S.created: frozenset({S.uploading, S.failed, S.cancelled}),
    S.uploading: frozenset({S.submitted, S.failed, S.cancelled}),
    S.submitted: frozenset(_AT_PROVIDER),
    S.validating_files: frozenset(_AT_PROVIDER - {S.validating_files}),
    S.queued: frozenset(_AT_PROVIDER - {S.validating_files, S.queued}),
    S.running: frozenset({S.paused, S.succeeded, S.failed, S.cancelled}),
    S.paused: frozenset({S.running, S.queued, S.succeeded, S.failed, S.cancelled}),
    S.succeeded: frozenset(),
    S.failed: frozenset(),
    S.cancelled: frozenset(),
}

# Events written to the outbox on entering a state.
EVENT_ON_ENTER: dict[S, str] = {
    S.running: "job.running",
    S.paused: "job.paused",
    S.succeeded: "job.succeeded",
    S.failed: "job.failed",
    S.cancelled: "job.cancelled",
}

MACHINE: StateMachine[S] = StateMachine("job", TRANSITIONS, EVENT_ON_ENTER)
TERMINAL: frozenset[S] = MACHINE.terminal
can_transition = MACHINE.can
check_transition = MACHINE.check

# Which user actions are accepted in which states.
ACTIONS: dict[str, frozenset[S]] = {
    "cancel": frozenset(TRANSITIONS) - TERMINAL,
    "pause": frozenset({S.running}),
    "resume": frozenset({S.paused}),
}

__all__ = [
    "ACTIONS",
    "EVENT_ON_ENTER",
    "MACHINE",
    "TERMINAL",
    "TRANSITIONS",
    "InvalidTransition",
    "can_transition",
    "check_transition",
]
