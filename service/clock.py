"""One place for "now", so tests can travel in time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def utcnow() -> datetime:
    return datetime.now(UTC) + _offset


def travel(delta: timedelta) -> None:
    global _offset
    _offset += delta


def reset() -> None:
    global _offset
    _offset = timedelta(0)


def from_unix(value: object) -> datetime | None:
    """A provider's Unix timestamp (seconds) as an aware UTC datetime; None for absent, zero or unreadable values,
    which providers send for "not yet"."""
    if value in (None, 0, ""):
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None
