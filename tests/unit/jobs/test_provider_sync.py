"""Provider events and checkpoints are stored once each: one answered twice (in one answer or in two syncs) is
skipped, never an IntegrityError that would fail the step and roll back what it did."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import select

from service.providers.base import Capabilities, ProviderCheckpoint, ProviderEvent


class Repeating:
    """A provider whose answers repeat items: the same event twice in one list, a checkpoint twice."""

    name = "fake"
    capabilities = Capabilities(events=True, checkpoints=True)

    def list_events(self, provider_job_id: str, *, after: str | None) -> list[ProviderEvent]:
        at = datetime(2026, 1, 1, tzinfo=UTC)
        first = ProviderEvent(id="ev_1", created_at=at, message="created")
        second = ProviderEvent(id="ev_2", created_at=at, message="running")
        return [first, second, first, second]

    def list_checkpoints(self, provider_job_id: str) -> list[ProviderCheckpoint]:
        cp = ProviderCheckpoint(id="ftckpt_1", step=10, model="ft:m:ckpt-step-10")
        renumbered = ProviderCheckpoint(id="ftckpt_1", step=11, model="ft:m:ckpt-step-10")
        return [cp, cp, renumbered, ProviderCheckpoint(id="ftckpt_2", step=20)]


def _job(session, project_id: str):  # type: ignore[no-untyped-def]
    from service.datasets.models import Dataset
    from service.jobs.models import Job

    ds = Dataset(project_id=project_id, filename="t.jsonl", status="ready", sha256="c" * 64, size_bytes=1)
    session.add(ds)
    session.flush()
    job = Job(
        project_id=project_id,
        provider="openai",
        base_model="gpt-4o-mini",
        method={"type": "supervised"},
        training_dataset_id=ds.id,
        status="running",
        provider_job_id="ftjob-1",
    )
    session.add(job)
    session.flush()
    return job


def test_repeated_events_and_checkpoints_are_stored_once(settings, project) -> None:  # type: ignore[no-untyped-def]
    from service.db import session_scope
    from service.jobs.models import JobCheckpoint, JobEvent
    from service.jobs.sync import sync_checkpoints as _sync_checkpoints
    from service.jobs.sync import sync_events as _sync_events

    provider = Repeating()
    with session_scope(settings) as session:
        job = _job(session, project["id"])
        for _ in range(2):  # a second sync answers the same items again
            _sync_events(session, job, provider)  # type: ignore[arg-type]
            _sync_checkpoints(session, job, provider)  # type: ignore[arg-type]
            session.flush()
        events = session.exec(select(JobEvent.provider_event_id).where(JobEvent.job_id == job.id)).all()
        checkpoints = session.exec(
            select(JobCheckpoint.provider_checkpoint_id, JobCheckpoint.step).where(JobCheckpoint.job_id == job.id)
        ).all()
    assert sorted(e for e in events if e) == ["ev_1", "ev_2"]
    assert sorted(checkpoints) == [("ftckpt_1", 10), ("ftckpt_2", 20)]
