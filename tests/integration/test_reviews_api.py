"""Human review queues through the HTTP API: a blind, seeded, stratified queue of an evaluation's answers; reviewers'
ratings with revisions; completion with its webhook event; the summary (humans per candidate, between reviewers,
graders against the humans); the JSONL export; the figures joined into the evaluation; project isolation."""

from __future__ import annotations

import json
from typing import Any

import pytest

LABELS = ("billing", "account", "shipping", "refund")
N = 40


def _seed(settings: Any, project_id: str) -> str:
    """A finished evaluation of two candidates on N test examples, graded by exact match (right for `base` on the
    even examples, for `tuned` on all but every fourth) and by an LLM judge that agrees with exact match except on
    every fifth example."""
    from service.clock import utcnow
    from service.datasets.models import Dataset
    from service.db import session_scope
    from service.evaluations.models import Evaluation, EvaluationSample

    with session_scope(settings) as session:
        ds = Dataset(
            project_id=project_id,
            filename="test.jsonl",
            status="ready",
            format="chat",
            sha256="0" * 64,
            size_bytes=1,
            n_examples=N,
        )
        session.add(ds)
        session.flush()
        evaluation = Evaluation(
            project_id=project_id,
            status="succeeded",
            dataset_id=ds.id,
            config={
                "mode": "realtime",
                "candidates": [
                    {"kind": "model", "name": "base", "provider": "openai", "model": "gpt-4.1-mini-2025-04-14"},
                    {"kind": "model", "name": "tuned", "provider": "openai", "model": "gpt-4.1-mini-2025-04-14"},
                ],
                "graders": [
                    {"type": "exact_match", "name": "exact"},
                    {
                        "type": "llm_rubric",
                        "name": "judge",
                        "model": "gpt-4.1",
                        "rubric": "right label?",
                        "scale": "pass_fail",
                    },
                ],
                "baseline": "base",
                "confidence": 0.95,
                "seed": 0,
            },
            finished_at=utcnow(),
        )
        session.add(evaluation)
        session.flush()
        for i in range(N):
            reference = LABELS[i % 4]
            for name, right in (("base", i % 2 == 0), ("tuned", i % 4 != 0)):
                judged = right if i % 5 else not right
                session.add(
                    EvaluationSample(
                        evaluation_id=evaluation.id,
                        candidate=name,
                        example_key=f"test:{i}",
                        split="test",
                        example_index=i,
                        input=[{"role": "user", "content": f"Ticket {i}"}],
                        reference=reference,
                        output=reference if right else "other",
                        ok=True,
                        scores={
                            "exact": {"value": float(right), "passed": right},
                            "judge": {"value": float(judged), "passed": judged},
                        },
                    )
                )
        return evaluation.id


@pytest.fixture
def evaluation_id(settings, project) -> str:  # type: ignore[no-untyped-def]
    return _seed(settings, project["id"])


