"""Cursor pagination as OpenAI does it: `after` names the last object of the previous page."""

from __future__ import annotations

from typing import Any, TypeVar

from .errors import invalid

T = TypeVar("T")


def paginate(items: list[T], after: str | None, limit: int) -> tuple[list[T], bool]:
    """Items following the one whose `id` is `after` (in the order given), at most `limit`, and whether more follow."""
    start = 0
    if after is not None:
        ids: list[Any] = [getattr(item, "id", None) for item in items]
        if after not in ids:
            raise invalid(f"Invalid 'after': no object with id '{after}' in this list.", param="after")
        start = ids.index(after) + 1
    chosen = items[start : start + limit]
    return chosen, start + limit < len(items)
