"""POST /v1/datasets/distill on the OpenAI emulator as a hosted teacher: prompts only in, a filtered, deduplicated
chat dataset out (validated like any upload, linked to its source and teacher, with tokens and cost); a cancelled
distillation keeps its answers as a dataset, and its resume asks the teacher only what it had not answered."""

from __future__ import annotations

import json
import re
from typing import Any

from helpers import wait_for

TEACHER = "gpt-4o-mini-2024-07-18"
CHAT = "POST /v1/chat/completions"


def prompts(n: int) -> bytes:
    rows = [
        {"messages": [{"role": "system", "content": "Add one."}, {"role": "user", "content": f"What is {i} + 1?"}]}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def teacher_answer(_model: str, messages: list[dict[str, Any]]) -> str | None:
    """Right answers, except that the teacher refuses every prompt whose number ends in 3 or 7."""
    m = re.search(r"What is (\d+) \+ 1\?", messages[-1]["content"])
    if m is None:
        return None
    i = int(m.group(1))
    return "I cannot help with that." if i % 10 in (3, 7) else f"The answer is {i + 1}."


def _distill(stack, body: dict[str, Any]) -> dict[str, Any]:
    r = stack.client.post("/v1/datasets/distill", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    return r.json()


def _wait_run(stack, run_id: str, statuses=("succeeded", "failed", "cancelled"), timeout=120.0) -> dict[str, Any]:
    return wait_for(
        lambda: (run := stack.get(f"/v1/datasets/distill/{run_id}"))["status"] in statuses and run, timeout=timeout
    )


def test_hosted_teacher_answers_become_a_filtered_deduplicated_dataset(stack):
    stack.emulator.core.config.answer_fn = teacher_answer
    source = stack.upload(prompts(20), "prompts.jsonl")
    # Prompts only: invalid as a training set, valid as prompts.
    assert source["status"] == "invalid"
    run = _distill(
        stack,
        {
            "source_dataset_id": source["id"],
            "teacher": {"kind": "model", "name": "teacher", "model": TEACHER},
            "sampling": {"temperature": 0, "max_tokens": 32},
            "answers_per_prompt": 2,
            "filters": {"graders": [{"type": "regex", "name": "answers", "pattern": "^The answer is"}]},
        },
    )
    assert run["id"].startswith("dsr_") and run["status"] == "generating" and run["evaluation_id"]
    run = _wait_run(stack, run["id"])
    assert run["status"] == "succeeded", run
    counts = run["counts"]
    # 20 prompts x 2 answers; 4 prompts refused (both answers dropped by the filter); greedy answers are the same
    # twice, so exact dedupe keeps one of each pair.
    assert counts["prompts"] == 20 and counts["answers_requested"] == 40 and counts["answered"] == 40
    assert counts["filtered_out"] == {"answers": 8, "non_empty": 0}
    assert counts["exact_duplicates"] == 16 and counts["kept"] == 16
    assert stack.emulator.core.calls()[CHAT] == 40
    usage = run["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["cost_usd"] is not None and float(usage["cost_usd"]) > 0 and usage["price_table_version"]

    ds = stack.get(f"/v1/datasets/{run['dataset_id']}")
    assert ds["status"] == "ready" and ds["format"] == "chat" and ds["n_examples"] == 16
    assert ds["source_dataset_id"] == source["id"]
    assert ds["derivation"]["kind"] == "distillation" and ds["derivation"]["distill_run_id"] == run["id"]
    assert ds["derivation"]["teacher"]["model"] == TEACHER
    assert ds["summary"]["tokens"]["o200k_base"] > 0
    content = stack.client.get(f"/v1/files/{ds['id']}/content", headers=stack.headers)
    lines = [json.loads(x) for x in content.text.splitlines()] if content.status_code == 200 else []
    if lines:  # the OpenAI-shaped file route serves the dataset's bytes
        assert lines[0]["messages"][-1] == {"role": "assistant", "content": "The answer is 1."}
        assert all(not line["messages"][-1]["content"].startswith("I cannot") for line in lines)

    # The generation pass is an evaluation of the teacher, visible as such.
    evaluation = stack.get(f"/v1/evaluations/{run['evaluation_id']}")
    assert evaluation["status"] == "succeeded"
    assert [c["name"] for c in evaluation["candidates"]] == ["teacher", "teacher.2"]


def test_bad_requests_name_the_field(stack):
    source = stack.upload(prompts(12), "prompts.jsonl")
    body = {"source_dataset_id": source["id"], "teacher": {"kind": "model", "name": "t", "model": TEACHER}}
    r = stack.client.post("/v1/datasets/distill", json={**body, "answers_per_prompt": 9}, headers=stack.headers)
    assert r.status_code == 422 and "answers_per_prompt" in r.text
    r = stack.client.post(
        "/v1/datasets/distill", json={**body, "source_dataset_id": "ds_missing"}, headers=stack.headers
    )
    assert r.status_code == 404, r.text
    bad = stack.upload(b'{"messages": [{"role": "user"}]}\n' * 12, "broken.jsonl")
    r = stack.client.post("/v1/datasets/distill", json={**body, "source_dataset_id": bad["id"]}, headers=stack.headers)
    assert r.status_code == 409 and r.json()["code"] == "dataset_not_usable", r.text
    job_teacher = {"kind": "job", "name": "t", "job_id": "job_missing"}
    r = stack.client.post("/v1/datasets/distill", json={**body, "teacher": job_teacher}, headers=stack.headers)
    assert r.status_code == 404, r.text


def test_cancelled_distillation_keeps_its_answers_and_resumes_without_asking_twice(stack):
    stack.emulator.core.config.answer_fn = teacher_answer
    source = stack.upload(prompts(40), "prompts.jsonl")
    run = _distill(
        stack,
        {
            "source_dataset_id": source["id"],
            "teacher": {"kind": "model", "name": "teacher", "model": TEACHER},
            "sampling": {"temperature": 0, "max_tokens": 32},
            # One request at a time, paced: the cancel lands mid-run.
            "limits": {"max_concurrency": 1, "requests_per_minute": 120},
            "filters": {"dedupe": {"exact": True, "near": True}},
        },
    )
    # Answers are stored in small batches, so the teacher's own count says how far it got.
    wait_for(lambda: stack.emulator.core.calls().get(CHAT, 0) >= 6, timeout=60)
    r = stack.client.post(f"/v1/datasets/distill/{run['id']}/cancel", headers=stack.headers)
    assert r.status_code == 200 and r.json()["cancel_requested"], r.text
    cancelled = _wait_run(stack, run["id"])
    assert cancelled["status"] == "cancelled", cancelled
    first = stack.emulator.core.calls()[CHAT]
    answered = cancelled["counts"]["answered"]
    assert 6 <= answered < 40 and first == answered
    # What it had is a dataset already (prompts ending in 3 and 7 are answered too: no grader filter here).
    partial = stack.get(f"/v1/datasets/{cancelled['dataset_id']}")
    assert partial["n_examples"] == answered and partial["status"] == "ready"

    r = stack.client.post(f"/v1/datasets/distill/{run['id']}/resume", headers=stack.headers)
    assert r.status_code == 200, r.text
    resumed = r.json()
    assert resumed["status"] == "generating" and resumed["evaluation_id"] != run["evaluation_id"]
    done = _wait_run(stack, run["id"])
    assert done["status"] == "succeeded", done
    # Every prompt was asked exactly once over both passes.
    assert stack.emulator.core.calls()[CHAT] == 40
    assert done["counts"]["answered"] == 40 and done["counts"]["kept"] == 40
    assert len(done["evaluation_ids"]) == 2
    full = stack.get(f"/v1/datasets/{done['dataset_id']}")
    assert full["n_examples"] == 40 and full["id"] != partial["id"]
    r = stack.client.post(f"/v1/datasets/distill/{run['id']}/resume", headers=stack.headers)
    assert r.status_code == 409 and r.json()["code"] == "distillation_not_resumable"


def test_batch_mode_asks_the_batch_api_at_half_price(stack):
    from decimal import Decimal

    from service.pricing.estimates import inference_cost

    stack.emulator.core.config.answer_fn = teacher_answer
    source = stack.upload(prompts(12), "prompts.jsonl")
    run = _distill(
        stack,
        {
            "source_dataset_id": source["id"],
            "teacher": {"kind": "model", "name": "teacher", "model": TEACHER},
            "mode": "batch",
        },
    )
    run = _wait_run(stack, run["id"], timeout=90)
    assert run["status"] == "succeeded", run
    assert stack.emulator.calls("POST /v1/batches") == 1 and stack.emulator.calls(CHAT) == 0
    usage = run["usage"]
    assert usage["batch"] is True
    full = inference_cost(TEACHER, usage["input_tokens"], usage["output_tokens"])
    half = inference_cost(TEACHER, usage["input_tokens"], usage["output_tokens"], batch=True)
    assert Decimal(usage["cost_usd"]) == half < full
    assert stack.get(f"/v1/datasets/{run['dataset_id']}")["n_examples"] == 12


def test_another_project_sees_none_of_it(stack, other_project):
    stack.emulator.core.config.answer_fn = teacher_answer
    source = stack.upload(prompts(12), "prompts.jsonl")
    body = {"source_dataset_id": source["id"], "teacher": {"kind": "model", "name": "t", "model": TEACHER}}
    theirs = stack.client.post("/v1/datasets/distill", json=body, headers=other_project["headers"])
    assert theirs.status_code == 404, theirs.text
    run = _distill(stack, body)
    for method, path in (
        ("GET", f"/v1/datasets/distill/{run['id']}"),
        ("POST", f"/v1/datasets/distill/{run['id']}/cancel"),
        ("POST", f"/v1/datasets/distill/{run['id']}/resume"),
    ):
        r = stack.client.request(method, path, headers=other_project["headers"])
        assert r.status_code == 404, (path, r.text)
    listed = stack.client.get("/v1/datasets/distill", headers=other_project["headers"]).json()
    assert listed["data"] == []
    assert [r["id"] for r in stack.get("/v1/datasets/distill")["data"]] == [run["id"]]
    _wait_run(stack, run["id"])


def test_an_answered_dataset_gets_the_teachers_answers_and_a_reference_filter_keeps_agreement(stack):
    stack.emulator.core.config.answer_fn = teacher_answer
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Add one."},
                {"role": "user", "content": f"What is {i} + 1?"},
                # The old answers are right for even numbers only.
                {"role": "assistant", "content": f"The answer is {i + 1 if i % 2 == 0 else i + 2}."},
            ]
        }
        for i in range(24)
    ]
    source = stack.upload("".join(json.dumps(r) + "\n" for r in rows).encode(), "answered.jsonl")
    assert source["status"] == "ready"
    run = _distill(
        stack,
        {
            "source_dataset_id": source["id"],
            "teacher": {"kind": "model", "name": "teacher", "model": TEACHER},
            "filters": {"graders": [{"type": "exact_match", "name": "agrees_with_source"}]},
        },
    )
    run = _wait_run(stack, run["id"])
    assert run["status"] == "succeeded", run
    # Kept: even numbers whose teacher answer is not a refusal (numbers ending in 3 and 7 are odd anyway).
    assert run["counts"]["kept"] == 12 and run["counts"]["filtered_out"]["agrees_with_source"] == 12
    ds = stack.get(f"/v1/datasets/{run['dataset_id']}")
    assert ds["n_examples"] == 12 and ds["source_dataset_id"] == source["id"]
    samples = stack.get(f"/v1/evaluations/{run['evaluation_id']}/samples", limit=100)["data"]
    by_index = {s["example_index"]: s for s in samples}
    # The prompt is the conversation before the replaced answer.
    assert by_index[4]["input"] == rows[4]["messages"][:2] and by_index[4]["output"] == "The answer is 5."


def test_the_prompts_of_a_distillation_cannot_be_deleted_from_under_it(stack):
    stack.emulator.core.config.answer_fn = teacher_answer
    source = stack.upload(prompts(12), "prompts.jsonl")
    body = {"source_dataset_id": source["id"], "teacher": {"kind": "model", "name": "t", "model": TEACHER}}
    done = _wait_run(stack, _distill(stack, body)["id"])
    r = stack.client.delete(f"/v1/datasets/{source['id']}", headers=stack.headers)
    assert r.status_code == 409 and r.json()["code"] == "dataset_in_use", r.text
    assert stack.get(f"/v1/datasets/{source['id']}")["id"] == source["id"]
    # The distilled dataset itself is the user's to delete; the distillation then shows none.
    r = stack.client.delete(f"/v1/datasets/{done['dataset_id']}", headers=stack.headers)
    assert r.status_code == 200, r.text
    assert stack.get(f"/v1/datasets/distill/{done['id']}")["dataset_id"] is None
