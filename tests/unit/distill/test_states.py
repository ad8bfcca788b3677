"""The distillation state machines: a dataset distillation resumes after a cancel or failure; the recipe moves one
step at a time and ends once."""

from __future__ import annotations

from itertools import pairwise

import pytest

from api_schemas.distill import DistillationStatus as R
from api_schemas.distill import DistillRunStatus as D
from service.distill.states import RECIPE_EVENTS, RECIPE_MACHINE, RUN_MACHINE
from service.work.machine import InvalidTransition


def test_a_run_resumes_only_after_cancel_or_failure():
    assert RUN_MACHINE.can(D.cancelled, D.generating) and RUN_MACHINE.can(D.failed, D.generating)
    assert RUN_MACHINE.terminal == {D.succeeded}
    with pytest.raises(InvalidTransition):
        RUN_MACHINE.check(D.succeeded, D.generating)


def test_the_recipe_goes_step_by_step_and_every_end_is_an_event():
    order = [R.distilling, R.splitting, R.training, R.evaluating, R.succeeded]
    for a, b in pairwise(order):
        assert RECIPE_MACHINE.can(a, b)
    assert not RECIPE_MACHINE.can(R.distilling, R.training)
    assert RECIPE_MACHINE.terminal == {R.succeeded, R.failed, R.cancelled}
    assert set(RECIPE_EVENTS) == RECIPE_MACHINE.terminal
