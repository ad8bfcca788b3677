"""Evaluations that run a model on this machine go to the device queue (one task at a time, shared with local
trainings); the others to the default queue. The API and the sweeper both send them there."""

from __future__ import annotations

import pytest

GRADERS = [{"type": "exact_match", "name": "exact"}]


@pytest.fixture
def sent(monkeypatch):  # type: ignore[no-untyped-def]
    from service import queue

    messages: list[tuple[str, tuple, str]] = []

    def enqueue(task: str, *args: object, queue: str = "default") -> bool:
        messages.append((task, args, queue))
        return True

    monkeypatch.setattr(queue, "enqueue", enqueue)
    return messages


def test_local_inference_evaluations_run_on_the_device_queue(client, project, chat_jsonl, sent):
    from service.db import session_scope
    from service.evaluations.models import Evaluation
    from worker.sweeper import Sweeper

    h = project["headers"]
    r = client.post("/v1/datasets", files={"file": ("test.jsonl", chat_jsonl)}, headers=h)
    assert r.status_code == 201 and r.json()["status"] == "ready", r.text
    dataset_id = r.json()["id"]

    def create(candidates: list[dict]) -> str:
        body = {"dataset_id": dataset_id, "candidates": candidates, "graders": GRADERS}
        r = client.post("/v1/evaluations", json=body, headers=h)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    local = create([{"kind": "model", "name": "base", "provider": "local", "model": "some-org/some-model"}])
    remote = create([{"kind": "model", "name": "base", "provider": "openai", "model": "gpt-4.1-mini-2025-04-14"}])
    mixed = create(
        [
            {"kind": "model", "name": "remote", "provider": "openai", "model": "gpt-4.1-mini-2025-04-14"},
            {"kind": "model", "name": "local", "provider": "local", "model": "some-org/some-model"},
        ]
    )
    expected = {local: "train", remote: "default", mixed: "train"}
    assert [(task, args[0], q) for task, args, q in sent if task == "evaluations.run"] == [
        ("evaluations.run", eid, q) for eid, q in expected.items()
    ]
    with session_scope() as s:
        assert {eid: s.get(Evaluation, eid).worker_queue for eid in expected} == expected

    # Messages are only wake-ups: the sweeper sends due rows again, each to its own queue.
    sent.clear()
    Sweeper(interval_s=1, requeue_after_s=0).sweep_once()
    assert {args[0]: q for task, args, q in sent if task == "evaluations.run"} == expected
