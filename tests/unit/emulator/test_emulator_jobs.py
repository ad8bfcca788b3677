from __future__ import annotations

import base64
import csv
import io
import time
from collections.abc import Callable

import openai
import pytest

from emulator import EmulatorConfig, JobTiming, OpenAIEmulator
from emulator.samples import chat_example, jsonl, preference_jsonl, training_jsonl

TIMING = JobTiming()


def _steps_seconds(n_steps: int) -> float:
    return n_steps * TIMING.step_seconds


def test_job_runs_from_upload_to_succeeded(emu: OpenAIEmulator, client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        model="gpt-4.1-mini", training_file=training_file, suffix="faq", metadata={"our_id": "job_1"}
    )
    assert job.status == "validating_files"
    assert job.model == "gpt-4.1-mini-2025-04-14"
    assert job.method.type == "supervised"
    assert job.hyperparameters.n_epochs == "auto"
    assert (job.fine_tuned_model, job.finished_at, job.trained_tokens, job.error) == (None, None, None, None)

    emu.advance(TIMING.validating_seconds)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"
    emu.advance(TIMING.queued_seconds)
    running = client.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running"
    # "auto" is resolved once training starts: 12 examples -> 100 // 12 epochs, batch size 1.
    assert (running.hyperparameters.n_epochs, running.hyperparameters.batch_size) == (8, 1)
    assert running.method.supervised.hyperparameters.n_epochs == 8
    total_steps = 12 * 8
    assert running.estimated_finish == pytest.approx(
        emu.now() + _steps_seconds(total_steps) + TIMING.finalizing_seconds, abs=1
    )

    emu.advance(_steps_seconds(total_steps) + TIMING.finalizing_seconds)
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded"
    assert done.fine_tuned_model is not None
    assert done.fine_tuned_model.startswith("ft:gpt-4.1-mini-2025-04-14:emulator:faq:")
    assert done.finished_at == int(emu.now())
    assert done.estimated_finish is None
    assert done.metadata == {"our_id": "job_1"}
    assert done.trained_tokens is not None and done.trained_tokens > 0
    assert done.trained_tokens % 8 == 0  # billed once per epoch

    # The result file is a CSV of step metrics, served base64-encoded like OpenAI's.
    (result_id,) = done.result_files
    result = client.files.retrieve(result_id)
    assert result.purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(base64.b64decode(client.files.content(result_id).content).decode())))
    assert len(rows) == total_steps
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])

    model = client.models.retrieve(done.fine_tuned_model)
    assert (model.owned_by, model.shutdown_date) == ("org-emulator", "2027-01-14")
    assert done.fine_tuned_model in {m.id for m in client.models.list()}


def test_validation_failure_reports_the_error(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    few = client.files.create(file=("few.jsonl", training_jsonl(3)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=few.id)
    emu.advance(TIMING.validating_seconds)
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.code == "invalid_n_examples"
    assert failed.error.param == "training_file"
    assert "has 3 example(s)" in failed.error.message
    assert failed.finished_at is not None
    levels = {e.level for e in client.fine_tuning.jobs.list_events(job.id)}
    assert "error" in levels


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not json at all", "Line 2 is not valid JSON"),
        ('["a", "list"]', "Line 2 is not a dictionary"),
        ('{"messages": [{"role": "user", "content": "<|endoftext|>"}]}', "special token"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "unrecognized role"),
        ('{"messages": [{"role": "user", "content": "only a question"}]}', "no assistant message"),
    ],
)
def test_bad_training_lines_fail_the_job(emu: OpenAIEmulator, client: openai.OpenAI, line: str, expected: str) -> None:
    good = training_jsonl(12).splitlines()
    content = b"\n".join([good[0], line.encode(), *good[1:]])
    upload = client.files.create(file=("t.jsonl", content), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload.id)
    emu.advance(TIMING.validating_seconds)
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert failed.error.code == "invalid_training_file"
    assert failed.error.param == "training_file"
    assert expected in failed.error.message


def test_suffix_trigger_fails_mid_run(emu: OpenAIEmulator, client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini",
        training_file=training_file,
        suffix="fail-mid-run",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    emu.run_until_idle(step=5)
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert failed.error.code == "server_error"
    assert failed.error.param is None
    steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    assert max(steps) == 12  # half of 2 epochs x 12 steps
    assert failed.fine_tuned_model is None


def test_cancel_is_terminal(emu: OpenAIEmulator, client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    emu.advance(TIMING.validating_seconds + TIMING.queued_seconds + 3 * TIMING.step_seconds)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    emu.advance(10_000)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)


def test_pause_stops_progress_and_resume_continues(
    emu: OpenAIEmulator, client: openai.OpenAI, training_file: str
) -> None:
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)  # not running yet
    emu.advance(TIMING.validating_seconds + TIMING.queued_seconds + 5 * TIMING.step_seconds)

    def steps() -> int:
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
        return max((e.data["step"] for e in events if e.type == "metrics"), default=0)

    assert steps() == 5
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    assert paused.estimated_finish is None
    emu.advance(100_000)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert steps() == 5
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)  # already paused
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "running"
    emu.advance(2 * TIMING.step_seconds)
    assert steps() == 7
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)]
    assert "Fine-tuning job paused" in messages and "Fine-tuning job resumed" in messages
    emu.run_until_idle()
    assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"


