"""The work engine on real rows: claims and leases, batch claims, the back-off schedule, the bound on failed attempts
(the object ends failed with the last error) and cancel winning over back-off. Time is travelled with
``service.clock``, never slept."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from api_schemas.evaluations import EvaluationStatus
from service import clock
from service.clock import utcnow
from service.datasets.models import Dataset
from service.datasets.service import DATASETS, validate_task
from service.db import session_scope
from service.evaluations import run as evaluation_run
from service.evaluations.models import Evaluation
from service.evaluations.service import EVALUATIONS, request_cancel
from service.events.models import Event
from service.settings import get_settings, reset_settings_cache
from service.work import backoff
from service.work.batch import claim_batch, due_rows
from service.work.kind import WorkKind
from service.work.lease import back_off, claim, leased


def _dataset(project_id: str, *, due: bool = True, n: int = 0) -> str:
    with session_scope() as s:
        ds = Dataset(
            project_id=project_id,
            filename=f"x{n}.jsonl",
            status="validating",
            sha256=f"{n:064d}",  # no such blob: validating it raises
            size_bytes=1,
            next_run_at=utcnow() if due else utcnow() + timedelta(hours=1),
        )
        s.add(ds)
        return ds.id


def _get(model, row_id):  # type: ignore[no-untyped-def]
    with session_scope() as s:
        return s.get(model, row_id)


@pytest.fixture
def bound(settings, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FINETUNE_MAX_STEP_ATTEMPTS", "3")
    reset_settings_cache()
    assert get_settings().max_step_attempts == 3
    return 3


def test_a_claim_is_exclusive_until_its_lease_expires(settings, project):
    row_id = _dataset(project["id"])
    first = claim(DATASETS, row_id, lease_s=60)
    assert first is not None and claim(DATASETS, row_id) is None
    assert first.renew()

    clock.travel(timedelta(seconds=61))  # the first worker died or stalled: its lease runs out
    second = claim(DATASETS, row_id, lease_s=60)
    assert second is not None
    assert not first.renew() and not first.release()  # the lease is lost, and nothing it writes lands
    assert second.release()
    assert _get(Dataset, row_id).lease_owner is None


def test_rows_not_due_are_left_alone_unless_forced(settings, project):
    row_id = _dataset(project["id"], due=False)
    assert claim(DATASETS, row_id) is None
    with session_scope() as s:
        assert due_rows(s, DATASETS) == []
    assert claim(DATASETS, row_id, force=True) is not None


def test_a_step_whose_lease_was_lost_is_discarded(settings, project):
    row_id = _dataset(project["id"])
    with leased(DATASETS, row_id, lease_s=60) as got:
        assert got is not None
        _session, ds = got
        ds.filename = "written by a worker that was too slow"
        clock.travel(timedelta(seconds=61))
        assert claim(DATASETS, row_id) is not None  # another worker takes the row over
    assert _get(Dataset, row_id).filename == "x0.jsonl"


def test_batch_claims_split_due_rows_between_owners(settings, project):
    ids = [_dataset(project["id"], n=n) for n in range(5)]
    _dataset(project["id"], due=False, n=9)

    def take(owner: str, limit: int, pick=None):  # type: ignore[no-untyped-def]
        with session_scope() as s:
            claimed, seen = claim_batch(
                s, DATASETS, owner, limit, lease_s=60, make=lambda i: i, row_id=lambda i: i, window=10, pick=pick
            )
        return claimed, seen

    a, seen = take("a", 3)
    assert len(a) == 3 and set(seen) == set(ids)  # oldest first, the row not due is never seen
    b, seen = take("b", 3, pick=lambda rows: rows[:1])
    assert len(b) == 1 and set(seen) == set(ids) - set(a)
    c, _ = take("c", 10)
    assert sorted(a + b + c) == sorted(ids)
    with session_scope() as s:
        owners = {d.id: d.lease_owner for d in s.exec(select(Dataset).where(Dataset.id.in_(ids)))}
    assert owners == {**dict.fromkeys(a, "a"), **dict.fromkeys(b, "b"), **dict.fromkeys(c, "c")}


def test_the_back_off_schedule_grows_and_honours_retry_after():
    assert [backoff.delay_s(n) for n in range(1, 9)] == [5, 15, 60, 300, 900, 1800, 1800, 1800]
    assert backoff.delay_s(2, scale=0.01) == pytest.approx(0.15)
    assert backoff.delay_s(1, retry_after=42) == 42


def test_a_step_that_keeps_failing_fails_its_object_after_the_bound(bound, project):
    row_id = _dataset(project["id"])
    for attempt in range(1, bound):
        with pytest.raises(FileNotFoundError):
            validate_task(row_id, get_settings())
        ds = _get(Dataset, row_id)
        assert (ds.status, ds.attempts, ds.lease_owner) == ("validating", attempt, None)
        assert ds.last_error.startswith("FileNotFoundError") and ds.last_error_at is not None
        wait = ds.next_run_at - utcnow()
        assert timedelta(seconds=backoff.delay_s(attempt) - 5) < wait <= timedelta(seconds=backoff.delay_s(attempt))
        validate_task(row_id, get_settings())  # not due yet: nothing happens
        assert _get(Dataset, row_id).attempts == attempt
        clock.travel(wait + timedelta(seconds=1))

    with pytest.raises(FileNotFoundError):
        validate_task(row_id, get_settings())
    ds = _get(Dataset, row_id)
    assert (ds.status, ds.attempts, ds.next_run_at) == ("invalid", bound, None)
    (issue,) = ds.report["issues"]
    assert issue["code"] == "step_failed" and "3 times in a row" in issue["message"]
    assert "FileNotFoundError" in issue["message"]
    with session_scope() as s:
        (event,) = s.exec(select(Event).where(Event.type == "dataset.invalid")).all()
    assert event.data["object"]["id"] == row_id


def test_a_success_resets_the_count_and_keeps_the_last_error(settings, project):
    row_id = _dataset(project["id"])
    with pytest.raises(FileNotFoundError):
        validate_task(row_id, settings)
    clock.travel(timedelta(seconds=6))
    with leased(DATASETS, row_id) as got:
        assert got is not None
        got[1].next_run_at = None  # a step that went well
    ds = _get(Dataset, row_id)
    assert ds.attempts == 0 and ds.last_error.startswith("FileNotFoundError") and ds.last_error_at is not None


def test_a_pending_cancel_wins_over_back_off(settings, project):
    """A kind that can cancel ends a failing row cancelled at once instead of counting the failure."""
    cancelled: list[tuple[str, str]] = []

    def cancel(_s, row, error):  # type: ignore[no-untyped-def]
        cancelled.append((row.id, error))

    kind = WorkKind("test", Dataset, "test.step", cancel_requested=lambda row: True, cancel=cancel)
    row_id = _dataset(project["id"])
    lease = claim(kind, row_id)
    assert lease is not None
    back_off(kind, row_id, lease.owner, RuntimeError("endpoint answered nonsense"))
    ds = _get(Dataset, row_id)
    assert cancelled == [(row_id, "RuntimeError: endpoint answered nonsense")]
    assert (ds.attempts, ds.next_run_at, ds.lease_owner) == (0, None, None)


def _evaluation(project_id: str, **fields) -> str:  # type: ignore[no-untyped-def]
    dataset_id = _dataset(project_id, due=False, n=7)
    with session_scope() as s:
        ev = Evaluation(
            project_id=project_id,
            status="queued",
            dataset_id=dataset_id,
            config={"dataset_id": dataset_id, "seed": 0, "candidates": [{"name": "a"}], "graders": []},
            progress={},
            next_run_at=utcnow(),
            **fields,
        )
        s.add(ev)
        return ev.id


def test_an_evaluation_that_keeps_failing_ends_failed_with_the_last_error(bound, project):
    evaluation_id = _evaluation(project["id"])  # its test set's file is missing: every run raises
    for _ in range(bound):
        with pytest.raises(FileNotFoundError):
            evaluation_run.run(evaluation_id)
        clock.travel(timedelta(hours=1))
    ev = _get(Evaluation, evaluation_id)
    assert ev.status == EvaluationStatus.failed and ev.next_run_at is None and ev.attempts == bound
    assert ev.error["code"] == "step_failed" and "FileNotFoundError" in ev.error["message"]
    with session_scope() as s:
        assert s.exec(select(Event.type).where(Event.type == "evaluation.failed")).all() == ["evaluation.failed"]


def test_cancelling_a_backing_off_evaluation_ends_it_cancelled_at_once(settings, project, monkeypatch):
    evaluation_id = _evaluation(project["id"])
    with pytest.raises(FileNotFoundError):
        evaluation_run.run(evaluation_id)
    ev = _get(Evaluation, evaluation_id)
    assert ev.status == EvaluationStatus.running and ev.next_run_at > utcnow()  # backing off

    with session_scope() as s:
        request_cancel(s, project["id"], evaluation_id)
    assert _get(Evaluation, evaluation_id).next_run_at <= utcnow()  # due now, whatever the back-off said

    # Whatever keeps failing (here grading what little there is) does not hold the cancel back.
    def broken_summary(*_a, **_k):  # type: ignore[no-untyped-def]
        raise ValueError("grader cannot resolve its schema")

    monkeypatch.setattr("service.evaluations.summary.summarize_evaluation", broken_summary)
    with pytest.raises(ValueError):
        evaluation_run.run(evaluation_id)
    ev = _get(Evaluation, evaluation_id)
    assert ev.status == EvaluationStatus.cancelled and ev.next_run_at is None and ev.lease_owner is None
    assert "grader cannot resolve its schema" in ev.progress["reason"]
    assert EVALUATIONS.cancel_requested is not None and EVALUATIONS.cancel_requested(ev)
