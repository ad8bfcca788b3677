"""Which provider answers are flagged as anomalies, and that a flag once seen stays on the job."""

from __future__ import annotations

from api_schemas.jobs import JobStatus
from service.jobs.anomalies import merge, provider_anomalies
from service.providers.base import ProviderJob


def _job(status: JobStatus | None, **fields) -> ProviderJob:  # type: ignore[no-untyped-def]
    return ProviderJob(id="ftjob-1", raw_status=str(status), status=status, **fields)


def test_plausible_answers_have_none() -> None:
    assert provider_anomalies(_job(JobStatus.running, trained_tokens=None)) == []
    assert provider_anomalies(_job(JobStatus.succeeded, fine_tuned_model="ft:x", trained_tokens=0)) == []
    assert provider_anomalies(_job(JobStatus.failed, error={"code": "x", "message": "bad file"})) == []
    assert provider_anomalies(_job(None, trained_tokens=10)) == []


def test_each_odd_value_is_named_with_its_field_and_value() -> None:
    found = provider_anomalies(_job(JobStatus.succeeded, fine_tuned_model=None, trained_tokens=-5))
    assert [(a["code"], a["field"], a["value"]) for a in found] == [
        ("negative_trained_tokens", "trained_tokens", -5),
        ("succeeded_without_model", "fine_tuned_model", None),
    ]
    # An error object without a message says nothing either.
    (failed,) = provider_anomalies(_job(JobStatus.failed, error={"code": "x", "message": ""}))
    assert failed["code"] == "failed_without_error"
    # A running job already reporting negative tokens is flagged before it ends.
    assert [a["code"] for a in provider_anomalies(_job(JobStatus.running, trained_tokens=-1))] == [
        "negative_trained_tokens"
    ]


def test_merge_keeps_what_was_seen_once() -> None:
    first = provider_anomalies(_job(JobStatus.running, trained_tokens=-1))
    later = provider_anomalies(_job(JobStatus.succeeded, fine_tuned_model=None, trained_tokens=3))
    merged = merge(merge(None, first), later)
    assert [a["code"] for a in merged] == ["negative_trained_tokens", "succeeded_without_model"]
    assert merge(merged, first) == merged
