"""Job metadata against OpenAI's documented limit of 16 pairs: the service tags every provider job with one pair of
its own (``finetune_job_id``), so a user gets 15; 16 are refused before anything is sent, on both the native route
(422 naming the limit and why) and the OpenAI-shaped one (400 with param ``metadata``)."""

from __future__ import annotations

from helpers import wait_for

MODEL = "gpt-4.1-mini-2025-04-14"


def _pairs(n: int) -> dict[str, str]:
    return {f"k{i}": f"v{i}" for i in range(n)}


def test_fifteen_pairs_reach_the_provider_with_our_tag_and_the_job_is_found_by_it(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    body = {"training_dataset_id": ds["id"], "provider": "openai", "model": MODEL, "metadata": _pairs(15)}
    r = stack.client.post("/v1/jobs", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    job = r.json()
    done = wait_for(lambda: (j := stack.get(f"/v1/jobs/{job['id']}"))["status"] in ("succeeded", "failed") and j, 30)
    assert done["status"] == "succeeded", done
    (provider_job,) = stack.emulator.state()["jobs"]
    # 16 pairs sent, as documented (the emulator refuses 17 with a 400, like the description says).
    assert provider_job["metadata"] == {**_pairs(15), "finetune_job_id": job["id"]}
    assert done["metadata"] == _pairs(15)

    # Reconciliation after a crash still finds the job by the tag.
    from service.providers.openai.provider import OpenAIProvider

    provider = OpenAIProvider(api_key="sk-test-emulator", base_url=f"{stack.emulator.base_url}")
    assert provider.find_job(job["id"]).id == provider_job["id"]


def test_sixteen_pairs_are_refused_naming_the_limit(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    body = {"training_dataset_id": ds["id"], "provider": "openai", "model": MODEL, "metadata": _pairs(16)}
    r = stack.client.post("/v1/jobs", json=body, headers=stack.headers)
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["field"] == "metadata"
    assert "at most 15 metadata pairs (16 given)" in error["message"] and "finetune_job_id" in error["message"]
    reserved = {**_pairs(3), "finetune_job_id": "mine"}
    r = stack.client.post("/v1/jobs", json=body | {"metadata": reserved}, headers=stack.headers)
    assert r.status_code == 422 and "reserved" in r.json()["errors"][0]["message"], r.text
    assert stack.emulator.state()["jobs"] == []


def test_the_openai_shaped_route_answers_400_with_param_metadata(stack, chat_jsonl):
    ds = stack.upload(chat_jsonl)
    body = {"training_file": ds["id"], "model": MODEL, "metadata": _pairs(16)}
    r = stack.client.post("/v1/fine_tuning/jobs", json=body, headers=stack.headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "metadata" and error["type"] == "invalid_request_error"
    assert "at most 15 metadata pairs" in error["message"]
    assert stack.emulator.state()["jobs"] == []


def test_rerun_of_a_job_stored_with_sixteen_pairs_is_a_clear_422(stack, chat_jsonl):
    """A job created before the service's own pair was counted may hold 16 pairs: its rerun says why it is refused."""
    from service.db import session_scope
    from service.jobs.models import Job

    ds = stack.upload(chat_jsonl)
    body = {"training_dataset_id": ds["id"], "provider": "openai", "model": MODEL, "metadata": _pairs(15)}
    job = stack.client.post("/v1/jobs", json=body, headers=stack.headers).json()
    with session_scope() as s:
        row = s.get(Job, job["id"])
        row.metadata_ = _pairs(16)
        s.add(row)
    r = stack.client.post(f"/v1/jobs/{job['id']}/rerun", json={}, headers=stack.headers)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "invalid_metadata" and problem["param"] == "metadata"
    assert "at most 15 metadata pairs (16 given)" in problem["detail"]
