"""Odd but valid answers on demand: a list page that never advances, a list that does not show what was just made,
and an answer cut in half after the action was carried out."""

from __future__ import annotations

import json

import openai
import pytest

from emulator import OpenAIEmulator


def test_repeat_page_answers_the_first_page_for_any_cursor(
    emu: OpenAIEmulator, client: openai.OpenAI, training_file: str
) -> None:
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    emu.run_until_idle()
    first = client.fine_tuning.jobs.list_events(job.id, limit=3)
    assert first.has_more and len(first.data) == 3

    emu.add_fault(r"/events$", "repeat_page", probability=1.0)
    again = client.fine_tuning.jobs.list_events(job.id, limit=3, after=first.data[-1].id)
    ids = [e.id for e in again.data]
    assert again.has_more is True
    assert ids == [e.id for e in first.data] + [first.data[0].id]  # the same page, its first event again at the end


def test_empty_list_hides_what_exists(emu: OpenAIEmulator, client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file, metadata={"ours": "1"})
    rule = emu.add_fault(r"^GET /v1/fine_tuning/jobs$", "empty_list", count=1)
    assert client.fine_tuning.jobs.list(metadata={"ours": "1"}).data == []
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"ours": "1"}).data] == [job.id]
    assert rule.fired == 1


def test_act_then_truncate_acts_and_answers_unreadable_json(
    emu: OpenAIEmulator, client: openai.OpenAI, training_file: str
) -> None:
    emu.add_fault(r"^POST /v1/fine_tuning/jobs$", "act_then_truncate", count=1)
    with pytest.raises(json.JSONDecodeError):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    assert len(emu.state()["jobs"]) == 1  # carried out all the same


@pytest.mark.parametrize(
    ("odd", "status", "check"),
    [
        ("succeeded_without_model", "succeeded", lambda j: j.fine_tuned_model is None and j.trained_tokens > 0),
        ("negative_trained_tokens", "succeeded", lambda j: j.fine_tuned_model and j.trained_tokens < 0),
        ("failed_without_error", "failed", lambda j: j.error is None and j.fine_tuned_model is None),
    ],
)
def test_odd_job_values_on_demand_and_still_valid(
    emu: OpenAIEmulator, client: openai.OpenAI, training_file: str, odd: str, status: str, check
) -> None:  # type: ignore[no-untyped-def]
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=training_file, metadata={"emulator_odd": odd}
    )
    emu.run_until_idle()
    answer = client.fine_tuning.jobs.with_raw_response.retrieve(job.id)
    done = answer.parse()
    assert done.status == status and check(done), done
    spec = pytest.importorskip("emulator.spec", reason="needs jsonschema and pyyaml")
    if spec.reference_path().exists():  # values the published description allows
        assert spec.load().differences("FineTuningJob", json.loads(answer.text)) == []