def test_events_are_newest_first_and_paginate(emu: OpenAIEmulator, client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini",
        training_file=training_file,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
    )
    emu.run_until_idle()
    everything = client.fine_tuning.jobs.list_events(job.id, limit=1000)
    assert everything.has_more is False
    assert everything.data[0].message == "The job has successfully completed"
    assert everything.data[-1].message == f"Created fine-tuning job: {job.id}"
    stamps = [e.created_at for e in everything.data]
    assert stamps == sorted(stamps, reverse=True)

    first = client.fine_tuning.jobs.list_events(job.id, limit=5)
    assert first.has_more is True
    second = client.fine_tuning.jobs.list_events(job.id, limit=5, after=first.data[-1].id)
    assert [e.id for e in first.data + second.data] == [e.id for e in everything.data[:10]]
    assert [e.id for e in first] == [e.id for e in everything.data]  # auto-pagination

    metrics = [e for e in everything.data if e.type == "metrics"]
    assert len(metrics) == 12
    last = metrics[0]
    assert last.level == "info"
    assert {"step", "train_loss", "train_mean_token_accuracy", "total_steps"} <= set(last.data)
    assert (last.data["step"], last.data["total_steps"]) == (12, 12)
    assert metrics[0].data["train_loss"] < metrics[-1].data["train_loss"]


def test_checkpoints_at_the_last_epochs(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    content = training_jsonl(12)
    train = client.files.create(file=("t.jsonl", content), purpose="fine-tune").id
    valid = client.files.create(file=("v.jsonl", content), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="gpt-4.1-mini",
        training_file=train,
        validation_file=valid,
        suffix="ck",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4, "batch_size": 4}}},
    )
    emu.run_until_idle()
    done = client.fine_tuning.jobs.retrieve(job.id)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [12, 9, 6]  # 3 steps per epoch, last three epochs
    for checkpoint in checkpoints:
        assert checkpoint.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-{checkpoint.step_number}"
        assert checkpoint.fine_tuning_job_id == job.id
        assert checkpoint.metrics.step == checkpoint.step_number
        assert checkpoint.metrics.full_valid_loss is not None
    page = client.fine_tuning.jobs.checkpoints.list(job.id, limit=1, after=checkpoints[0].id)
    assert [c.step_number for c in page.data] == [9]
    assert page.has_more is True
    # Checkpoints can be used for inference.
    reply = client.chat.completions.create(
        model=checkpoints[-1].fine_tuned_model_checkpoint, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model == checkpoints[-1].fine_tuned_model_checkpoint


def test_list_filters_on_metadata_newest_first(emu: OpenAIEmulator, client: openai.OpenAI, training_file: str) -> None:
    ids = []
    for i in range(5):
        job = client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=training_file, metadata={"team": "a" if i % 2 == 0 else "b"}
        )
        ids.append(job.id)
    bare = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "a"})] == [ids[4], ids[2], ids[0]]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "b"})] == [ids[3], ids[1]]
    assert list(client.fine_tuning.jobs.list(metadata={"team": "zzz"})) == []
    page = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in page.data] == [bare.id, ids[4]]
    assert page.has_more is True
    after = client.fine_tuning.jobs.list(limit=10, after=ids[4])
    assert [j.id for j in after.data] == ids[3::-1]
    assert after.has_more is False
    no_metadata = client.fine_tuning.jobs.list(extra_query={"metadata": "null"})
    assert [j.id for j in no_metadata] == [bare.id]


