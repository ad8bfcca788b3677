"""Several jobs end to end while about one provider call in five misbehaves: 429, 500, timeouts with and without the
provider having acted, connections dropped after acting. Every job succeeds, with one provider job each and one
provider file per content hash."""

from __future__ import annotations

from collections import Counter

import pytest

from helpers import wait_for

# Five kinds at this probability each: 1 - (1 - p)^5 = 20% of calls.
PER_KIND = 1 - 0.8 ** (1 / 5)
CLIENT_TIMEOUT_S = 1.0


@pytest.fixture
def short_client_timeout(monkeypatch):
    """Provider calls give up after a second, so the emulator's held requests are real client-side timeouts."""
    from service.providers.openai.provider import OpenAIProvider

    monkeypatch.setitem(OpenAIProvider.__init__.__kwdefaults__, "timeout", CLIENT_TIMEOUT_S)


def _create(stack, **body):
    r = stack.client.post(
        "/v1/jobs", json={"provider": "openai", "model": "gpt-4.1-mini"} | body, headers=stack.headers
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _events(stack, job_id):
    out, cursor = [], None
    while True:
        page = stack.get(f"/v1/jobs/{job_id}/events", limit=100, **({"after": cursor} if cursor else {}))
        out += page["data"]
        if not page["has_more"]:
            return out
        cursor = page["next_cursor"]


def test_jobs_succeed_under_twenty_percent_faults(stack, chat_jsonl, short_client_timeout):
    emu = stack.emulator
    a = stack.upload(chat_jsonl)["id"]
    b = stack.upload(chat_jsonl.replace(b"Ticket", b"Case"))["id"]

    held = CLIENT_TIMEOUT_S * 2
    random_rules = [
        emu.add_fault(r".*", "429", probability=PER_KIND, retry_after_seconds=0.2),
        emu.add_fault(r".*", "500", probability=PER_KIND),
        emu.add_fault(r".*", "timeout", probability=PER_KIND, delay_seconds=held),
        emu.add_fault(r".*", "act_then_timeout", probability=PER_KIND, delay_seconds=held),
        emu.add_fault(r".*", "act_then_drop", probability=PER_KIND),
    ]
    # The dangerous cases for sure, not only by chance: a create the provider carried out but whose answer was lost.
    sure_rules = [
        emu.add_fault(r"^POST /v1/files$", "act_then_drop", count=1),
        emu.add_fault(r"^POST /v1/fine_tuning/jobs$", "act_then_timeout", count=1, delay_seconds=held),
        emu.add_fault(r"^POST /v1/fine_tuning/jobs$", "act_then_drop", count=1),
    ]
    calls_before = sum(emu.calls().values())

    ours = [
        _create(stack, training_dataset_id=a),
        _create(stack, training_dataset_id=a),
        _create(stack, training_dataset_id=b),
        _create(stack, training_dataset_id=b, validation_dataset_id=a),
    ]

    def all_finished():
        jobs = [stack.get(f"/v1/jobs/{j}") for j in ours]
        return jobs if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs) else None

    done = wait_for(all_finished, timeout=240, interval=0.2)
    assert [j["status"] for j in done] == ["succeeded"] * len(ours), [(j["status"], j["error"]) for j in done]

    state = emu.state()
    per_job = Counter((j.get("metadata") or {}).get("finetune_job_id") for j in state["jobs"])
    assert per_job == dict.fromkeys(ours, 1), per_job
    assert {j["provider_job_id"] for j in done} == {j["id"] for j in state["jobs"]}
    names = [f["filename"] for f in state["files"] if f["purpose"] == "fine-tune"]
    assert len(names) == 2 and len(set(names)) == 2, names

    # The faults really happened, at about the rate asked for, and every forced one fired.
    calls = sum(emu.calls().values()) - calls_before
    fired = sum(r.fired for r in random_rules)
    assert all(r.fired == 1 for r in sure_rules), [r.to_dict() for r in sure_rules]
    assert calls > 30 and 0.08 <= fired / calls <= 0.4, (fired, calls, [r.to_dict() for r in random_rules])
    # The two creates whose answers were lost were found again by listing (our id in metadata), not made twice.
    reasons = [
        e["data"]["reason"]
        for j in ours
        for e in _events(stack, j)
        if e["type"] == "status" and e["data"]["to"] == "submitted"
    ]
    assert sum("reconciled" in r for r in reasons) >= 2, reasons
