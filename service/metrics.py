"""Prometheus metrics: HTTP latency, Celery tasks, jobs and evaluations by status, webhook deliveries, provider errors.

Counters and histograms live in this process's registry and are updated where things happen (the HTTP middleware,
Celery signals in ``worker.celery_app``, webhook delivery, the job runner). Jobs and evaluations by status are not
counted as they change: they are read from the database at scrape time with one ``GROUP BY`` per table, so they are
right whichever process changed the rows.

With ``PROMETHEUS_MULTIPROC_DIR`` set (several API processes, or Celery prefork children, on one host), every process
writes its values to files there and a scrape adds them up (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REGISTRY = CollectorRegistry(auto_describe=True)
if not MULTIPROCESS:
    # Process and runtime figures only make sense for one process; multiprocess mode cannot add them up.
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        REGISTRY.register(_collector)

HTTP_LATENCY = Histogram(
    "finetune_http_request_duration_seconds",
    "HTTP request latency by route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
TASKS = Counter(
    "finetune_celery_tasks_total",
    "Celery tasks by name and state (started, succeeded, failed, retried, revoked).",
    ["task", "state"],
    registry=REGISTRY,
)
TASKS_RUNNING = Gauge(
    "finetune_celery_tasks_running",
    "Celery tasks running now, by name.",
    ["task"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
TASK_DURATION = Histogram(
    "finetune_celery_task_duration_seconds",
    "Run time of Celery tasks by name.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0),
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "finetune_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (success, retry, gone, refused).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_LAG = Histogram(
    "finetune_webhook_delivery_lag_seconds",
    "Time from an event to its successful delivery to an endpoint (retries included).",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 36000.0, 86400.0, 259200.0),
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "finetune_provider_errors_total",
    "Errors from training providers, by provider and kind (transient: retried; permanent: the job failed).",
    ["provider", "kind"],
    registry=REGISTRY,
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_LATENCY.labels(method, route, str(status)).observe(seconds)


def task_started(task: str) -> None:
    TASKS.labels(task, "started").inc()
    TASKS_RUNNING.labels(task).inc()


def task_finished(task: str, state: str, seconds: float | None) -> None:
    """``state``: succeeded, failed, retried or revoked. ``seconds`` is None when the task never ran."""
    TASKS.labels(task, state).inc()
    if seconds is not None:
        TASKS_RUNNING.labels(task).dec()
        TASK_DURATION.labels(task).observe(seconds)


def record_delivery(outcome: str, lag_s: float | None = None) -> None:
    WEBHOOK_DELIVERIES.labels(outcome).inc()
    if lag_s is not None:
        WEBHOOK_LAG.observe(max(0.0, lag_s))


def record_provider_error(provider: str, exc: Any) -> None:
    """One provider error (a ``ProviderError``); its ``transient`` flag is the label, not its free-form message."""
    PROVIDER_ERRORS.labels(provider, "transient" if getattr(exc, "transient", False) else "permanent").inc()


class StatusCollector(Collector):
    """``finetune_jobs`` and ``finetune_evaluations`` by status, counted in the database at scrape time."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        import sqlalchemy as sa

        from service.db import get_engine
        from service.evaluations.models import Evaluation
        from service.jobs.models import Job

        tables = (
            ("finetune_jobs", "Training jobs by status.", Job, _known_statuses("api_schemas.jobs", "JobStatus")),
            (
                "finetune_evaluations",
                "Evaluations by status.",
                Evaluation,
                _known_statuses("api_schemas.evaluations", "EvaluationStatus"),
            ),
        )
        try:
            with get_engine(self.settings).connect() as conn:
                counts = [
                    dict(conn.execute(sa.select(model.status, sa.func.count()).group_by(model.status)).all())
                    for _, _, model, _ in tables
                ]
        except Exception:
            # A scrape must not fail because the database does; the HTTP and task series are still worth having.
            log.warning("metrics: could not count jobs and evaluations", exc_info=True)
            return
        for (name, doc, _, known), found in zip(tables, counts, strict=True):
            family = GaugeMetricFamily(name, doc, labels=["status"])
            for status in sorted(set(known) | set(found)):
                family.add_metric([status], float(found.get(status, 0)))
            yield family


def _known_statuses(module: str, enum: str) -> list[str]:
    """Every status of the state machine, so a status with no rows reads 0 instead of vanishing."""
    import importlib

    try:
        return [s.value for s in getattr(importlib.import_module(module), enum)]
    except (ImportError, AttributeError):
        return []


class _Scrape:
    def __init__(self, collectors: Iterable[Any]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def render(settings: Any) -> tuple[bytes, str]:
    """The exposition text and its content type."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        source = _Scrape([registry, StatusCollector(settings)])
    else:
        source = _Scrape([REGISTRY, StatusCollector(settings)])
    return generate_latest(source), CONTENT_TYPE_LATEST  # type: ignore[arg-type]


def mark_process_dead(pid: int) -> None:
    """A prefork child exited: drop its live gauges from the multiprocess files."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
