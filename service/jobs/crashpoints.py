"""Test-only crash points: named places in job submission where a crash test kills the worker on purpose.

``crash_point("upload.sent")`` does nothing unless the environment variable ``FINETUNE_TEST_CRASH_POINT`` names that
point; then it sends SIGKILL to its own process, so nothing (no ``finally``, no rollback, no lease release) runs after
it, exactly like a worker killed by the OOM killer or a lost machine. The variable is read once, at import, so an
unarmed call is a single comparison with None.
"""

from __future__ import annotations

import logging
import os
import signal

ENV_VAR = "FINETUNE_TEST_CRASH_POINT"

# The points, in the order a submission passes them (the crash test walks this list).
SUBMISSION_POINTS: tuple[str, ...] = (
    "upload.claimed",  # our claim on the file is committed; the upload has not started
    "upload.sent",  # the provider answered the upload; we have not recorded the file id
    "upload.recorded",  # the file id is committed; the provider job is not created yet
    "create.sent",  # the provider answered the job create; our job row is not committed
    "create.committed",  # our job row says submitted, committed; the next step has not run
)

_ARMED: str | None = os.environ.get(ENV_VAR) or None

log = logging.getLogger(__name__)


def crash_point(name: str) -> None:
    if _ARMED is None or name != _ARMED:
        return
    log.warning("crash point %s reached: killing process %d", name, os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
