"""Every kind of row the sweeper watches. A new long-running entity declares its ``WorkKind`` beside its steps, adds it
here, and gets one thin task in ``worker.tasks`` under its name from ``service.work.names``."""

from __future__ import annotations

from service.datasets.service import DATASETS
from service.distill.generate import DISTILL_RUNS
from service.distill.recipe import DISTILLATIONS
from service.evaluations.service import EVALUATIONS
from service.events.service import EVENTS
from service.jobs.lifecycle import JOBS
from service.webhooks.delivery import DELIVERIES
from service.work.kind import WorkKind

WORK_KINDS: tuple[WorkKind, ...] = (DATASETS, JOBS, EVALUATIONS, EVENTS, DELIVERIES, DISTILL_RUNS, DISTILLATIONS)
