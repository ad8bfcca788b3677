"""Webhook delivery throughput and lag: the concurrent sender against a naive sequential one, and the service's own
path (events, delivery rows, the worker), all in the same run.

A local receiver process listens on 50 ports (one "endpoint" each): most answer at once, some answer slowly and some
fail with HTTP 500. Events arrive at a steady rate and each is delivered, signed, to every endpoint. For each delivery
the lag is the time from the event's arrival to the end of its (first) delivery attempt.

    .venv/bin/python bench/webhook_delivery.py [--events 20] [--rate 10] [--slow 5] [--failing 5] [--slow-delay 0.25]

Senders alone: both go through the same SSRF guard, timeouts and signing; only the scheduling differs.

Service path: a SQLite database in a temporary data directory and an in-process worker with the in-memory broker, as
``finetune serve`` runs them (``--worker-threads``, default 2 like ``FINETUNE_WORKER_CONCURRENCY``). Each event is
written through the outbox (``events.record``), fanned out into delivery rows by the real ``fanout``, and delivered
by the dispatcher (``webhooks.dispatch``, woken once per event: what the ``events.fanout`` task does). (The
one-task-per-delivery path it replaced was removed from the service; the sequential sender above is its baseline.) The
fan-out runs right after the event commits; in the service an event waits for the sweeper's next pass (``FINETUNE_SWEEP_INTERVAL_S``) before it is
fanned out, which this leaves out. Lag is from the event's ``created_at`` to the end of the first attempt recorded in
``delivery_attempts``; retries fall after the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta

from service.net import OutboundPolicy
from service.webhooks.sender import AsyncWebhookSender, DeliveryOutcome, WebhookSender
from service.webhooks.signing import build_headers, generate_secret

ENDPOINTS = 50


async def _serve(behaviour: dict[int, tuple[str, float]], ready: mp.Queue) -> None:  # type: ignore[type-arg]
    """Minimal HTTP/1.1 keep-alive receiver: enough to measure the sender, not the receiver."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: str, delay: float) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if delay:
                    await asyncio.sleep(delay)
                status = b"500 Internal Server Error" if kind == "failing" else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    servers = []
    ports = []
    for index, (kind, delay) in behaviour.items():
        server = await asyncio.start_server(
            lambda r, w, k=kind, d=delay: handle(r, w, k, d), "127.0.0.1", 0, backlog=1024
        )
        servers.append(server)
        ports.append((index, server.sockets[0].getsockname()[1]))
    ready.put(ports)
    await asyncio.Event().wait()


def _receiver_main(behaviour: dict[int, tuple[str, float]], ready: mp.Queue) -> None:  # type: ignore[type-arg]
    asyncio.run(_serve(behaviour, ready))


@dataclass
class Endpoint:
    url: str
    kind: str
    secret: str


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Result:
    name: str
    lags: list[float]
    healthy_lags: list[float]
    outcomes: dict[str, int]
    wall_s: float

    @property
    def rate(self) -> float:
        return len(self.lags) / self.wall_s if self.wall_s else 0.0

    def row(self) -> str:
        def pct(values: list[float], q: float) -> str:
            return f"{percentile(values, q) * 1000:.0f} ms" if values else "-"

        rate = self.rate
        return (
            f"{self.name:<20} {rate:>12.1f} {pct(self.lags, 0.5):>10} {pct(self.lags, 0.95):>10} "
            f"{pct(self.healthy_lags, 0.5):>12} {pct(self.healthy_lags, 0.95):>12} {self.wall_s:>8.2f} s  "
            + json.dumps(self.outcomes, sort_keys=True)
        )


def _messages(endpoints: list[Endpoint], event_no: int) -> list[tuple[Endpoint, dict[str, str], bytes]]:
    body = json.dumps(
        {"id": f"evt_{event_no}", "type": "job.succeeded", "created_at": int(time.time()), "data": {"object": {}}}
    ).encode()
    return [(ep, build_headers(ep.secret, f"evt_{event_no}", body), body) for ep in endpoints]


def _summarise(name: str, records: list[tuple[Endpoint, float, DeliveryOutcome]], wall: float) -> Result:
    outcomes: dict[str, int] = {}
    for _, _, outcome in records:
        outcomes[outcome.disposition.value] = outcomes.get(outcome.disposition.value, 0) + 1
    return Result(
        name,
        [lag for _, lag, _ in records],
        [lag for ep, lag, _ in records if ep.kind == "healthy"],
        outcomes,
        wall,
    )


