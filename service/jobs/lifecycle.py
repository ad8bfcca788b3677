"""A job's transitions (the state machine in ``service.jobs.states``, each with its log line and outbox event) and
its work kind: how the engine gives a job up whose step keeps failing."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from api_schemas.jobs import JobStatus
from service.clock import utcnow
from service.jobs import states
from service.jobs.models import Job, JobEvent
from service.work import machine, names
from service.work.kind import StepFailure, WorkKind

S = JobStatus


def record_transition(session: Session, job: Job, old: S | None, new: S, reason: str) -> None:
    session.add(
        JobEvent(
            job_id=job.id,
            source="service",
            type="status",
            message=f"{old.value if old else '-'} -> {new.value}: {reason}",
            data={"from": old.value if old else None, "to": new.value, "reason": reason},
        )
    )


def _view(job: Job) -> Any:
    from service.jobs.views import job_out

    return job_out(job)


def transition(session: Session, job: Job, new: S, reason: str) -> bool:
    def on_enter(old: S) -> None:
        now = utcnow()
        job.status_reason = reason
        if new == S.running and job.started_at is None:
            job.started_at = now
        if new in states.TERMINAL:
            job.finished_at = job.finished_at or now
            job.requested_action = None
        record_transition(session, job, old, new, reason)

    return machine.transition(session, job, new, states.MACHINE, view=_view, on_enter=on_enter)


def _give_up(session: Session, job: Job, failure: StepFailure) -> None:
    """The job's step failed ``max_step_attempts`` times in a row: fail the job with the last error. (A cancel is
    carried out by the step itself, at the provider, so a job has no engine-side cancel: it must not stop watching a
    provider job that may still run.)"""
    message = f"the {job.status} step failed {failure.attempts} times in a row; last error: {failure.message}"
    job.error = {"code": "step_failed", "message": message, "param": None}
    transition(session, job, S.failed, "gave up after repeated errors")


JOBS = WorkKind("job", Job, names.ADVANCE_JOB, give_up=_give_up)
