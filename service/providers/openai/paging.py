"""Walking OpenAI's cursor-paged lists (``data``, ``has_more``, ``after`` = the last id) without trusting them.

A server that keeps saying ``has_more`` while answering the same page (a mock serving the published examples did:
14,034 requests for one job's events in a minute) must not hold us in a loop. Every walk here:

- yields each id once (a repeated item is dropped);
- stops with ``PageNotAdvancing`` (a transient ``ProviderError``, so the step backs off) as soon as a page that
  claims more brings no new id or ends on the cursor it was asked to pass, or the page after a cursor holds that
  cursor's item again (the server ignored the cursor);
- reads at most ``max_pages`` pages, then stops and says so in ``truncated``.

So a non-advancing listing costs two requests: the first page and the repeat that shows it does not advance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from service.providers.base import ProviderError

log = logging.getLogger(__name__)


class PageNotAdvancing(ProviderError):
    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True, code="provider_page_not_advancing")


class UnusableAnswer(ProviderError):
    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True, code="provider_bad_response")


def item_id(item: Any) -> str | None:
    value = item.get("id") if isinstance(item, dict) else getattr(item, "id", None)
    return value if isinstance(value, str) and value else None


class Listing:
    """The items of one listing, oldest request first. ``fetch(after)`` makes one request for the page after the
    cursor (None: the first page) and returns the SDK's page object (or anything with ``data`` and ``has_more``)."""

    def __init__(self, fetch: Callable[[str | None], Any], *, what: str, max_pages: int) -> None:
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        self._fetch, self.what, self.max_pages = fetch, what, max_pages
        self.requests = 0
        self.truncated = False

    def __iter__(self) -> Iterator[Any]:
        seen: set[str] = set()
        cursor: str | None = None
        for _ in range(self.max_pages):
            page = self._fetch(cursor)
            self.requests += 1
            data = list(getattr(page, "data", None) or [])
            ids = [item_id(item) for item in data]
            if None in ids:
                raise UnusableAnswer(f"provider answered {self.what} with an item that has no id")
            if cursor is not None and cursor in ids:
                # The page after X holds X: the cursor was ignored, and asking on would repeat (or wander) forever.
                raise self._stalled(f"the page after {cursor!r} holds {cursor!r} again")
            fresh = []
            for key, item in zip(ids, data, strict=True):
                if key not in seen:
                    seen.add(key)
                    fresh.append(item)
            yield from fresh
            if not data or not getattr(page, "has_more", False):
                return
            last = ids[-1]
            if not fresh or last == cursor:
                raise self._stalled(f"has_more after {last!r} again")
            cursor = last
        self.truncated = True
        log.warning("listing %s stopped after %d pages (the cap)", self.what, self.max_pages)

    def _stalled(self, detail: str) -> PageNotAdvancing:
        return PageNotAdvancing(
            f"provider answered a page that does not advance while listing {self.what} "
            f"({detail}, {self.requests} requests); stopped"
        )
