"""Cancelling a batch-mode evaluation through the API reaches the provider: the emulator's batch is cancelled, the
evaluation ends cancelled with the answers the batch finished, and the candidate says which batch was cancelled (or
why the provider did not cancel it)."""

from __future__ import annotations

import json

import pytest

from helpers import wait_for

MODEL = "gpt-4.1-mini-2025-04-14"


@pytest.fixture
def emulator():  # overrides the integration conftest's: a batch that runs long enough to be cancelled midway
    from emulator import BatchTiming, EmulatorConfig, OpenAIEmulator

    # 200x speed: 60 emulated seconds per request is 0.3 s real, so 30 requests take about 9 s.
    config = EmulatorConfig(
        speed=200.0, batch_timing=BatchTiming(validating_seconds=5, seconds_per_request=60, cancelling_seconds=100)
    )
    with OpenAIEmulator(config) as emu:
        yield emu


def _dataset(stack, n: int = 30) -> str:
    lines = "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Question {i}?"},
                    {"role": "assistant", "content": f"Answer {i}"},
                ]
            }
        )
        + "\n"
        for i in range(n)
    )
    return stack.upload(lines.encode(), "test.jsonl")["id"]


def _start_and_cancel_midway(stack) -> tuple[dict, str]:
    body = {
        "dataset_id": _dataset(stack),
        "candidates": [{"kind": "model", "name": "base", "model": MODEL}],
        "mode": "batch",
    }
    r = stack.client.post("/v1/evaluations", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    path = f"/v1/evaluations/{r.json()['id']}"
    batch = wait_for(
        lambda: next(
            (b for b in stack.emulator.core.dump()["batches"] if b["request_counts"]["completed"] >= 3), None
        ),
        timeout=30,
    )
    assert stack.get(path)["progress"]["candidates"]["base"]["phase"] == "batch_submitted"
    r = stack.client.post(f"{path}/cancel", headers=stack.headers)
    assert r.status_code == 200, r.text
    return wait_for(lambda: (o := stack.get(path))["status"] in ("cancelled", "failed", "succeeded") and o, 60), batch[
        "id"
    ]


def _batch(stack, batch_id: str) -> dict:
    return next(b for b in stack.emulator.core.dump()["batches"] if b["id"] == batch_id)


def test_cancel_cancels_the_providers_batch_and_keeps_its_answers(stack):
    ev, batch_id = _start_and_cancel_midway(stack)
    assert ev["status"] == "cancelled", ev
    batch = _batch(stack, batch_id)
    # Ended only after the provider had stopped the batch, and with the answers it finished before that.
    assert batch["status"] == "cancelled"
    assert stack.emulator.calls("POST /v1/batches/{batch_id}/cancel") == 1
    done = batch["request_counts"]["completed"]
    assert 3 <= done < 30
    result = ev["results"]["candidates"][0]
    assert result["n"] == done and result["n_failed"] == 0
    candidate = ev["progress"]["candidates"]["base"]
    assert candidate["phase"] == "cancelled"
    assert candidate["batch_cancel"] == f"cancelled at the provider: {batch_id}"


def test_a_provider_that_does_not_cancel_is_named_on_the_candidate(stack):
    stack.emulator.add_fault(r"POST /v1/batches/[^/]+/cancel", "500", count=100)
    ev, batch_id = _start_and_cancel_midway(stack)
    assert ev["status"] == "cancelled", ev
    assert _batch(stack, batch_id)["status"] in ("in_progress", "finalizing", "completed")
    note = ev["progress"]["candidates"]["base"]["batch_cancel"]
    assert note.startswith(f"not cancelled by the provider (it may still run and bill): {batch_id}: "), note
