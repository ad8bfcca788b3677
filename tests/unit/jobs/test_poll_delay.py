"""Polling cadence: fast while things change, slow while training, slower still when webhooks bring the end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api_schemas.jobs import JobStatus as S
from service.jobs.polling import WEBHOOK_POLL_FACTOR, poll_delay
from service.settings import Settings

NOW = datetime(2026, 11, 1, tzinfo=UTC)
SETTINGS = Settings(poll_scale=1.0, poll_min_s=1.0, poll_max_s=300.0)


def test_cadence_by_status():
    assert poll_delay(S.validating_files, None, NOW, SETTINGS) == 5.0
    assert poll_delay(S.queued, None, NOW, SETTINGS) == 15.0
    assert poll_delay(S.running, None, NOW, SETTINGS) == 30.0
    # Guided by the provider's estimate: about ten looks over what remains, never under 10 s or over 120 s.
    assert poll_delay(S.running, NOW + timedelta(minutes=50), NOW, SETTINGS) == 120.0
    assert poll_delay(S.running, NOW + timedelta(minutes=5), NOW, SETTINGS) == 30.0
    assert poll_delay(S.running, NOW - timedelta(minutes=5), NOW, SETTINGS) == 10.0


def test_webhooks_relax_polling_only_while_queued_or_training():
    for status in (S.queued, S.running):
        assert poll_delay(status, None, NOW, SETTINGS, webhooks=True) == WEBHOOK_POLL_FACTOR * poll_delay(
            status, None, NOW, SETTINGS
        )
    # Validation is short and its outcome matters at once; the cap still holds.
    assert poll_delay(S.validating_files, None, NOW, SETTINGS, webhooks=True) == 5.0
    assert poll_delay(S.running, NOW + timedelta(hours=5), NOW, SETTINGS, webhooks=True) == 300.0