async def run_concurrent(
    endpoints: list[Endpoint], events: int, rate: float, policy: OutboundPolicy, timeout: float
) -> Result:
    records: list[tuple[Endpoint, float, DeliveryOutcome]] = []
    async with AsyncWebhookSender(policy, timeout=timeout, max_concurrency=128, per_host_limit=8) as sender:

        async def deliver(ep: Endpoint, headers: dict[str, str], body: bytes, arrived: float) -> None:
            outcome = await sender.send(ep.url, headers, body)
            records.append((ep, time.perf_counter() - arrived, outcome))

        start = time.perf_counter()
        tasks = []
        for n in range(events):
            arrival = start + n / rate
            await asyncio.sleep(max(0.0, arrival - time.perf_counter()))
            tasks += [asyncio.create_task(deliver(ep, h, b, arrival)) for ep, h, b in _messages(endpoints, n)]
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    return _summarise("concurrent (async)", records, wall)


def run_sequential(endpoints: list[Endpoint], events: int, rate: float, policy: OutboundPolicy, timeout: float) -> Result:
    records: list[tuple[Endpoint, float, DeliveryOutcome]] = []
    with WebhookSender(policy, timeout=timeout) as sender:
        start = time.perf_counter()
        for n in range(events):
            arrival = start + n / rate
            time.sleep(max(0.0, arrival - time.perf_counter()))
            for ep, headers, body in _messages(endpoints, n):
                outcome = sender.send(ep.url, headers, body)
                records.append((ep, time.perf_counter() - arrival, outcome))
        wall = time.perf_counter() - start
    return _summarise("naive sequential", records, wall)


