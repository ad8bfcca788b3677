from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from service.webhooks.schedule import (
    DEFAULT_DISABLE_POLICY,
    DEFAULT_SCHEDULE,
    DisablePolicy,
    RetrySchedule,
    failing_since_after,
    next_attempt_at,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_default_delays_are_the_documented_ones() -> None:
    assert [d.total_seconds() for d in DEFAULT_SCHEDULE.delays] == [
        0,
        5,
        5 * 60,
        30 * 60,
        2 * 3600,
        5 * 3600,
        10 * 3600,
        10 * 3600,
        10 * 3600,
        10 * 3600,
        10 * 3600,
        10 * 3600,
    ]
    assert DEFAULT_SCHEDULE.max_attempts == 12
    assert timedelta(days=2.5) < DEFAULT_SCHEDULE.span < timedelta(days=3.5)
    assert DEFAULT_SCHEDULE.first_attempt_at(T0) == T0


def test_next_attempt_after_each_failure() -> None:
    assert next_attempt_at(1, T0) == T0 + timedelta(seconds=5)
    assert next_attempt_at(2, T0) == T0 + timedelta(minutes=5)
    assert next_attempt_at(3, T0) == T0 + timedelta(minutes=30)
    assert next_attempt_at(4, T0) == T0 + timedelta(hours=2)
    assert next_attempt_at(5, T0) == T0 + timedelta(hours=5)
    assert next_attempt_at(6, T0) == T0 + timedelta(hours=10)
    assert next_attempt_at(11, T0) == T0 + timedelta(hours=10)
    assert next_attempt_at(12, T0) is None
    assert next_attempt_at(40, T0) is None
    with pytest.raises(ValueError, match="start at 1"):
        next_attempt_at(0, T0)


def test_walking_the_schedule_by_time_travel_gives_up_after_about_three_days() -> None:
    now, attempts = T0, 1
    while (due := next_attempt_at(attempts, now)) is not None:
        now, attempts = due, attempts + 1
    assert attempts == 12
    assert now - T0 == DEFAULT_SCHEDULE.span


def test_retry_after_can_only_lengthen_the_wait_and_is_capped() -> None:
    assert next_attempt_at(1, T0, retry_after=60) == T0 + timedelta(seconds=60)
    assert next_attempt_at(3, T0, retry_after=60) == T0 + timedelta(minutes=30)
    assert next_attempt_at(1, T0, retry_after=timedelta(minutes=2)) == T0 + timedelta(minutes=2)
    assert next_attempt_at(1, T0, retry_after=10**9) == T0 + timedelta(hours=10)
    assert next_attempt_at(1, T0, retry_after=-5) == T0 + timedelta(seconds=5)
    assert next_attempt_at(12, T0, retry_after=60) is None


def test_jitter_spreads_within_bounds_and_is_reproducible() -> None:
    schedule = RetrySchedule(jitter=0.1)
    values = [schedule.next_attempt_at(4, T0, rng=random.Random(seed)) for seed in range(200)]
    assert all(v is not None for v in values)
    seconds = [(v - T0).total_seconds() for v in values if v is not None]
    assert min(seconds) >= 7200 * 0.9 and max(seconds) <= 7200 * 1.1
    assert len(set(seconds)) > 100
    assert schedule.next_attempt_at(4, T0, rng=random.Random(7)) == schedule.next_attempt_at(
        4, T0, rng=random.Random(7)
    )
    zero_first = RetrySchedule(delays=(timedelta(0), timedelta(0), timedelta(seconds=5)), jitter=0.5)
    assert zero_first.next_attempt_at(1, T0, rng=random.Random(1)) == T0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delays": ()}, "at least one"),
        ({"delays": (timedelta(seconds=-1),)}, "negative"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_invalid_schedules_are_rejected(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        RetrySchedule(**kwargs)


def test_endpoint_failing_for_five_days_is_disabled() -> None:
    assert DEFAULT_DISABLE_POLICY.disable_reason(None, T0) is None
    assert DEFAULT_DISABLE_POLICY.disable_reason(T0, T0 + timedelta(days=4, hours=23)) is None
    reason = DEFAULT_DISABLE_POLICY.disable_reason(T0, T0 + timedelta(days=5))
    assert reason is not None and "5.0 days" in reason


def test_many_exhausted_events_in_a_row_disable_the_endpoint() -> None:
    policy = DisablePolicy(failing_for=timedelta(days=5), max_exhausted_in_a_row=3)
    assert policy.disable_reason(T0, T0 + timedelta(hours=1), exhausted_in_a_row=2) is None
    assert policy.disable_reason(T0, T0 + timedelta(hours=1), exhausted_in_a_row=3) == (
        "3 events in a row failed after all retries"
    )
    assert DisablePolicy(max_exhausted_in_a_row=0).disable_reason(T0, T0, exhausted_in_a_row=99) is None


def test_failing_since_tracks_the_start_of_the_current_failure_streak() -> None:
    first = failing_since_after(None, T0, succeeded=False)
    assert first == T0
    assert failing_since_after(first, T0 + timedelta(days=1), succeeded=False) == T0
    assert failing_since_after(first, T0 + timedelta(days=2), succeeded=True) is None
    assert failing_since_after(None, T0, succeeded=True) is None
