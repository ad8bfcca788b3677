"""Every kind of row the sweeper watches, and the task that advances one. Adding a long-running entity means one line
here and one thin task in ``worker.tasks``."""

from __future__ import annotations

from service.datasets.models import Dataset
from service.evaluations.models import Evaluation
from service.events.models import Event
from service.jobs.models import Job
from service.webhooks.models import Delivery
from service.work import WorkKind

WORK_KINDS: tuple[WorkKind, ...] = (
    WorkKind("dataset", Dataset, "datasets.validate"),
    WorkKind("job", Job, "jobs.advance"),
    WorkKind("evaluation", Evaluation, "evaluations.run", queue_column="worker_queue"),
    WorkKind("event", Event, "events.fanout"),
    WorkKind("delivery", Delivery, "webhooks.dispatch", queue="webhooks", batched=True),
)
