"""Calls outside the process (a provider) made while the API answers a request.

Such a call can take as long as the other side likes, and it holds one of the server's request threads meanwhile. So
each project may have at most ``outbound_per_project`` of them in flight (429 beyond) and all projects together at most
``outbound_concurrency`` (503 beyond): however slow one project's provider is, the threads, and the database
connections, other projects' requests need stay free. The route releases its database connection before calling out
(``service.db.release_connection``) and builds its client with ``outbound_timeout_s``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request

from service.api.deps import SettingsDep
from service.errors import RateLimited, Unavailable


class OutboundGate:
    """Counts calls in flight per project and in total; a call that would go over a limit is refused at once (waiting
    would hold a request thread, which is what the limits protect)."""

    def __init__(self, per_project: int, total: int, retry_after_s: int) -> None:
        self.per_project, self.total, self.retry_after_s = per_project, total, retry_after_s
        self._lock = threading.Lock()
        self._by_project: dict[str, int] = {}
        self._in_flight = 0

    @contextmanager
    def slot(self, project_id: str) -> Iterator[None]:
        with self._lock:
            mine = self._by_project.get(project_id, 0)
            if mine >= self.per_project:
                raise RateLimited(
                    f"this project already has {mine} provider calls in flight (the limit); retry when one ends",
                    code="too_many_outbound_calls",
                    retry_after=self.retry_after_s,
                )
            if self._in_flight >= self.total:
                raise Unavailable(
                    "the server is waiting on too many provider calls; retry shortly",
                    code="outbound_busy",
                    retry_after=self.retry_after_s,
                )
            self._by_project[project_id] = mine + 1
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                left = self._by_project[project_id] - 1
                if left:
                    self._by_project[project_id] = left
                else:
                    del self._by_project[project_id]

    def in_flight(self, project_id: str | None = None) -> int:
        with self._lock:
            return self._in_flight if project_id is None else self._by_project.get(project_id, 0)


_create_lock = threading.Lock()


def outbound_gate_dep(request: Request, settings: SettingsDep) -> OutboundGate:
    """The app's gate (one per app, so per server process)."""
    gate = getattr(request.app.state, "outbound_gate", None)
    if gate is None:
        with _create_lock:
            gate = getattr(request.app.state, "outbound_gate", None)
            if gate is None:
                # A slot frees within one call's timeout at worst.
                retry_after = max(1, math.ceil(settings.outbound_timeout_s))
                gate = OutboundGate(settings.outbound_per_project, settings.outbound_concurrency, retry_after)
                request.app.state.outbound_gate = gate
    return gate


OutboundGateDep = Annotated[OutboundGate, Depends(outbound_gate_dep)]
