"""A provider that answers oddly, but validly: pages that never advance, a list that does not show what was just
created, an answer that cannot be read right after a create. Jobs make a bounded number of requests, show a clear
error on the job, never create a second provider job, and succeed once the provider behaves."""

from __future__ import annotations

from helpers import wait_for

EVENTS = "GET /v1/fine_tuning/jobs/{job_id}/events"
JOB = "GET /v1/fine_tuning/jobs/{job_id}"


def _create(stack, dataset_id: str) -> str:  # type: ignore[no-untyped-def]
    body = {"provider": "openai", "model": "gpt-4.1-mini", "training_dataset_id": dataset_id}
    r = stack.client.post("/v1/jobs", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _row(job_id: str):  # type: ignore[no-untyped-def]
    from service.db import session_scope
    from service.jobs.models import Job

    with session_scope() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def _finished(stack, job_id: str, timeout: float = 90.0) -> dict:  # type: ignore[no-untyped-def]
    def check():  # type: ignore[no-untyped-def]
        job = stack.get(f"/v1/jobs/{job_id}")
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(check, timeout=timeout, interval=0.1)


def test_event_pages_that_never_advance(stack, chat_jsonl) -> None:  # type: ignore[no-untyped-def]
    emu = stack.emulator
    dataset = stack.upload(chat_jsonl)["id"]
    # Every events answer: the first page again, has_more true, its newest event repeated at the end.
    rule = emu.add_fault(r"/events$", "repeat_page", probability=1.0)
    job_id = _create(stack, dataset)

    failing = wait_for(lambda: (j := _row(job_id)).attempts >= 3 and j, timeout=60, interval=0.05)
    events_calls, job_calls = emu.calls().get(EVENTS, 0), emu.calls().get(JOB, 0)
    # The error is on the job, clear, and the job is not given up: its provider job is recorded.
    assert "provider answered a page that does not advance" in (failing.last_error or ""), failing.last_error
    assert failing.provider_job_id and failing.status != "failed"
    # Bounded: each failed step lists events twice (the page, and the repeat that shows it does not advance, even
    # while the running job adds events) and reads the job once; a step still in flight may have made its calls
    # before counting its attempt.
    attempts = failing.attempts
    assert 2 * attempts <= events_calls <= 2 * attempts + 2, (attempts, events_calls)
    assert job_calls <= attempts + 1, (attempts, job_calls)

    emu.clear_faults()
    done = _finished(stack, job_id)
    assert done["status"] == "succeeded", done
    assert rule.fired >= 2 * attempts
    assert _row(job_id).attempts == 0

    # Each provider event stored once, however often it was answered.
    from sqlmodel import select

    from service.db import session_scope
    from service.jobs.models import JobEvent

    with session_scope() as s:
        ids = s.exec(
            select(JobEvent.provider_event_id).where(JobEvent.job_id == job_id, JobEvent.source == "provider")
        ).all()
    assert ids and len(ids) == len(set(ids))
    assert len(emu.state()["jobs"]) == 1


def test_failure_right_after_create_makes_one_provider_job(stack, chat_jsonl) -> None:  # type: ignore[no-untyped-def]
    emu = stack.emulator
    dataset = stack.upload(chat_jsonl)["id"]
    # The job list does not show what was just created (reconciliation by our tag cannot find it), and the first
    # answer after the create cannot be read: the step fails after the provider job exists.
    emu.add_fault(r"^GET /v1/fine_tuning/jobs$", "empty_list", probability=1.0)
    broken = emu.add_fault(r"/events$", "act_then_truncate", count=1)
    job_id = _create(stack, dataset)

    done = _finished(stack, job_id)
    assert broken.fired == 1
    assert done["status"] == "succeeded", done
    jobs = emu.state()["jobs"]
    assert len(jobs) == 1, [j["id"] for j in jobs]
    assert done["provider_job_id"] == jobs[0]["id"]
    assert emu.calls().get("POST /v1/fine_tuning/jobs") == 1
