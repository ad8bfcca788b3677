"""An httpx transport that watches the wire: requests in flight, and when each exchange started and ended."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Exchange:
    started: float
    ended: float
    status: int


class RecordingTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.in_flight = 0
        self.max_in_flight = 0
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.monotonic()
        status = 0
        try:
            response = await self._inner.handle_async_request(request)
            # Read the body here so that "in flight" covers the whole exchange, not just the headers.
            await response.aread()
            status = response.status_code
            return response
        finally:
            self.in_flight -= 1
            self.exchanges.append(Exchange(started, time.monotonic(), status))

    async def aclose(self) -> None:
        await self._inner.aclose()
