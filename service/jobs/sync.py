"""What a provider knows about a job beyond its status: events, checkpoints and the result files' metrics, each
stored once however often the provider repeats them."""

from __future__ import annotations

import logging

from sqlmodel import Session, select

from service.clock import utcnow
from service.jobs import metrics
from service.jobs.models import Job, JobCheckpoint, JobEvent
from service.providers.base import HasResultFiles, ProviderError, ProviderJob, TrainingProvider

log = logging.getLogger(__name__)


def sync_events(session: Session, job: Job, provider: TrainingProvider) -> None:
    if not provider.capabilities.events:
        return
    new = provider.list_events(job.provider_job_id, after=job.provider_events_cursor)
    known = (
        set(
            session.exec(
                select(JobEvent.provider_event_id).where(
                    JobEvent.job_id == job.id, JobEvent.provider_event_id.in_([e.id for e in new])
                )
            )
        )
        if new
        else set()
    )
    for ev in new:
        # A provider may send one event twice (repeated pages, overlapping syncs): the first copy is kept.
        if ev.id in known:
            continue
        known.add(ev.id)
        session.add(
            JobEvent(
                job_id=job.id,
                source="provider",
                type=ev.type,
                level=ev.level,
                message=ev.message,
                data=ev.data,
                provider_event_id=ev.id,
                created_at=ev.created_at,
            )
        )
    if new:
        job.provider_events_cursor = new[-1].id


def sync_checkpoints(session: Session, job: Job, provider: TrainingProvider) -> None:
    if not provider.capabilities.checkpoints:
        return
    stored = session.exec(select(JobCheckpoint).where(JobCheckpoint.job_id == job.id)).all()
    have_steps = {c.step for c in stored}
    have_ids = {c.provider_checkpoint_id for c in stored if c.provider_checkpoint_id}
    for cp in provider.list_checkpoints(job.provider_job_id):
        # Skipped, not an IntegrityError: a checkpoint we hold (by step or by the provider's id), or one answered twice.
        if cp.step not in have_steps and cp.id not in have_ids:
            have_steps.add(cp.step)
            have_ids.add(cp.id)
            session.add(
                JobCheckpoint(
                    job_id=job.id,
                    step=cp.step,
                    model=cp.model,
                    provider_checkpoint_id=cp.id,
                    metrics=cp.metrics,
                    created_at=cp.created_at or utcnow(),
                )
            )


def fetch_result_files(session: Session, job: Job, pj: ProviderJob, provider: TrainingProvider) -> None:
    """Keep the result files' per-step metrics: events may have gaps, the result file is the complete curve.

    A result file we cannot get does not hold back the job's success (the model is there); it is noted on the job."""
    if not pj.result_files or not isinstance(provider, HasResultFiles):
        return
    known = set(
        session.exec(
            select(JobEvent.provider_event_id).where(
                JobEvent.job_id == job.id, JobEvent.type == metrics.RESULT_FILE_EVENT
            )
        )
    )
    if all(f"result_file:{f}" in known for f in pj.result_files):
        return
    try:
        files = provider.result_metrics(pj)
    except ProviderError as exc:
        log.warning("result files of job %s unavailable: %s", job.id, exc.message)
        session.add(
            JobEvent(
                job_id=job.id,
                source="service",
                type="message",
                level="warning",
                message=f"result file unavailable, metrics come from events only: {exc.message}",
            )
        )
        return
    for rf in files:
        if f"result_file:{rf.file_id}" in known:
            continue
        session.add(
            JobEvent(
                job_id=job.id,
                source="provider",
                type=metrics.RESULT_FILE_EVENT,
                message=f"result file {rf.file_id}: {len(rf.rows)} steps",
                data=metrics.result_event_data(rf.file_id, rf.columns, rf.rows),
                provider_event_id=f"result_file:{rf.file_id}",
            )
        )
