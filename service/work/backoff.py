"""The one retry schedule for a step that failed, and the bound on how often the same step may fail."""

from __future__ import annotations

from service.settings import Settings, get_settings

# Attempt n (1-based) waits SCHEDULE_S[min(n, len) - 1] seconds before the next try.
SCHEDULE_S = (5, 15, 60, 300, 900, 1800)


def delay_s(attempt: int, *, scale: float = 1.0, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt``: the schedule (times ``scale``), or longer when the other side
    asked for it (``retry_after``)."""
    base = SCHEDULE_S[max(0, min(attempt, len(SCHEDULE_S)) - 1)] * scale
    return max(base, retry_after or 0.0)


def max_attempts(settings: Settings | None = None) -> int:
    """Consecutive failed attempts of one step before its object is failed (at least one)."""
    return max(1, (settings or get_settings()).max_step_attempts)
