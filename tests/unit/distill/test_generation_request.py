"""A distillation's generation pass as an evaluation request: the teacher once per answer, seeds apart, the filters
as graders with empty answers always dropped."""

from __future__ import annotations

import pytest

from api_schemas.distill import DistillDatasetCreate
from service.distill.generate import evaluation_request
from service.errors import InvalidInput


def _req(**over):
    body = {"source_dataset_id": "ds_x", "teacher": {"kind": "model", "name": "teacher", "model": "gpt-4o-mini"}}
    return DistillDatasetCreate.model_validate({**body, **over})


def test_each_answer_is_the_teacher_with_the_next_seed():
    create = evaluation_request(_req(answers_per_prompt=3, sampling={"seed": 7, "temperature": 0.7}))
    assert [c.name for c in create.candidates] == ["teacher", "teacher.2", "teacher.3"]
    assert [c.params.get("seed") for c in create.candidates] == [None, 8, 9]
    assert create.sampling.seed == 7 and create.sampling.temperature == 0.7


def test_a_teachers_own_seed_wins_and_a_bad_one_counts_as_none():
    own = evaluation_request(
        _req(answers_per_prompt=2, teacher={"kind": "model", "name": "t", "model": "m", "params": {"seed": 40}})
    )
    assert own.candidates[1].params["seed"] == 41
    odd = evaluation_request(
        _req(answers_per_prompt=2, teacher={"kind": "model", "name": "t", "model": "m", "params": {"seed": "x"}})
    )
    assert odd.candidates[1].params["seed"] == 1


def test_filters_become_graders_and_empty_answers_are_always_dropped():
    create = evaluation_request(_req(filters={"graders": [{"type": "json_valid", "name": "json"}]}))
    assert [g.name for g in create.graders] == ["json", "non_empty"]
    assert create.dataset_id == "ds_x" and create.baseline is None


def test_a_pass_the_evaluation_refuses_is_a_422_naming_the_field(monkeypatch):
    import service.distill.generate as generate

    monkeypatch.setattr(generate, "NON_EMPTY", {"type": "regex", "name": "bad name!", "pattern": "x"})
    with pytest.raises(InvalidInput) as err:
        evaluation_request(_req())
    assert err.value.code == "invalid_distillation" and "graders" in err.value.extra["field"]