def _items(client, queue_id: str, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    out, after = [], None
    while True:
        query = {"limit": 7, **params} | ({"after": after} if after is not None else {})
        r = client.get(f"/v1/review_queues/{queue_id}/items", params=query, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["next_cursor"]


def _truth(settings: Any, queue_id: str) -> dict[str, list[dict[str, str]]]:
    """The hidden label -> candidate mapping of each item, read from the database (the API never shows it)."""
    from sqlmodel import select

    from service.db import session_scope
    from service.reviews.models import ReviewItem

    with session_scope(settings) as session:
        return {i.id: i.sides for i in session.exec(select(ReviewItem).where(ReviewItem.queue_id == queue_id))}


def test_blind_seeded_stratified_queue(client, project, evaluation_id):
    h = project["headers"]
    body = {"mode": "pass_fail", "size": 20, "seed": 7}
    r = client.post(f"/v1/evaluations/{evaluation_id}/review", json=body, headers=h)
    assert r.status_code == 201, r.text
    queue = r.json()
    assert queue["id"].startswith("rvq_") and queue["status"] == "open" and queue["mode"] == "pass_fail"
    assert queue["candidates"] == ["base", "tuned"] and queue["stratify"] == "candidate_outcome"
    assert queue["stratify_grader"] == "exact"
    # Proportional strata: base passes 20 of 40, tuned 30 of 40 -> of 80 samples, 20 drawn: 5/5/7.5/2.5 -> 5,5,8,2 or
    # 5,5,7,3 by largest remainder (ties broken by name: "tuned / exact fail" before "tuned / exact pass").
    assert queue["available_strata"] == {
        "base / exact fail": 20,
        "base / exact pass": 20,
        "tuned / exact fail": 10,
        "tuned / exact pass": 30,
    }
    assert queue["strata"] == {
        "base / exact fail": 5,
        "base / exact pass": 5,
        "tuned / exact fail": 3,
        "tuned / exact pass": 7,
    }
    assert queue["progress"] == {"n_items": 20, "n_items_complete": 0, "n_ratings": 0, "reviewers": {}}

    items = _items(client, queue["id"], h)
    assert [i["position"] for i in items] == list(range(20))
    text = json.dumps(items)
    assert "base" not in text and "tuned" not in text  # blind: no candidate name anywhere
    assert all(i["id"].startswith("rvi_") and [x["label"] for x in i["responses"]] == ["A"] for i in items)

    # The same seed on the same evaluation draws the same sample in the same order; another seed does not.
    again = client.post(f"/v1/evaluations/{evaluation_id}/review", json=body, headers=h).json()
    other = client.post(f"/v1/evaluations/{evaluation_id}/review", json={**body, "seed": 8}, headers=h).json()
    same = [(i["input"], i["responses"]) for i in items]
    assert [(i["input"], i["responses"]) for i in _items(client, again["id"], h)] == same
    assert [(i["input"], i["responses"]) for i in _items(client, other["id"], h)] != same


def test_idempotency_key_returns_the_same_queue(client, project, evaluation_id):
    h = {**project["headers"], "Idempotency-Key": "review-1"}
    first = client.post(f"/v1/evaluations/{evaluation_id}/review", json={"size": 5}, headers=h)
    second = client.post(f"/v1/evaluations/{evaluation_id}/review", json={"size": 5}, headers=h)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    listed = client.get("/v1/review_queues", params={"evaluation_id": evaluation_id}, headers=project["headers"])
    assert [q["id"] for q in listed.json()["data"]] == [first.json()["id"]]


def test_pairwise_sides_are_randomised_per_item(client, settings, project, evaluation_id):
    h = project["headers"]
    r = client.post(
        f"/v1/evaluations/{evaluation_id}/review", json={"mode": "pairwise", "size": 40, "seed": 3}, headers=h
    )
    assert r.status_code == 201, r.text
    queue = r.json()
    assert queue["candidates"] == ["base", "tuned"] and queue["progress"]["n_items"] == 40
    items = _items(client, queue["id"], h)
    assert all([x["label"] for x in i["responses"]] == ["A", "B"] for i in items)
    truth = _truth(settings, queue["id"])
    on_a = [truth[i["id"]][0]["candidate"] for i in items]
    # Each candidate sits on side A for some items and on side B for others (40 fair coins: all alike has p = 2^-39).
    assert 0 < on_a.count("base") < 40


def test_bad_requests_name_the_field(client, project, other_project, evaluation_id):
    h = project["headers"]
    url = f"/v1/evaluations/{evaluation_id}/review"
    r = client.post(url, json={"mode": "pairwise", "candidates": ["base"]}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "candidates"
    r = client.post(url, json={"candidates": ["base", "nope"]}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "candidates.1"
    r = client.post(url, json={"stratify_grader": "nope"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "stratify_grader"
    r = client.post(url, json={"size": 0}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"].endswith("size")
    r = client.post(url, json={"split": "train"}, headers=h)
    assert r.status_code == 422 and r.json()["code"] == "nothing_to_review"
    # Another project's evaluation answers as a missing one.
    r = client.post(url, json={}, headers=other_project["headers"])
    assert r.status_code == 404 and r.json()["code"] == "evaluation_not_found"

    queue = client.post(url, json={"size": 2}, headers=h).json()
    item = _items(client, queue["id"], h)[0]
    rate = f"/v1/review_queues/{queue['id']}/items/{item['id']}/ratings"
    r = client.post(rate, json={"reviewer": "ann", "score": 3}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "passed"
    r = client.post(rate, json={"reviewer": "ann", "passed": True, "score": 3}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "score"
    r = client.post(rate, json={"reviewer": " ", "passed": True}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"].endswith("reviewer")
    for path in (
        f"/v1/review_queues/{queue['id']}",
        f"/v1/review_queues/{queue['id']}/summary",
        f"/v1/review_queues/{queue['id']}/export",
        f"/v1/review_queues/{queue['id']}/items/{item['id']}",
    ):
        r = client.get(path, headers=other_project["headers"])
        assert r.status_code == 404 and r.json()["code"] == "review_queue_not_found", path
    r = client.post(rate, json={"reviewer": "ann", "passed": True}, headers=other_project["headers"])
    assert r.status_code == 404
    r = client.get(f"/v1/review_queues/{queue['id']}/items", params={"pending": True}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reviewer"


def _rate_all(client, queue_id, h, reviewer, verdict) -> None:  # type: ignore[no-untyped-def]
    for item in _items(client, queue_id, h, reviewer=reviewer, pending=True):
        r = client.post(
            f"/v1/review_queues/{queue_id}/items/{item['id']}/ratings",
            json={"reviewer": reviewer, **verdict(item)},
            headers=h,
        )
        assert r.status_code == 200, r.text


def test_two_reviewers_complete_the_queue_and_the_summary_ranks_graders(client, settings, project, evaluation_id):
    from sqlmodel import select

    from service.db import session_scope
    from service.events.models import Event

    h = project["headers"]
    queue = client.post(
        f"/v1/evaluations/{evaluation_id}/review",
        json={"size": 30, "seed": 1, "reviewers_per_item": 2},
        headers=h,
    ).json()
    qid = queue["id"]
    truth = _truth(settings, qid)
    outputs: dict[str, bool] = {}
    for item in _items(client, qid, h):
        outputs[item["id"]] = item["responses"][0]["output"] == item["reference"]

    # ann judges like exact match; bob too, except that he fails every answer at a position divisible by 6.
    _rate_all(client, qid, h, "ann", lambda item: {"passed": outputs[item["id"]]})
    assert client.get(f"/v1/review_queues/{qid}", headers=h).json()["status"] == "open"
    mid = client.get(f"/v1/review_queues/{qid}/items", params={"reviewer": "ann", "pending": True}, headers=h)
    assert mid.json()["data"] == []  # ann has rated everything she can
    first_bob = _items(client, qid, h, reviewer="bob", pending=True)[0]
    # A first, wrong submission by bob: replaced below, kept as revision 1.
    r = client.post(
        f"/v1/review_queues/{qid}/items/{first_bob['id']}/ratings",
        json={"reviewer": "bob", "passed": not outputs[first_bob["id"]], "comment": "misread"},
        headers=h,
    )
    assert r.json()["revision"] == 1
    _rate_all(
        client,
        qid,
        h,
        "bob",
        lambda item: {"passed": outputs[item["id"]] and item["position"] % 6 != 0},
    )
    r = client.post(
        f"/v1/review_queues/{qid}/items/{first_bob['id']}/ratings",
        json={"reviewer": "bob", "passed": outputs[first_bob["id"]] and first_bob["position"] % 6 != 0},
        headers=h,
    )
    rating = r.json()
    assert rating["revision"] == 2 and [x["revision"] for x in rating["history"]] == [1, 2]
    assert rating["history"][0]["comment"] == "misread" and rating["queue_status"] == "completed"

    done = client.get(f"/v1/review_queues/{qid}", headers=h).json()
    assert done["status"] == "completed" and done["completed_at"] is not None
    assert done["progress"] == {
        "n_items": 30,
        "n_items_complete": 30,
        "n_ratings": 60,
        "reviewers": {"ann": 30, "bob": 30},
    }
    with session_scope(settings) as session:
        events = session.exec(select(Event).where(Event.type == "review_queue.completed")).all()
    assert len(events) == 1 and events[0].data["object"]["id"] == qid
    assert events[0].data["object"]["status"] == "completed"

    summary = client.get(f"/v1/review_queues/{qid}/summary", headers=h).json()
    # Expected figures, computed from the hidden mapping the same way the humans rated.
    positions = {i["id"]: i["position"] for i in _items(client, qid, h)}
    ann = {i: outputs[i] for i in truth}
    bob = {i: outputs[i] and positions[i] % 6 != 0 for i in truth}
    for cand in summary["candidates"]:
        mine = [i for i in truth if truth[i][0]["candidate"] == cand["candidate"]]
        expected = sum((ann[i] + bob[i]) / 2 for i in mine) / len(mine)
        assert cand["n_items"] == len(mine) and cand["pass_rate"]["estimate"] == pytest.approx(expected)
        assert cand["pass_rate"]["low"] <= expected <= cand["pass_rate"]["high"]
    pair = summary["inter_reviewer"]["pairs"][0]
    assert pair["reviewers"] == ["ann", "bob"] and pair["n_items"] == 30
    agree = sum(ann[i] == bob[i] for i in truth) / 30
    assert pair["agreement"]["estimate"] == pytest.approx(agree)
    assert summary["inter_reviewer"]["alpha"]["nominal"]["estimate"] is not None
    graders = {g["grader"]: g for g in summary["graders"]}
    # Exact match agrees with the human majority wherever the humans agree... and bob's extra fails make ties
    # (no majority), which are left out: exact agrees perfectly on the rest; the judge flips every fifth example.
    assert graders["exact"]["agreement"]["estimate"] == 1.0 and graders["exact"]["kappa"]["estimate"] == 1.0
    assert graders["judge"]["llm_judge"] and graders["judge"]["kappa"]["estimate"] < 1.0
    assert summary["most_trusted_grader"] == "exact"

    lines = client.get(f"/v1/review_queues/{qid}/export", headers=h)
    assert lines.status_code == 200 and lines.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(x) for x in lines.text.splitlines()]
    assert len(rows) == 60 and {r["candidate"] for r in rows} == {"base", "tuned"}
    assert all(r["candidate"] == truth[r["item_id"]][0]["candidate"] for r in rows)
    history = client.get(f"/v1/review_queues/{qid}/export", params={"history": True}, headers=h).text.splitlines()
    assert len(history) == 61  # bob's first submission is kept

    evaluation = client.get(f"/v1/evaluations/{evaluation_id}", headers=h).json()
    assert [q["queue_id"] for q in evaluation["reviews"]] == [qid]
    assert evaluation["reviews"][0]["most_trusted_grader"] == "exact"


def test_score_mode_summary(client, project, evaluation_id):
    h = project["headers"]
    queue = client.post(
        f"/v1/evaluations/{evaluation_id}/review",
        json={"mode": "score", "size": 10, "reviewers_per_item": 2, "stratify": "candidate"},
        headers=h,
    ).json()
    for item in _items(client, queue["id"], h):
        good = item["responses"][0]["output"] == item["reference"]
        for reviewer, score in (("ann", 5 if good else 1), ("bob", 4 if good else 2)):
            r = client.post(
                f"/v1/review_queues/{queue['id']}/items/{item['id']}/ratings",
                json={"reviewer": reviewer, "score": score},
                headers=h,
            )
            assert r.status_code == 200, r.text
    summary = client.get(f"/v1/review_queues/{queue['id']}/summary", headers=h).json()
    assert summary["status"] == "completed"
    assert set(summary["inter_reviewer"]["alpha"]) == {"ordinal", "interval"}
    assert summary["inter_reviewer"]["pairs"][0]["weights"] == "quadratic"
    assert all(
        c["mean_score"] is not None and sum(c["score_counts"].values()) == 2 * c["n_items"]
        for c in summary["candidates"]
    )
    # The humans' mean score is 4.5 or 1.5: passes at the threshold of 4 exactly where exact match passes.
    exact = next(g for g in summary["graders"] if g["grader"] == "exact")
    assert exact["agreement"]["estimate"] == 1.0
    # The judge here is on the pass_fail scale: no 1-5 comparison.
    assert all(g["score_kappa"] is None for g in summary["graders"])


def test_pairwise_preferences_are_unblinded_in_the_summary_and_export(client, settings, project, evaluation_id):
    h = project["headers"]
    queue = client.post(
        f"/v1/evaluations/{evaluation_id}/review",
        json={"mode": "pairwise", "size": 12, "seed": 2, "candidates": ["base", "tuned"], "stratify": "none"},
        headers=h,
    ).json()
    qid = queue["id"]
    truth = _truth(settings, qid)
    # The reviewer prefers the answer that matches the reference (tie when both or neither do), whatever its label.
    wins = {"base": 0, "tuned": 0, "tie": 0}
    for item in _items(client, qid, h):
        right = [r["label"] for r in item["responses"] if r["output"] == item["reference"]]
        preference = right[0] if len(right) == 1 else "tie"
        winner = (
            "tie"
            if preference == "tie"
            else next(s["candidate"] for s in truth[item["id"]] if s["label"] == preference)
        )
        wins[winner] += 1
        r = client.post(
            f"/v1/review_queues/{qid}/items/{item['id']}/ratings",
            json={"reviewer": "ann", "preference": preference},
            headers=h,
        )
        assert r.status_code == 200, r.text
    r = client.post(
        f"/v1/review_queues/{qid}/items/{item['id']}/ratings", json={"reviewer": "ann", "preference": "C"}, headers=h
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"].endswith("preference")

    summary = client.get(f"/v1/review_queues/{qid}/summary", headers=h).json()
    assert summary["status"] == "completed" and summary["candidates"] == []
    pairwise = summary["pairwise"]
    assert (pairwise["candidate_a"], pairwise["candidate_b"], pairwise["n_items"]) == ("base", "tuned", 12)
    assert pairwise["a_preferred"]["estimate"] == pytest.approx(wins["base"] / 12)
    assert pairwise["b_preferred"]["estimate"] == pytest.approx(wins["tuned"] / 12)
    assert pairwise["tie"]["estimate"] == pytest.approx(wins["tie"] / 12)
    # Exact match's values imply the same preferences exactly; one reviewer gives no inter-reviewer figure.
    exact = next(g for g in summary["graders"] if g["grader"] == "exact")
    assert exact["n_items"] == 12 and exact["agreement"]["estimate"] == 1.0
    assert summary["inter_reviewer"]["alpha"]["nominal"]["estimate"] is None
    assert summary["inter_reviewer"]["alpha"]["nominal"]["undefined_reason"]

    rows = [json.loads(x) for x in client.get(f"/v1/review_queues/{qid}/export", headers=h).text.splitlines()]
    assert len(rows) == 12
    for row in rows:
        assert row["labels"] == {s["label"]: s["candidate"] for s in truth[row["item_id"]]}
        assert row["preferred_candidate"] == (None if row["preference"] == "tie" else row["labels"][row["preference"]])


def test_concurrent_last_ratings_complete_the_queue_once(settings, project, evaluation_id, monkeypatch):
    """The two last items rated at the same moment in two transactions: the queue completes exactly once (each
    rating's completion check must see the other's, so the two are ordered on the queue's row). The check is slowed so
    that two unordered transactions would both check before either commits, and the queue would never complete."""
    import threading
    import time

    from sqlmodel import select

    from api_schemas.reviews import ReviewQueueCreate, ReviewRatingCreate
    from service.db import session_scope
    from service.events.models import Event
    from service.reviews import service

    check = service._all_rated
    monkeypatch.setattr(service, "_all_rated", lambda session, queue: time.sleep(0.3) or check(session, queue))
    for attempt in range(3):
        with session_scope(settings) as session:
            queue = service.create_queue(
                session, project["id"], evaluation_id, ReviewQueueCreate(size=2, seed=attempt, stratify="none")
            )
            qid = queue.id
            items, _ = service.list_items(session, project["id"], qid)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def rate(qid: str, barrier: threading.Barrier, errors: list[BaseException], item_id: str, who: str) -> None:
            try:
                with session_scope(settings) as session:
                    service.get_queue(session, project["id"], qid)
                    barrier.wait(timeout=10)
                    service.submit_rating(
                        session, project["id"], qid, item_id, ReviewRatingCreate(reviewer=who, passed=True)
                    )
            except BaseException as exc:  # reported below: a thread's failure must fail the test
                errors.append(exc)

        threads = [
            threading.Thread(target=rate, args=(qid, barrier, errors, item.id, f"r{n}")) for n, item in enumerate(items)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        with session_scope(settings) as session:
            assert service.get_queue(session, project["id"], qid).status == "completed"
            events = session.exec(select(Event).where(Event.type == "review_queue.completed")).all()
            assert [e.data["object"]["id"] for e in events].count(qid) == 1
