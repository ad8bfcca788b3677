"""Task and queue names, in one place: the worker registers its tasks under these names and the service enqueues by
them (the service never imports the worker)."""

from __future__ import annotations

VALIDATE_DATASET = "datasets.validate"
ADVANCE_JOB = "jobs.advance"
RUN_EVALUATION = "evaluations.run"
FANOUT_EVENT = "events.fanout"
DISPATCH_WEBHOOKS = "webhooks.dispatch"
TRAIN_LOCAL = "local.train"
ADVANCE_DISTILL_RUN = "distill.advance_run"
ADVANCE_DISTILLATION = "distill.advance"

DEFAULT_QUEUE = "default"
WEBHOOKS_QUEUE = "webhooks"
# The queue whose worker runs one task at a time on the machine's accelerator (or CPU): local trainings, and
# evaluations that run a model locally, so the two never share the device.
DEVICE_QUEUE = "train"
QUEUES = (DEFAULT_QUEUE, WEBHOOKS_QUEUE, DEVICE_QUEUE)
