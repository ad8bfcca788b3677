"""When to retry a webhook delivery, and when to give up on an endpoint. Data and pure functions, no I/O.

The default delays follow the common Standard Webhooks practice (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, then every
10 h) and stretch the attempts of one event over about three days, so a receiver that is down for a weekend still
gets everything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

_S = timedelta(seconds=1)
_M = timedelta(minutes=1)
_H = timedelta(hours=1)

DEFAULT_DELAYS: tuple[timedelta, ...] = (
    0 * _S,
    5 * _S,
    5 * _M,
    30 * _M,
    2 * _H,
    5 * _H,
    10 * _H,
    10 * _H,
    10 * _H,
    10 * _H,
    10 * _H,
    10 * _H,
)


@dataclass(frozen=True)
class RetrySchedule:
    """``delays[i]`` is the wait before attempt ``i + 1``, counted from when attempt ``i`` failed.

    ``jitter`` spreads each wait by up to ±that fraction, so events that failed together (one receiver outage) do not
    all come back in the same second. ``max_retry_after`` caps how far a receiver's ``retry-after`` can push us.
    """

    delays: tuple[timedelta, ...] = DEFAULT_DELAYS
    jitter: float = 0.0
    max_retry_after: timedelta = 10 * _H

    def __post_init__(self) -> None:
        if not self.delays:
            raise ValueError("a retry schedule needs at least one attempt")
        if any(d < timedelta(0) for d in self.delays):
            raise ValueError("retry delays must not be negative")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be a fraction in [0, 1)")

    @property
    def max_attempts(self) -> int:
        return len(self.delays)

    @property
    def span(self) -> timedelta:
        """From the first attempt to the last, without jitter or retry-after."""
        return sum(self.delays[1:], timedelta(0))

    def first_attempt_at(self, now: datetime) -> datetime:
        return now + self.delays[0]

    def next_attempt_at(
        self,
        attempt: int,
        now: datetime,
        retry_after: float | timedelta | None = None,
        *,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to make attempt ``attempt + 1`` after attempt number ``attempt`` (1-based) failed at ``now``.

        None means the schedule is exhausted: give up on this delivery. A ``retry-after`` from the receiver is
        honoured when it asks for more patience than the schedule (never less), up to ``max_retry_after``.
        """
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        if attempt >= len(self.delays):
            return None
        delay = self.delays[attempt]
        if self.jitter and delay > timedelta(0):
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            delay = delay * (1.0 + spread)
        if retry_after is not None:
            asked = retry_after if isinstance(retry_after, timedelta) else timedelta(seconds=max(0.0, retry_after))
            delay = max(delay, min(asked, self.max_retry_after))
        return now + delay


DEFAULT_SCHEDULE = RetrySchedule()


def next_attempt_at(
    attempt: int, now: datetime, retry_after: float | timedelta | None = None, *, schedule: RetrySchedule | None = None
) -> datetime | None:
    """``DEFAULT_SCHEDULE.next_attempt_at``; see RetrySchedule."""
    return (schedule or DEFAULT_SCHEDULE).next_attempt_at(attempt, now, retry_after)


@dataclass(frozen=True)
class DisablePolicy:
    """When an endpoint that keeps failing is switched off (the lead emits an event when it is).

    Either every attempt has failed for ``failing_for`` (no success since ``failing_since``), or
    ``max_exhausted_in_a_row`` events in a row used up their whole schedule without one success.
    """

    failing_for: timedelta = timedelta(days=5)
    max_exhausted_in_a_row: int = 20

    def disable_reason(self, failing_since: datetime | None, now: datetime, exhausted_in_a_row: int = 0) -> str | None:
        """A human reason to disable the endpoint now, or None to keep it enabled."""
        if failing_since is not None and now - failing_since >= self.failing_for:
            days = (now - failing_since) / timedelta(days=1)
            return f"every delivery attempt has failed for {days:.1f} days (since {failing_since.isoformat()})"
        if self.max_exhausted_in_a_row and exhausted_in_a_row >= self.max_exhausted_in_a_row:
            return f"{exhausted_in_a_row} events in a row failed after all retries"
        return None


DEFAULT_DISABLE_POLICY = DisablePolicy()


def failing_since_after(failing_since: datetime | None, now: datetime, *, succeeded: bool) -> datetime | None:
    """The endpoint's new ``failing_since`` after an attempt at ``now``: cleared by a success, kept or started by a
    failure."""
    if succeeded:
        return None
    return failing_since if failing_since is not None else now