@pytest.mark.parametrize(
    ("overrides", "param", "code"),
    [
        ({"suffix": "x" * 65}, "suffix", "string_above_max_length"),
        ({"suffix": ""}, "suffix", "string_below_min_length"),
        ({"seed": 2147483648}, "seed", "integer_above_max_value"),
        ({"seed": -1}, "seed", "integer_below_min_value"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "object_above_max_properties"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k", "string_above_max_length"),
        ({"metadata": {"k" * 65: "v"}}, "metadata." + "k" * 65, "string_above_max_length"),
        ({"model": "gpt-5"}, "model", "model_not_available"),
        ({"model": "no-such-model"}, "model", "model_not_available"),
        ({"method": {"type": "dpo"}, "model": "gpt-3.5-turbo"}, "method.type", "invalid_value"),
        ({"method": {"type": "unsupervised"}}, "method.type", "invalid_value"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 51}}}},
            "method.supervised.hyperparameters.n_epochs",
            "integer_above_max_value",
        ),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": 0}}}},
            "method.supervised.hyperparameters.learning_rate_multiplier",
            "decimal_below_min_value",
        ),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}},
            "method.dpo.hyperparameters.beta",
            "decimal_above_max_value",
        ),
        ({"training_file": "file-doesnotexist"}, "training_file", None),
        ({"unexpected": 1}, "unexpected", "unknown_parameter"),
    ],
)
def test_create_rejects_bad_requests(
    emu: OpenAIEmulator, client: openai.OpenAI, training_file: str, overrides: dict, param: str, code: str | None
) -> None:
    body = {"model": "gpt-4o-mini", "training_file": training_file, **overrides}
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/fine_tuning/jobs", body=body, cast_to=object)
    assert info.value.param == param
    assert info.value.code == code
    assert emu.state()["jobs"] == []


def test_training_file_with_wrong_purpose(client: openai.OpenAI) -> None:
    batch_file = client.files.create(file=("b.jsonl", training_jsonl(12)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=batch_file.id)
    assert info.value.param == "training_file"
    assert "purpose 'batch'" in info.value.message


def test_deprecated_top_level_hyperparameters_are_accepted(
    emu: OpenAIEmulator, client: openai.OpenAI, training_file: str
) -> None:
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=training_file, hyperparameters={"n_epochs": 2, "batch_size": 3}
    )
    assert job.method.supervised.hyperparameters.n_epochs == 2
    emu.run_until_idle()
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert (done.hyperparameters.n_epochs, done.hyperparameters.batch_size) == (2, 3)
    assert done.hyperparameters.learning_rate_multiplier == 1.8
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini",
            training_file=training_file,
            hyperparameters={"n_epochs": 2},
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
        )


def test_dpo_job_resolves_beta(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    upload = client.files.create(file=("p.jsonl", preference_jsonl(12)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=upload.id, method={"type": "dpo", "dpo": {"hyperparameters": {}}}
    )
    assert job.method.dpo.hyperparameters.beta == "auto"
    emu.run_until_idle()
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    assert done.method.dpo.hyperparameters.beta == 0.1


def test_chat_data_fails_a_dpo_job(emu: OpenAIEmulator, client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file, method={"type": "dpo"})
    emu.run_until_idle()
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert "preference example" in failed.error.message


def test_fine_tuning_a_fine_tuned_model(emu: OpenAIEmulator, client: openai.OpenAI, training_file: str) -> None:
    first = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    emu.run_until_idle()
    tuned = client.fine_tuning.jobs.retrieve(first.id).fine_tuned_model
    second = client.fine_tuning.jobs.create(model=tuned, training_file=training_file)
    assert second.model == tuned
    emu.run_until_idle()
    again = client.fine_tuning.jobs.retrieve(second.id)
    assert again.status == "succeeded"
    assert again.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:emulator::")


def test_missing_job_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_running_clock_moves_jobs_without_polling(sdk: Callable[..., openai.OpenAI]) -> None:
    config = EmulatorConfig(speed=1000, job_timing=JobTiming(validating_seconds=1, queued_seconds=1, step_seconds=1))
    with OpenAIEmulator(config=config) as emu:
        client = sdk(emu.base_url)
        upload = client.files.create(
            file=("t.jsonl", jsonl(chat_example(str(i), "x") for i in range(10))), purpose="fine-tune"
        )
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload.id)
        deadline = time.monotonic() + 10
        while not emu.core.webhooks.messages() and time.monotonic() < deadline:
            time.sleep(0.02)  # the ticker thread, not a request, must finish the job
        assert [m.type for m in emu.core.webhooks.messages()] == ["fine_tuning.job.succeeded"]
        assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"


def test_reinforcement_needs_a_grader(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    prompts = jsonl({"messages": [{"role": "user", "content": f"Spell {i}"}], "answer": str(i)} for i in range(10))
    upload = client.files.create(file=("rl.jsonl", prompts), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="o4-mini", training_file=upload.id, method={"type": "reinforcement"})
    assert info.value.param == "method.reinforcement.grader"
    grader = {
        "type": "string_check",
        "name": "exact",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
    }
    job = client.fine_tuning.jobs.create(
        model="o4-mini",
        training_file=upload.id,
        method={"type": "reinforcement", "reinforcement": {"grader": grader}},
    )
    assert job.method.reinforcement.grader.type == "string_check"
    emu.run_until_idle()
    assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="o4-mini", training_file=upload.id)  # supervised is not offered
    assert info.value.param == "method.type"
