"""Batch-mode generation against the OpenAI emulator (a real HTTP server, frozen clock): submit, poll, collect joined
on custom_id, partial and missing results, crash-safe submission, splitting at the limits, cancel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import openai
import pytest

from emulator import BatchOutcomeRule, BatchTiming, EmulatorConfig, OpenAIEmulator
from service.errors import InvalidInput
from service.evaluations.generation import GenRequest
from service.evaluations.generation.batch import (
    NOT_RUN_CODES,
    TAG_KEY,
    BatchError,
    BatchResult,
    BatchState,
    build_batch_lines,
    cancel,
    collect,
    find_batch,
    not_run,
    part_tag,
    plan_batches,
    poll,
    split_requests,
    submit,
    submit_all,
)

MODEL = "gpt-4o-mini"
TIMING = BatchTiming()
CREATE = "POST /v1/batches"
UPLOAD = "POST /v1/files"


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[OpenAIEmulator]:
    rules = [
        BatchOutcomeRule(metadata={"emulator_outcome": "expire"}, outcome="expired"),
        BatchOutcomeRule(metadata={"emulator_outcome": "fail"}, outcome="failed"),
        BatchOutcomeRule(metadata={"emulator_outcome": "lose_lines"}, outcome="lose_lines"),
    ]
    with OpenAIEmulator(config=EmulatorConfig(speed=0, batch_outcome_rules=rules)) as emulator:
        yield emulator


@pytest.fixture
def emu(shared_emulator: OpenAIEmulator) -> OpenAIEmulator:
    shared_emulator.reset()
    return shared_emulator


@pytest.fixture
def client(emu: OpenAIEmulator) -> Iterator[openai.OpenAI]:
    # SDK retries on, as a caller's client would have them: creating calls must turn them off themselves.
    with openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=2, timeout=10) as sdk:
        yield sdk


def _requests(n: int, *, prefix: str = "ex", model: str = MODEL, **params: object) -> list[GenRequest]:
    return [
        GenRequest(
            key=f"{prefix}{i}",
            model=model,
            messages=[{"role": "user", "content": f"Question number {i}?"}],
            params={"temperature": 0, **params},
        )
        for i in range(n)
    ]


def _batches(client: openai.OpenAI) -> list[openai.types.Batch]:
    return list(client.batches.list(limit=100))


def _finish(emu: OpenAIEmulator, client: openai.OpenAI, state: BatchState) -> BatchState:
    emu.run_until_idle()
    state = poll(client, state)
    assert state.done
    return state


def test_happy_path_results_joined_on_custom_id(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    requests = _requests(8)
    state = submit(client, requests, "eval_1/cand_a", metadata={"evaluation_id": "eval_1"})
    assert (state.phase, state.provider_status, state.reconciled) == ("submitted", "validating", False)
    assert state.custom_ids == [r.key for r in requests]
    assert state.model == MODEL and state.batch_id and state.input_file_id

    batch = client.batches.retrieve(state.batch_id)
    assert batch.metadata == {"evaluation_id": "eval_1", TAG_KEY: "eval_1/cand_a"}
    assert (batch.endpoint, batch.completion_window) == ("/v1/chat/completions", "24h")
    upload = client.files.retrieve(state.input_file_id)
    assert upload.purpose == "batch" and upload.filename == state.input_filename
    assert upload.filename.startswith("finetune-batch_eval_1_cand_a_")
    sent = [json.loads(line) for line in client.files.content(state.input_file_id).text.splitlines()]
    assert [line["custom_id"] for line in sent] == state.custom_ids
    assert sent[0] == {
        "custom_id": "ex0",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": requests[0].messages, "temperature": 0},
    }

    emu.advance(TIMING.validating_seconds + 3 * TIMING.seconds_per_request)
    state = poll(client, state)
    assert (state.phase, state.provider_status) == ("submitted", "in_progress")
    assert (state.counts.total, state.counts.completed) == (8, 3)
    with pytest.raises(ValueError, match="poll until it is done"):
        collect(client, state)

    # The state survives a trip through the database as JSON.
    state = BatchState.model_validate_json(state.model_dump_json())
    state = _finish(emu, client, state)
    assert (state.phase, state.provider_status) == ("finished", "completed")
    assert state.output_file_id and state.error_file_id is None
    assert state.input_tokens > 0 and state.output_tokens > 0
    assert state.finished_at is not None and state.submitted_at is not None

    # The output file is shuffled; the results come back in request order, each with its own answer.
    output_order = [json.loads(x)["custom_id"] for x in client.files.content(state.output_file_id).text.splitlines()]
    assert output_order != state.custom_ids
    results = collect(client, state)
    assert [r.key for r in results] == state.custom_ids
    for i, result in enumerate(results):
        assert isinstance(result, BatchResult)
        assert result.ok and result.error is None and not result.retryable
        assert f"Question number {i}?" in (result.output or "")
        assert result.finish_reason == "stop" and result.status_code == 200 and result.request_id
        assert result.input_tokens > 0 and result.output_tokens > 0
        assert result.batch_id == state.batch_id and result.attempts == 1
        assert result.total_s == (state.finished_at - state.submitted_at).total_seconds() > 0
    assert sum(r.input_tokens for r in results) == state.input_tokens
    assert sum(r.output_tokens for r in results) == state.output_tokens
    assert not_run(results) == []
    # Polling or submitting a finished batch again costs no call that changes anything.
    assert poll(client, state) == state
    assert submit(client, requests, "eval_1/cand_a", state=state) == state
    assert emu.call_count(CREATE) == 1


def test_partial_errors_are_failed_results(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    requests = [
        *_requests(3),
        GenRequest(key="too-hot", model=MODEL, messages=[{"role": "user", "content": "x"}], params={"temperature": 3}),
        GenRequest(key="short", model=MODEL, messages=[{"role": "user", "content": "x"}], params={"max_tokens": 1}),
    ]
    state = _finish(emu, client, submit(client, requests, "partial"))
    assert (state.counts.completed, state.counts.failed) == (4, 1)
    assert state.output_file_id and state.error_file_id
    results = {r.key: r for r in collect(client, state)}
    hot = results["too-hot"]
    assert not hot.ok and hot.status_code == 400 and hot.error_kind == "bad_request"
    assert hot.error and hot.error.startswith("400: ") and "temperature" in hot.error
    assert not hot.retryable and hot.attempts == 1 and hot.output is None
    short = results["short"]
    assert short.ok and short.finish_reason == "length" and short.output_tokens == 1
    assert all(results[f"ex{i}"].ok for i in range(3))
    assert not_run(results.values()) == []


def test_requests_without_a_line_come_back_failed(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    requests = _requests(5)
    state = _finish(emu, client, submit(client, requests, "lossy", metadata={"emulator_outcome": "lose_lines"}))
    assert state.provider_status == "completed" and state.counts.completed == 5
    results = collect(client, state)
    assert [r.key for r in results] == state.custom_ids
    assert [r.ok for r in results] == [True, True, True, True, False]
    lost = results[-1]
    assert lost.error_code == "batch_missing_line" and lost.retryable and lost.attempts == 0
    assert not_run(results) == ["ex4"]


def test_expired_batch_reports_every_request_as_not_run(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    state = _finish(emu, client, submit(client, _requests(3), "late", metadata={"emulator_outcome": "expire"}))
    assert (state.phase, state.provider_status) == ("finished", "expired")
    results = collect(client, state)
    assert [r.error_code for r in results] == ["batch_expired"] * 3
    assert all(not r.ok and r.retryable for r in results)
    assert not_run(results) == state.custom_ids


def test_failed_batch_reports_the_reason(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    state = _finish(emu, client, submit(client, _requests(2), "doomed", metadata={"emulator_outcome": "fail"}))
    assert (state.phase, state.provider_status) == ("failed", "failed")
    assert state.errors and state.errors[0].code == "batch_failed"
    results = collect(client, state)
    assert [r.error_code for r in results] == ["batch_failed", "batch_failed"]
    assert "forced by the emulator" in (results[0].error or "")


def test_crash_between_create_and_persist_adopts_the_batch(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    requests = _requests(4)
    first = submit(client, requests, "eval_2/cand_b")
    # The worker died before persisting ``first``: the re-run starts from nothing and must not pay twice.
    again = submit(client, requests, "eval_2/cand_b")
    assert again.batch_id == first.batch_id and again.input_file_id == first.input_file_id
    assert again.reconciled
    assert len(_batches(client)) == 1 and emu.call_count(CREATE) == 1 and emu.call_count(UPLOAD) == 1
    # Another tag is another batch.
    other = submit(client, requests, "eval_2/cand_c")
    assert other.batch_id != first.batch_id and len(_batches(client)) == 2


def test_planned_states_are_resumed(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    requests = _requests(4)
    [planned] = plan_batches(requests, "eval_3", metadata={"evaluation_id": "eval_3"})
    assert (planned.phase, planned.tag, planned.custom_ids) == (
        "pending",
        part_tag("eval_3", 0),
        ["ex0", "ex1", "ex2", "ex3"],
    )
    planned = BatchState.model_validate_json(planned.model_dump_json())
    first = submit(client, requests, planned.tag, state=planned)
    assert client.batches.retrieve(first.batch_id).metadata == {"evaluation_id": "eval_3", TAG_KEY: planned.tag}
    # Crash before persisting ``first``: the pending state persisted earlier is resumed and finds the batch.
    again = submit(client, requests, planned.tag, state=planned)
    assert again.batch_id == first.batch_id and again.reconciled and emu.call_count(CREATE) == 1
    with pytest.raises(ValueError, match="differ"):
        submit(client, requests[:3], planned.tag, state=planned)


def test_lost_create_answer_is_reconciled_without_sdk_retry(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    requests = _requests(3)
    # The batch is created but the answer is a 500: an SDK retry would create a second batch.
    emu.add_fault(CREATE, "act_then_500", count=1)
    with pytest.raises(BatchError) as caught:
        submit(client, requests, "flaky")
    err = caught.value
    assert err.transient and err.status_code == 500
    assert err.state is not None and err.state.phase == "uploaded" and err.state.input_file_id
    assert emu.call_count(CREATE) == 1 and len(_batches(client)) == 1

    state = submit(client, requests, "flaky", state=err.state)
    assert state.reconciled and state.phase == "submitted"
    assert len(_batches(client)) == 1 and emu.call_count(CREATE) == 1 and emu.call_count(UPLOAD) == 1


def test_lost_upload_answer_reuses_the_file(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    requests = _requests(3)
    emu.add_fault(UPLOAD, "act_then_drop", count=1)
    with pytest.raises(BatchError) as caught:
        submit(client, requests, "upload-dropped")
    assert caught.value.transient and caught.value.state is not None and caught.value.state.phase == "pending"
    assert emu.call_count(UPLOAD) == 1
    state = submit(client, requests, "upload-dropped", state=caught.value.state)
    assert emu.call_count(UPLOAD) == 1 and not state.reconciled
    assert [f.id for f in client.files.list(purpose="batch")] == [state.input_file_id]


def test_fatal_errors_are_not_transient(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    emu.add_fault(CREATE, "500", count=1)
    with pytest.raises(BatchError) as caught:
        submit(client, _requests(2), "server-down")
    assert caught.value.transient and len(_batches(client)) == 0
    assert submit(client, _requests(2), "server-down", state=caught.value.state).phase == "submitted"

    with openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0) as plain:
        state = submit(plain, _requests(1), "fine")
    with pytest.raises(BatchError) as caught:
        poll(client.with_options(max_retries=0), state.model_copy(update={"batch_id": "batch_nope"}))
    assert not caught.value.transient and caught.value.status_code == 404


def test_splitting_at_the_limits(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    requests = _requests(7) + _requests(2, prefix="other", model="gpt-4.1-mini")
    parts = split_requests(requests, max_requests=3)
    assert [[r.key for r in p] for p in parts] == [
        ["ex0", "ex1", "ex2"],
        ["ex3", "ex4", "ex5"],
        ["ex6"],
        ["other0", "other1"],
    ]
    line_bytes = len(next(build_batch_lines(requests[:1])))
    by_bytes = split_requests(requests[:7], max_bytes=2 * line_bytes + 1)
    assert [len(p) for p in by_bytes] == [2, 2, 2, 1]
    assert all(sum(len(line) for line in build_batch_lines(p)) <= 2 * line_bytes + 1 for p in by_bytes)
    with pytest.raises(InvalidInput, match="bytes as a batch line"):
        split_requests(requests, max_bytes=line_bytes - 1)
    with pytest.raises(InvalidInput, match="twice"):
        split_requests(requests + requests[:1])
    with pytest.raises(InvalidInput, match="more than the 3"):
        submit(client, requests[:4], "too-many", max_requests=3)
    with pytest.raises(InvalidInput, match="one model"):
        submit(client, requests, "mixed")
    assert emu.call_count(UPLOAD) == 0

    states = submit_all(client, requests, "eval_4", max_requests=3)
    assert [s.tag for s in states] == [part_tag("eval_4", i) for i in range(4)]
    assert [s.model for s in states] == [MODEL, MODEL, MODEL, "gpt-4.1-mini"]
    assert len(_batches(client)) == 4
    # A re-run after a crash in the middle finds all four.
    assert [s.batch_id for s in submit_all(client, requests, "eval_4", max_requests=3)] == [s.batch_id for s in states]
    assert len(_batches(client)) == 4 and emu.call_count(CREATE) == 4

    emu.run_until_idle()
    results = [r for s in states for r in collect(client, poll(client, s))]
    assert [r.key for r in results] == [r.key for r in requests]
    assert all(r.ok for r in results)
    assert all((r.model or "").startswith("gpt-4.1-mini") for r in results[-2:])
    assert all((r.model or "").startswith("gpt-4o-mini") for r in results[:-2])


def test_cancel_keeps_finished_requests(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    state = submit(client, _requests(6), "stop-me")
    emu.advance(TIMING.validating_seconds + 2 * TIMING.seconds_per_request)
    state = cancel(client, state)
    assert (state.phase, state.provider_status) == ("submitted", "cancelling")
    # Cancelling again while it is cancelling is not an error.
    assert cancel(client, state).provider_status == "cancelling"
    state = _finish(emu, client, state)
    assert (state.phase, state.provider_status) == ("cancelled", "cancelled")
    results = collect(client, state)
    assert [r.ok for r in results] == [True, True, False, False, False, False]
    assert {r.error_code for r in results[2:]} == {"batch_cancelled"}
    assert set(not_run(results)) == {"ex2", "ex3", "ex4", "ex5"} and {"batch_cancelled"} <= NOT_RUN_CODES
    assert cancel(client, state) == state


def test_cancel_before_submit(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    [never] = plan_batches(_requests(2), "never")
    cancelled = cancel(client, never)
    assert cancelled.phase == "cancelled" and cancelled.batch_id is None
    assert [r.error_code for r in collect(client, cancelled)] == ["batch_cancelled"] * 2
    assert len(_batches(client)) == 0

    # A submit that crashed after creating: cancel finds the batch by its tag and cancels it on the provider.
    [planned] = plan_batches(_requests(2), "orphan")
    submit(client, _requests(2), planned.tag, state=planned)
    state = cancel(client, planned)
    assert state.reconciled and state.batch_id and state.provider_status == "cancelling"
    assert client.batches.retrieve(state.batch_id).status == "cancelling"


def test_find_batch_walks_pages_and_stops_at_the_cutoff(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    old = [submit(client, _requests(1), f"old-{i}") for i in range(4)]
    emu.advance(3600)
    for i in range(2):
        submit(client, _requests(1), f"new-{i}")
    # Newest first, two a page: [new-1, new-0], [old-3, old-2], [old-1, old-0].
    listed = emu.call_count("GET /v1/batches")
    found = find_batch(client, "old-0", page_size=2)
    assert found is not None and found.id == old[0].batch_id
    assert emu.call_count("GET /v1/batches") - listed == 3
    assert find_batch(client, "old-0", page_size=2, max_pages=2) is None
    # A state planned an hour after the old ones cannot have made them: the walk stops at the first of them.
    since = datetime.fromtimestamp(emu.now(), UTC)
    listed = emu.call_count("GET /v1/batches")
    assert find_batch(client, "old-0", since=since, page_size=2) is None
    assert find_batch(client, "absent", since=since, page_size=2) is None
    assert emu.call_count("GET /v1/batches") - listed == 4
    assert find_batch(client, "new-0", since=since, page_size=2) is not None