def run_service(endpoints: list[Endpoint], events: int, rate: float, timeout: float, data_dirs: list[str]) -> Result:
    """Events -> delivery rows in a fresh SQLite database -> the worker's dispatcher."""
    from sqlmodel import select

    from service import db
    from service.events import service as outbox
    from service.events.fanout import fanout
    from service.events.models import Event
    from service.projects.service import create_project
    from service.settings import get_settings, reset_settings_cache
    from service.webhooks import dispatch
    from service.webhooks import service as hooks
    from service.webhooks.models import Delivery, DeliveryAttempt
    from service.webhooks.sender import Disposition

    # Not removed here: the worker may still be busy with this database's retries; main() removes it after the worker.
    data_dir = tempfile.mkdtemp(prefix="webhook-bench-")
    data_dirs.append(data_dir)
    os.environ["FINETUNE_DATA_DIR"] = data_dir
    os.environ["FINETUNE_WEBHOOK_TIMEOUT_S"] = str(timeout)
    reset_settings_cache()
    settings = get_settings()
    db.upgrade(settings)
    kinds: dict[str, str] = {}
    with db.session_scope(settings) as session:
        project, _, _ = create_project(session, "bench", settings.server_secret())
        project_id = project.id
        for ep in endpoints:
            row, _ = hooks.create_endpoint(session, settings, project_id, hooks.WebhookEndpointCreate(url=ep.url))
            kinds[row.id] = ep.kind

    expected = events * len(endpoints)
    start = time.perf_counter()
    for n in range(events):
        time.sleep(max(0.0, start + n / rate - time.perf_counter()))
        with db.session_scope(settings) as session:
            event_id = outbox.record(session, project_id, "ping", {"object": "ping", "n": n}).id
        fanout(event_id)
        dispatch.wake(settings)

    def first_attempts() -> list[tuple[str, float, str, object]]:
        with db.session_scope(settings) as session:
            rows = session.exec(
                select(
                    Delivery.endpoint_id,
                    Event.created_at,
                    DeliveryAttempt.started_at,
                    DeliveryAttempt.duration_ms,
                    DeliveryAttempt.details,
                )
                .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
                .join(Event, Event.id == Delivery.event_id)
                .where(DeliveryAttempt.attempt == 1)
            ).all()
        return [
            (ep, (started + timedelta(milliseconds=ms or 0) - created).total_seconds(), "", details)
            for ep, created, started, ms, details in rows
        ]

    deadline = time.monotonic() + 600
    while len(done := first_attempts()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    outcomes: dict[str, int] = {}
    for *_, details in done:
        key = str(details.get("disposition", Disposition.RETRY.value))  # type: ignore[union-attr]
        outcomes[key] = outcomes.get(key, 0) + 1
    lags = [lag for _, lag, _, _ in done]
    with db.session_scope(settings) as session:
        first_event = min(session.exec(select(Event.created_at)))
        last_end = max(
            a.started_at + timedelta(milliseconds=a.duration_ms or 0)
            for a in session.exec(select(DeliveryAttempt).where(DeliveryAttempt.attempt == 1))
        )
    wall = (last_end - first_event).total_seconds()
    db.dispose_engines()
    return Result(
        "service dispatcher",
        lags,
        [lag for ep, lag, _, _ in done if kinds[ep] == "healthy"],
        outcomes,
        wall,
    )


def _start_service_worker(threads: int):  # type: ignore[no-untyped-def]
    # The broker is read when the Celery app is imported: fix it first, as `finetune serve` does by default.
    os.environ["FINETUNE_BROKER_URL"] = "memory://"
    os.environ.setdefault("FINETUNE_SECRET_KEY", "webhook-bench-secret-0123456789")
    os.environ["FINETUNE_WEBHOOK_ALLOW_HTTP"] = "true"
    os.environ["FINETUNE_WEBHOOK_ALLOWLIST"] = '["127.0.0.1/32"]'
    from worker.embedded import EmbeddedWorker

    worker = EmbeddedWorker(threads, ["default", "webhooks"], name="bench")
    worker.start()
    return worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20, help="events, each delivered to every endpoint")
    parser.add_argument("--rate", type=float, default=10.0, help="events arriving per second")
    parser.add_argument("--slow", type=int, default=5, help="endpoints that answer slowly")
    parser.add_argument("--failing", type=int, default=5, help="endpoints that answer HTTP 500")
    parser.add_argument("--slow-delay", type=float, default=0.25, help="seconds a slow endpoint takes to answer")
    parser.add_argument("--timeout", type=float, default=5.0, help="sender read timeout in seconds")
    parser.add_argument("--skip-sequential", action="store_true", help="only run the concurrent sender")
    parser.add_argument("--skip-service", action="store_true", help="leave out the runs through the service")
    parser.add_argument("--worker-threads", type=int, default=2, help="worker threads of the service runs")
    args = parser.parse_args()
    if args.slow + args.failing > ENDPOINTS:
        parser.error(f"at most {ENDPOINTS} slow + failing endpoints")

    behaviour: dict[int, tuple[str, float]] = {}
    for i in range(ENDPOINTS):
        if i < args.slow:
            behaviour[i] = ("slow", args.slow_delay)
        elif i < args.slow + args.failing:
            behaviour[i] = ("failing", 0.0)
        else:
            behaviour[i] = ("healthy", 0.0)

    ctx = mp.get_context("spawn")
    ready: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    proc = ctx.Process(target=_receiver_main, args=(behaviour, ready), daemon=True)
    proc.start()
    try:
        ports = dict(ready.get(timeout=30))
        endpoints = [
            Endpoint(f"http://127.0.0.1:{ports[i]}/hook", behaviour[i][0], generate_secret()) for i in range(ENDPOINTS)
        ]
        policy = OutboundPolicy.from_allowlist(["127.0.0.1/32"], allow_http=True)
        deliveries = args.events * ENDPOINTS
        print(
            f"webhook delivery: {ENDPOINTS} endpoints ({ENDPOINTS - args.slow - args.failing} healthy, "
            f"{args.slow} slow at {args.slow_delay:g} s, {args.failing} failing with 500), "
            f"{args.events} events at {args.rate:g}/s -> {deliveries} deliveries per sender"
        )
        results = [asyncio.run(run_concurrent(endpoints, args.events, args.rate, policy, args.timeout))]
        if not args.skip_sequential:
            results.append(run_sequential(endpoints, args.events, args.rate, policy, args.timeout))
        service: list[Result] = []
        if not args.skip_service:
            worker = _start_service_worker(args.worker_threads)
            data_dirs: list[str] = []
            try:
                service.append(run_service(endpoints, args.events, args.rate, args.timeout, data_dirs))
            finally:
                worker.stop()
                for data_dir in data_dirs:
                    shutil.rmtree(data_dir, ignore_errors=True)
        print(
            f"{'sender':<20} {'deliveries/s':>12} {'lag p50':>10} {'lag p95':>10} "
            f"{'healthy p50':>12} {'healthy p95':>12} {'wall':>10}  outcomes"
        )
        for result in results + service:
            print(result.row())
        if len(results) == 2:
            fast, slow = results
            lag_ratio = percentile(slow.healthy_lags, 0.95) / percentile(fast.healthy_lags, 0.95)
            print(
                f"concurrent vs sequential: {fast.rate / slow.rate:.1f}x the deliveries/s, "
                f"healthy-endpoint lag p95 {lag_ratio:.0f}x lower"
            )
        if len(service) == 2:
            new, old = service
            lag_ratio = percentile(old.healthy_lags, 0.95) / percentile(new.healthy_lags, 0.95)
            print(
                f"service, dispatcher vs one task per delivery ({args.worker_threads} worker threads): "
                f"{new.rate / old.rate:.1f}x the deliveries/s, healthy-endpoint lag p95 {lag_ratio:.1f}x lower; "
                f"dispatcher vs the bare concurrent sender: {new.rate / results[0].rate:.2f}x the deliveries/s"
            )
    finally:
        proc.terminate()
        proc.join(5)


if __name__ == "__main__":
    main()
