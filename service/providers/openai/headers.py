"""What OpenAI's response headers say about waiting: ``retry-after`` / ``retry-after-ms`` and ``x-ratelimit-*``.

Read here once for the jobs provider, batch evaluations and realtime generation alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from service.net import retry_after

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: str | None) -> float | None:
    """Seconds from a Go-style duration as in ``x-ratelimit-reset-*`` ("6m0s", "1.5s", "12ms", "1h2m3s") or a bare
    number of seconds; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                return None
            seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if pos != len(text) or pos == 0:
            return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (preferred, OpenAI's) or ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    when = None if now is None else datetime.fromtimestamp(now, UTC)
    return retry_after.parse_retry_after(headers.get("retry-after"), when)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(float(raw))
    except ValueError:
        return None


@dataclass(frozen=True)
class RateLimitHeaders:
    """What one response said about the limits (None: header absent)."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateLimitHeaders:
        return cls(
            limit_requests=_int_header(headers, "x-ratelimit-limit-requests"),
            limit_tokens=_int_header(headers, "x-ratelimit-limit-tokens"),
            remaining_requests=_int_header(headers, "x-ratelimit-remaining-requests"),
            remaining_tokens=_int_header(headers, "x-ratelimit-remaining-tokens"),
            reset_requests_s=parse_duration(headers.get("x-ratelimit-reset-requests")),
            reset_tokens_s=parse_duration(headers.get("x-ratelimit-reset-tokens")),
        )

    def seconds_until(self, kind: str, needed: float) -> float | None:
        """Estimated wait until ``needed`` units of ``kind`` ("requests"/"tokens") are available, from the reset
        header (time until the bucket is full again), assuming it refills evenly."""
        limit = getattr(self, f"limit_{kind}")
        remaining = getattr(self, f"remaining_{kind}")
        reset = getattr(self, f"reset_{kind}_s")
        if limit is None or remaining is None or reset is None or limit <= remaining:
            return None
        missing = max(0.0, needed - remaining)
        return reset * min(1.0, missing / (limit - remaining))
