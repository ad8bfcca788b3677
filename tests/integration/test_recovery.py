"""Lost queue messages and dead workers lose no work: the sweeper finds due and stuck rows in the database."""

from __future__ import annotations

from datetime import timedelta

from helpers import wait_for


def _job_status(stack, job_id):
    return stack.get(f"/v1/jobs/{job_id}")["status"]


def test_job_completes_when_every_message_is_lost(stack, chat_jsonl, monkeypatch):
    from service import queue

    dropped = []
    real_enqueue = queue.enqueue

    # The API's wake-up call vanishes (as with a flushed broker); only the sweeper's later re-sends get through.
    def lossy(task, *args, **kw):
        if task == "jobs.advance" and not dropped:
            dropped.append(args)
            return True
        return real_enqueue(task, *args, **kw)

    monkeypatch.setattr(queue, "enqueue", lossy)
    ds = stack.upload(chat_jsonl)
    r = stack.client.post(
        "/v1/jobs",
        json={"training_dataset_id": ds["id"], "provider": "openai", "model": "gpt-4.1-mini"},
        headers=stack.headers,
    )
    job_id = r.json()["id"]
    assert dropped == [(job_id,)]
    wait_for(lambda: _job_status(stack, job_id) == "succeeded", timeout=40)
    assert len(stack.emulator.state()["jobs"]) == 1


def test_stuck_row_is_reclaimed_after_its_lease_expires(stack, chat_jsonl, settings):
    from service.clock import utcnow
    from service.db import session_scope
    from service.jobs.models import Job

    ds = stack.upload(chat_jsonl)
    with session_scope(settings) as s:
        # A worker took the job and died: its lease is still live for a moment, then expires.
        job = Job(
            project_id=stack.project_id,
            provider="openai",
            base_model="gpt-4.1-mini",
            method={"type": "supervised", "hyperparameters": {}},
            training_dataset_id=ds["id"],
            status="created",
            next_run_at=utcnow(),
            lease_owner="dead-worker",
            lease_expires_at=utcnow() + timedelta(seconds=1.5),
        )
        s.add(job)
    assert _job_status(stack, job.id) == "created"
    wait_for(lambda: _job_status(stack, job.id) == "succeeded", timeout=40)


def test_duplicate_messages_do_one_step(settings, project, chat_jsonl):
    """Two workers handed the same row at once: only one holds the lease."""
    from service.clock import utcnow
    from service.datasets.models import Dataset
    from service.datasets.service import DATASETS
    from service.db import session_scope
    from service.work.lease import claim

    with session_scope(settings) as s:
        ds = Dataset(
            project_id=project["id"],
            filename="x",
            status="validating",
            sha256="0" * 64,
            size_bytes=1,
            next_run_at=utcnow(),
        )
        s.add(ds)
    first = claim(DATASETS, ds.id)
    second = claim(DATASETS, ds.id)
    assert first is not None and second is None
    assert first.renew()
