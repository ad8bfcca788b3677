from __future__ import annotations

import json
from collections.abc import Callable

import openai
import pytest

from emulator import BatchTiming, EmulatorConfig, OpenAIEmulator
from emulator.samples import batch_jsonl, batch_line, jsonl

TIMING = BatchTiming()
PROMPTS = {f"req-{i}": f"Question number {i}?" for i in range(20)}


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    assert file_id is not None
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def _create(client: openai.OpenAI, content: bytes, **kw: object) -> openai.types.Batch:
    upload = client.files.create(file=("in.jsonl", content), purpose="batch")
    return client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h", **kw
    )


def test_batch_completes_with_output_joined_on_custom_id(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    items = [batch_line(cid, "gpt-4o-mini", prompt) for cid, prompt in PROMPTS.items()]
    items.append(batch_line("bad-model", "gpt-99", "hi"))
    batch = _create(client, jsonl(items), metadata={"our_id": "eval_1"})
    assert batch.status == "validating"
    assert batch.request_counts.total == 0
    emu.advance(TIMING.validating_seconds)
    running = client.batches.retrieve(batch.id)
    assert running.status == "in_progress"
    assert running.request_counts.total == 21
    emu.advance(5 * TIMING.seconds_per_request)
    assert client.batches.retrieve(batch.id).request_counts.completed == 5
    emu.advance(16 * TIMING.seconds_per_request)
    assert client.batches.retrieve(batch.id).status == "finalizing"
    emu.advance(TIMING.finalizing_seconds)

    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (20, 1)
    assert done.completed_at is not None and done.in_progress_at is not None
    assert done.metadata == {"our_id": "eval_1"}
    assert done.model == "gpt-4o-mini"
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens > 0

    outputs = _lines(client, done.output_file_id)
    by_id = {line["custom_id"]: line for line in outputs}
    assert set(by_id) == set(PROMPTS)
    assert [line["custom_id"] for line in outputs] != list(PROMPTS)  # order is not kept
    for custom_id, prompt in PROMPTS.items():
        response = by_id[custom_id]["response"]
        assert response["status_code"] == 200
        assert response["body"]["object"] == "chat.completion"
        assert prompt in response["body"]["choices"][0]["message"]["content"]
    (error,) = _lines(client, done.error_file_id)
    assert error["custom_id"] == "bad-model"
    assert error["response"]["status_code"] == 404
    assert error["response"]["body"]["error"]["code"] == "model_not_found"
    assert [m.type for m in emu.drain_webhooks()] == ["batch.completed"]


def test_invalid_input_file_fails_the_batch(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    good = json.dumps(batch_line("a", "gpt-4o-mini", "hi"))
    wrong_url = json.dumps({**batch_line("b", "gpt-4o-mini", "hi"), "url": "/v1/embeddings"})
    duplicate = json.dumps(batch_line("a", "gpt-4o-mini", "again"))
    batch = _create(client, "\n".join([good, "{oops", wrong_url, duplicate]).encode())
    emu.advance(TIMING.validating_seconds)
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert failed.failed_at is not None
    assert [(e.code, e.line) for e in failed.errors.data] == [
        ("invalid_json_line", 2),
        ("mismatched_endpoint", 3),
        ("duplicate_custom_id", 4),
    ]
    assert failed.output_file_id is None
    assert [m.type for m in emu.drain_webhooks()] == ["batch.failed"]


def test_cancel_keeps_finished_requests(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    batch = _create(client, batch_jsonl(PROMPTS))
    emu.advance(TIMING.validating_seconds + 3 * TIMING.seconds_per_request)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None
    emu.advance(TIMING.cancelling_seconds)
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled"
    assert cancelled.request_counts.completed == 3
    assert len(_lines(client, cancelled.output_file_id)) == 3
    not_run = _lines(client, cancelled.error_file_id)
    assert len(not_run) == 17
    assert {line["error"]["code"] for line in not_run} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)
    assert [m.type for m in emu.drain_webhooks()] == ["batch.cancelled"]


def test_batch_expires_after_its_window(sdk: Callable[..., openai.OpenAI]) -> None:
    config = EmulatorConfig(speed=0, batch_timing=BatchTiming(completion_window_seconds=600))
    with OpenAIEmulator(config=config) as emu:
        client = sdk(emu.base_url)
        batch = _create(client, batch_jsonl(PROMPTS), metadata={"emulator_outcome": "expire"})
        emu.advance(599)
        assert client.batches.retrieve(batch.id).status == "in_progress"
        emu.advance(1)
        expired = client.batches.retrieve(batch.id)
        assert expired.status == "expired"
        assert expired.expired_at == expired.expires_at
        assert {line["error"]["code"] for line in _lines(client, expired.error_file_id)} == {"batch_expired"}
        assert [m.type for m in emu.drain_webhooks()] == ["batch.expired"]


def test_batch_create_checks(client: openai.OpenAI) -> None:
    tune = client.files.create(file=("t.jsonl", b"{}\n"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(input_file_id=tune.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert info.value.param == "input_file_id"
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")
    assert info.value.param == "input_file_id"
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(
            input_file_id=tune.id,
            endpoint="/v1/chat/completions",
            completion_window="48h",  # type: ignore[arg-type]
        )
    assert info.value.param == "completion_window"


def test_list_batches_newest_first(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    ids = [_create(client, batch_jsonl({"a": "b"})).id for _ in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2]
    assert page.has_more is True
    assert [b.id for b in client.batches.list()] == ids[::-1]
