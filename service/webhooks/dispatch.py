"""The webhook dispatcher: many deliveries in flight at once, so one slow endpoint cannot hold up the others.

One ``Dispatcher.run`` claims due deliveries in batches (``service.work.batch.claim_batch``: a lease on each row, so two
dispatchers never send the same delivery and a dead dispatcher's rows come back when their lease expires), sends them
over the ``AsyncWebhookSender`` and records each outcome in its own transaction as it arrives, with the rules of
``delivery.record_outcome``. It keeps claiming while due rows exist, up to ``webhook_dispatch_batch``
rows per run, then hands its worker thread back and asks for another run.

Only rows that can be sent at once are claimed: at most ``webhook_endpoint_concurrency`` in flight per endpoint and
``webhook_host_concurrency`` per host (the sender's own per-host slots, so a claimed row never queues behind them and
its lease only has to cover one exchange), ``webhook_dispatch_concurrency`` in all. A hanging endpoint therefore holds
one or two slots until the client timeout while every other endpoint's deliveries keep flowing. The caps are per
dispatcher: with several worker processes an endpoint may see that many times the cap.

Wake-ups: whoever makes deliveries due calls ``wake``. Within a process a running dispatcher for the same database is
poked (it claims again at once) instead of queueing another task; otherwise one ``webhooks.dispatch`` message is sent.
The sweeper sends one such wake-up for all due deliveries (``DELIVERIES`` is a batched kind), never one per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlmodel import Session, select

from service.clock import utcnow
from service.db import get_engine
from service.net import OutboundPolicy, UrlNotAllowed, check_url, outbound_policy
from service.settings import Settings, get_settings
from service.webhooks.delivery import DELIVERIES, Message, lease_seconds, prepare, record_outcome
from service.webhooks.models import Delivery, WebhookEndpoint
from service.webhooks.sender import AsyncWebhookSender, DeliveryOutcome, Disposition
from service.work.batch import claim_batch
from service.work.lease import back_off, commit_and_release
from service.work.wake import wake as wake_kind

log = logging.getLogger(__name__)

# Claim queries, preparing messages and recording outcomes run on threads beside the event loop, so database latency
# never stalls the requests in flight. SQLite takes one writer at a time and makes the others back off in growing
# sleeps, so it gets one thread; a server database gets a few.
DB_THREADS = {"sqlite": 1}
DEFAULT_DB_THREADS = 4
# One claim looks at this many due rows per free slot: rows of saturated endpoints in the window are skipped.
WINDOW_PER_SLOT = 4
MAX_CLAIM_ROUNDS = 4

T = TypeVar("T")


@dataclass(frozen=True)
class Candidate:
    delivery_id: str
    endpoint_id: str
    url: str


@dataclass
class DispatchReport:
    """What one run did. ``outcomes`` are in the order they were recorded: (delivery id, endpoint id, disposition)."""

    claimed: int = 0
    outcomes: list[tuple[str, str, Disposition]] = field(default_factory=list)
    settled: int = 0  # claimed rows with nothing to send (endpoint disabled or deleted, delivery no longer pending)
    lost: int = 0  # outcomes not recorded because the lease had passed to another dispatcher
    errors: int = 0  # rows backed off after an unexpected error
    more: bool = False  # stopped at the per-run bound: due rows may remain
    coalesced: bool = False  # handed to a dispatcher already running in this process


def claim_due(
    session: Session,
    owner: str,
    limit: int,
    *,
    lease_s: float,
    exclude_endpoints: Sequence[str] = (),
    pick: Callable[[list[Candidate]], list[Candidate]] | None = None,
) -> tuple[list[Candidate], list[Candidate]]:
    """Lease up to ``limit`` due deliveries to ``owner`` in ``session`` (the caller commits).

    ``pick`` chooses which of the due candidates (oldest first) to take; the rest stay free. Returns (claimed, seen):
    the rows now leased to ``owner``, and every candidate looked at.
    """
    return claim_batch(
        session,
        DELIVERIES,
        owner,
        limit,
        lease_s=lease_s,
        make=Candidate,
        row_id=lambda c: c.delivery_id,
        columns=(Delivery.endpoint_id, WebhookEndpoint.url),
        joins=((WebhookEndpoint, WebhookEndpoint.id == Delivery.endpoint_id),),
        where=[Delivery.endpoint_id.not_in(list(exclude_endpoints))] if exclude_endpoints else (),
        window=limit if pick is None else max(limit * WINDOW_PER_SLOT, 32),
        pick=pick,
    )


class Dispatcher:
    """One run of claim, send concurrently, record; see the module docstring. ``run`` blocks its thread."""

    def __init__(self, settings: Settings | None = None, *, max_rows: int | None = None, owner: str | None = None):
        self.settings = settings or get_settings()
        s = self.settings
        self.total = max(1, s.webhook_dispatch_concurrency)
        self.per_endpoint = max(1, s.webhook_endpoint_concurrency)
        self.per_host = max(self.per_endpoint, s.webhook_host_concurrency)
        self.max_rows = max_rows if max_rows is not None else s.webhook_dispatch_batch
        self.owner = owner or f"dispatch-{uuid.uuid4().hex}"
        self.lease_s = lease_seconds(s)
        self.poll_s = max(0.05, s.sweep_interval_s)
        self.policy: OutboundPolicy = outbound_policy(s)
        self.report = DispatchReport()
        self._lock = threading.Lock()  # counters (claims run on a database thread) and the poke handshake
        self._by_endpoint: Counter[str] = Counter()
        self._by_host: Counter[str] = Counter()
        self._host_of: dict[str, str | None] = {}
        self._accepting = True
        self._poked = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    # -- wake-ups from other threads ---------------------------------------------------------------------------

    def poke(self) -> bool:
        """Ask this run to claim again now. False once it has stopped taking work (then start another run)."""
        with self._lock:
            if not self._accepting:
                return False
            self._poked = True
            if self._loop is not None and self._changed is not None:
                self._loop.call_soon_threadsafe(self._changed.set)
            return True

    # -- slots -----------------------------------------------------------------------------------------------

    def _host(self, c: Candidate) -> str | None:
        if c.endpoint_id not in self._host_of:
            try:
                target = check_url(c.url, self.policy)
            except UrlNotAllowed:
                host = None  # the sender refuses it without taking a slot
            else:
                host = f"{target.host}:{target.port}"  # the sender's per-host key
            self._host_of[c.endpoint_id] = host
        return self._host_of[c.endpoint_id]

    def _full(self, endpoint_id: str) -> bool:
        host = self._host_of.get(endpoint_id)
        return self._by_endpoint[endpoint_id] >= self.per_endpoint or (
            host is not None and self._by_host[host] >= self.per_host
        )

    def _pick(self, want: int, chosen: list[Candidate]) -> Callable[[list[Candidate]], list[Candidate]]:
        """Take candidates while their endpoint and host have room, reserving the slots as it goes (into
        ``chosen``, so the caller can free the ones another dispatcher won)."""

        def pick(candidates: list[Candidate]) -> list[Candidate]:
            with self._lock:
                for c in candidates:
                    if len(chosen) >= want:
                        break
                    host = self._host(c)
                    if self._full(c.endpoint_id):
                        continue
                    self._by_endpoint[c.endpoint_id] += 1
                    if host is not None:
                        self._by_host[host] += 1
                    chosen.append(c)
            return chosen

        return pick

    def _free(self, c: Candidate) -> None:
        with self._lock:
            self._by_endpoint[c.endpoint_id] -= 1
            if self._by_endpoint[c.endpoint_id] <= 0:
                del self._by_endpoint[c.endpoint_id]
            host = self._host_of.get(c.endpoint_id)
            if host is not None:
                self._by_host[host] -= 1
                if self._by_host[host] <= 0:
                    del self._by_host[host]

    # -- database work (on the database threads) -----------------------------------------------------------------

    def _claim_and_prepare(self, want: int) -> list[tuple[Candidate, Message]]:
        """Claim up to ``want`` sendable rows and build their messages; rows with nothing to send are settled here."""
        ready: list[tuple[Candidate, Message]] = []
        failed: list[tuple[Candidate, Exception]] = []
        for _ in range(MAX_CLAIM_ROUNDS):
            need = want - len(ready)
            if need <= 0:
                break
            with self._lock:
                exclude = sorted(e for e in {*self._by_endpoint, *self._host_of} if self._full(e))
            picked: list[Candidate] = []
            try:
                with Session(get_engine(self.settings), expire_on_commit=False) as session:
                    claimed, seen = claim_due(
                        session,
                        self.owner,
                        need,
                        lease_s=self.lease_s,
                        exclude_endpoints=exclude,
                        pick=self._pick(need, picked),
                    )
                    rows = {}
                    if claimed:
                        ids = [c.delivery_id for c in claimed]
                        rows = {d.id: d for d in session.exec(select(Delivery).where(Delivery.id.in_(ids)))}
                    round_ready: list[tuple[Candidate, Message]] = []
                    round_failed: list[tuple[Candidate, Exception]] = []
                    settled: list[Delivery] = []
                    for c in claimed:
                        d = rows.get(c.delivery_id)
                        if d is None:
                            continue
                        try:
                            message = prepare(session, self.settings, d)
                        except Exception as exc:  # e.g. an undecryptable secret: back this row off, not the others
                            round_failed.append((c, exc))
                            continue
                        if message is None:
                            settled.append(d)
                        else:
                            round_ready.append((c, message))
                    for d in settled:
                        d.updated_at = utcnow()
                        d.lease_owner, d.lease_expires_at = None, None
                        session.add(d)
                    session.commit()
            except Exception:
                # Nothing of this round was committed: no lease taken, nothing to send. The rows stay due, and
                # the next poll, wake-up or sweep tries again.
                log.exception("claiming due webhook deliveries failed")
                for c in picked:
                    self._free(c)
                break
            ready += round_ready
            failed += round_failed
            # Picked rows that keep their slot: ready to send, or about to be backed off (freed below).
            kept = {c.delivery_id for c, _ in round_ready} | {c.delivery_id for c, _ in round_failed}
            for c in picked:
                if c.delivery_id not in kept:  # lost to another dispatcher, gone, or settled: its slot is free
                    self._free(c)
            self.report.claimed += len(claimed)
            self.report.settled += len(settled)
            # Another round only helps when the window was full of rows we could not take (saturated endpoints,
            # now excluded); otherwise there is nothing more due.
            if len(claimed) >= need or len(seen) < max(need * WINDOW_PER_SLOT, 32):
                break
        for c, exc in failed:
            self._free(c)
            with self._lock:
                self.report.errors += 1
            log.error("preparing webhook delivery %s failed: %s", c.delivery_id, exc)
            back_off(DELIVERIES, c.delivery_id, self.owner, exc)
        return ready

    def _record(self, c: Candidate, outcome: DeliveryOutcome, started: datetime) -> bool:
        with Session(get_engine(self.settings), expire_on_commit=False) as session:
            d = session.get(Delivery, c.delivery_id)
            if d is None:
                return False
            if d.lease_owner != self.owner:
                log.warning("lease on delivery %s lost while sending; outcome discarded", d.id)
                return False
            record_outcome(session, d, outcome, started)
            return commit_and_release(session, DELIVERIES, d, self.owner)

    # -- the loop --------------------------------------------------------------------------------------------

    def run(self) -> DispatchReport:
        asyncio.run(self._main())
        return self.report

    async def _main(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        changed = self._changed = asyncio.Event()
        engine = get_engine(self.settings)
        threads = DB_THREADS.get(engine.dialect.name, DEFAULT_DB_THREADS)
        executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook-dispatch-db")

        async def on_db(fn: Callable[..., T], *args: Any) -> T:
            return await loop.run_in_executor(executor, fn, *args)

        tasks: set[asyncio.Task[None]] = set()
        sender = AsyncWebhookSender(
            self.policy,
            timeout=self.settings.webhook_timeout_s,
            connect_timeout=self.settings.webhook_connect_timeout_s,
            max_concurrency=self.total,
            per_host_limit=self.per_host,
        )
        try:
            while True:
                changed.clear()
                with self._lock:
                    self._poked = False
                free = min(self.total - len(tasks), self.max_rows - self.report.claimed)
                if free > 0:
                    for c, message in await on_db(self._claim_and_prepare, free):
                        task = asyncio.create_task(self._send(sender, on_db, c, message))
                        tasks.add(task)
                        task.add_done_callback(lambda t: (tasks.discard(t), changed.set()))
                elif self.report.claimed >= self.max_rows:
                    with self._lock:
                        if self._accepting:
                            # Bounded per run so other tasks on this worker get their turn; the caller asks for
                            # another run, which continues with the rows still due.
                            self._accepting = False
                            self.report.more = True
                if not tasks:
                    with self._lock:
                        if self._poked and self._accepting:
                            continue
                        self._accepting = False
                    break
                # Wait for a free slot or a poke; poll now and then too, for rows that came due without a wake-up
                # reaching us (the wake-up task may be queued behind busy worker threads).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), self.poll_s)
        finally:
            with self._lock:
                self._accepting = False
            for task in tasks:  # only on an error of our own: the rows keep their lease and come back after it
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await sender.aclose()
            executor.shutdown(wait=True)

    async def _send(
        self,
        sender: AsyncWebhookSender,
        on_db: Callable[..., Any],
        c: Candidate,
        message: Message,
    ) -> None:
        try:
            started = utcnow()
            outcome = await sender.send(message.url, message.headers, message.body)
            if await on_db(self._record, c, outcome, started):
                self.report.outcomes.append((c.delivery_id, c.endpoint_id, outcome.disposition))
            else:
                self.report.lost += 1
        except Exception as exc:
            with self._lock:
                self.report.errors += 1
            log.exception("webhook delivery %s failed in the dispatcher", c.delivery_id)
            try:
                await on_db(back_off, DELIVERIES, c.delivery_id, self.owner, exc)
            except Exception:
                log.exception("could not back off delivery %s; its lease will expire", c.delivery_id)
        finally:
            self._free(c)


# -- one dispatcher per database and process, woken rather than duplicated ------------------------------------------

_running: dict[tuple[Any, ...], Dispatcher] = {}
_running_lock = threading.Lock()


def _key(settings: Settings) -> tuple[Any, ...]:
    """Runs with equal keys are interchangeable: a poke to one does what starting another would."""
    return (
        settings.sqlalchemy_url,
        str(settings.data_dir),
        outbound_policy(settings),
        settings.webhook_timeout_s,
        settings.webhook_connect_timeout_s,
        settings.webhook_dispatch_concurrency,
        settings.webhook_endpoint_concurrency,
        settings.webhook_host_concurrency,
        settings.webhook_dispatch_batch,
    )


def _poke_running(settings: Settings) -> bool:
    with _running_lock:
        current = _running.get(_key(settings))
        return current is not None and current.poke()


def wake(settings: Settings | None = None) -> bool:
    """Deliveries are due: poke this process's dispatcher, or enqueue one wake-up for any worker."""
    settings = settings or get_settings()
    if _poke_running(settings):
        return True
    return wake_kind(DELIVERIES)


def dispatch_due(settings: Settings | None = None) -> DispatchReport:
    """The ``webhooks.dispatch`` task: run a dispatcher until no delivery is due (or the per-run bound), unless one
    for the same database already runs in this process, which is poked instead."""
    settings = settings or get_settings()
    key = _key(settings)
    with _running_lock:
        current = _running.get(key)
        if current is not None and current.poke():
            return DispatchReport(coalesced=True)
        dispatcher = _running[key] = Dispatcher(settings)
    try:
        report = dispatcher.run()
    finally:
        with _running_lock:
            if _running.get(key) is dispatcher:
                del _running[key]
    if report.more:
        wake_kind(DELIVERIES)
    return report
