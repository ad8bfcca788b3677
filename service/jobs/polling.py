"""How often a job's provider is asked again: often while things change fast, rarely while training."""

from __future__ import annotations

from datetime import datetime

from api_schemas.jobs import JobStatus
from service.settings import Settings

S = JobStatus


# With provider webhooks on, the end of a job is pushed to us: polls while queued or training only bring progress
# (events, metrics) and stand guard in case a webhook is lost, so they can be this much rarer.
WEBHOOK_POLL_FACTOR = 4.0


def poll_delay(
    status: S, estimated_finish: datetime | None, now: datetime, settings: Settings, *, webhooks: bool = False
) -> float:
    """How long to wait before asking the provider again: often while things change fast, rarely while training."""
    base = {S.submitted: 2.0, S.validating_files: 5.0, S.queued: 15.0, S.running: 30.0, S.paused: 120.0}.get(
        status, 30.0
    )
    if status == S.running and estimated_finish is not None:
        remaining = (estimated_finish - now).total_seconds()
        # Poll about ten times over the remaining time, more often near the end.
        base = max(10.0, min(120.0, remaining / 10)) if remaining > 0 else 10.0
    if webhooks and status in (S.queued, S.running):
        base *= WEBHOOK_POLL_FACTOR
    return max(settings.poll_min_s, min(settings.poll_max_s, base * settings.poll_scale))
