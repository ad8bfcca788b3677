"""A queue's summary on a small hand-computed case: per candidate pass rates, kappa and alpha between two reviewers,
and graders against the human majority (items where the humans tie are left out)."""

from __future__ import annotations

import pytest

from api_schemas.reviews import ReviewQueueProgress
from service.evaluations.models import EvaluationSample
from service.reviews.agreement import ONE_CATEGORY
from service.reviews.models import ReviewItem, ReviewQueue, ReviewRating
from service.reviews.summary import summarize

# item -> (candidate, exact passed, judge passed, ann passed, bob passed)
CASE = {
    "i0": ("base", True, False, True, True),
    "i1": ("base", False, True, False, True),
    "i2": ("tuned", True, True, True, True),
    "i3": ("tuned", True, False, True, False),
}


def _summary():  # type: ignore[no-untyped-def]
    queue = ReviewQueue(
        id="rvq_1",
        project_id="proj_1",
        evaluation_id="eval_1",
        status="completed",
        mode="pass_fail",
        config={"candidates": ["base", "tuned"], "seed": 0, "score_pass_threshold": 4},
        n_items=4,
        reviewers_per_item=2,
    )
    items, ratings, samples = [], [], {}
    for n, (item_id, (candidate, exact, judge, ann, bob)) in enumerate(CASE.items()):
        items.append(
            ReviewItem(
                id=item_id,
                queue_id=queue.id,
                position=n,
                example_key=f"test:{n}",
                stratum=candidate,
                sides=[{"label": "A", "candidate": candidate, "sample_id": f"s{n}"}],
                n_ratings=2,
            )
        )
        samples[f"s{n}"] = EvaluationSample(
            id=f"s{n}",
            evaluation_id="eval_1",
            candidate=candidate,
            example_key=f"test:{n}",
            split="test",
            example_index=n,
            ok=True,
            scores={
                "exact": {"value": float(exact), "passed": exact},
                "judge": {"value": float(judge), "passed": judge},
            },
        )
        ratings += [
            ReviewRating(queue_id=queue.id, item_id=item_id, reviewer="ann", passed=ann),
            ReviewRating(queue_id=queue.id, item_id=item_id, reviewer="bob", passed=bob),
        ]
    config = {
        "confidence": 0.9,
        "graders": [
            {"type": "exact_match", "name": "exact"},
            {"type": "llm_rubric", "name": "judge"},
            {"type": "llm_pairwise", "name": "duel"},
        ],
    }
    progress = ReviewQueueProgress(n_items=4, n_items_complete=4, n_ratings=8, reviewers={"ann": 4, "bob": 4})
    return summarize(queue, config, items, ratings, samples, progress)


def test_humans_per_candidate():
    s = _summary()
    # base: i0 passed by both (1.0), i1 by bob only (0.5) -> 0.75; tuned: i2 1.0, i3 0.5 -> 0.75.
    assert [(c.candidate, c.n_items, c.n_ratings) for c in s.candidates] == [("base", 2, 4), ("tuned", 2, 4)]
    assert [c.pass_rate.estimate for c in s.candidates] == pytest.approx([0.75, 0.75])
    assert all(c.pass_rate.confidence == 0.9 for c in s.candidates)


def test_between_reviewers():
    s = _summary()
    # ann vs bob: (1,1), (0,1), (1,1), (1,0). p_o = 2/4; both pass 3/4: p_e = 0.75^2 + 0.25^2 = 0.625;
    # kappa = (0.5 - 0.625) / 0.375 = -1/3.
    pair = s.inter_reviewer.pairs[0]
    assert pair.reviewers == ["ann", "bob"] and pair.n_items == 4 and pair.weights == "none"
    assert pair.agreement.estimate == pytest.approx(0.5)
    assert pair.kappa.estimate == pytest.approx(-1 / 3)
    # Coincidences: o_11 = 2 + 2, o_01 = o_10 = 1 + 1; n_0 = 2, n_1 = 6, n = 8;
    # alpha = 1 - 7 * (2 + 2) / (2 * 2 * 6) = -1/6.
    assert s.inter_reviewer.n_items == 4
    assert s.inter_reviewer.alpha["nominal"].estimate == pytest.approx(-1 / 6)


def test_graders_against_the_human_majority():
    s = _summary()
    graders = {g.grader: g for g in s.graders}
    assert set(graders) == {"exact", "judge"}  # pairwise verdicts are not per example
    assert any("duel" in note for note in s.notes)
    # The humans tie on i1 and i3: only i0 and i2 count, both a human pass.
    exact, judge = graders["exact"], graders["judge"]
    assert exact.n_items == judge.n_items == 2
    # exact passes both: agreement 1, but every rating on both sides is "pass", so kappa is undefined.
    assert exact.agreement.estimate == 1.0
    assert exact.kappa.estimate is None and exact.kappa.undefined_reason == ONE_CATEGORY
    # judge fails i0, passes i2: agreement 1/2; p_e = 0.5 * 0 + 0.5 * 1 = 0.5, kappa = (0.5 - 0.5) / 0.5 = 0.
    assert judge.llm_judge and not exact.llm_judge
    assert judge.agreement.estimate == pytest.approx(0.5) and judge.kappa.estimate == pytest.approx(0.0)
    assert (judge.grader_pass_rate, judge.human_pass_rate) == (0.5, 1.0)
    # Only the judge's kappa has an interval, so it is the one the summary can point to.
    assert s.most_trusted_grader == "judge"


def test_a_judge_scoring_1_to_5_against_human_scores():
    queue = ReviewQueue(
        id="rvq_2",
        project_id="proj_1",
        evaluation_id="eval_1",
        status="completed",
        mode="score",
        config={"candidates": ["base"], "seed": 0, "score_pass_threshold": 4},
        n_items=2,
        reviewers_per_item=1,
    )
    # Item 0: the judge says 5, ann 5 and bob 4; item 1: the judge says 1, ann 1 (see test_agreement: kappa 56/59).
    items, ratings, samples = [], [], {}
    for n, (judge, humans) in enumerate(((5, {"ann": 5, "bob": 4}), (1, {"ann": 1}))):
        items.append(
            ReviewItem(
                id=f"i{n}",
                queue_id=queue.id,
                position=n,
                example_key=f"test:{n}",
                stratum="base",
                sides=[{"label": "A", "candidate": "base", "sample_id": f"s{n}"}],
            )
        )
        samples[f"s{n}"] = EvaluationSample(
            id=f"s{n}",
            evaluation_id="eval_1",
            candidate="base",
            example_key=f"test:{n}",
            split="test",
            example_index=n,
            ok=True,
            scores={"judge": {"value": float(judge), "passed": judge >= 4}, "exact": {"value": 1.0, "passed": True}},
        )
        ratings += [ReviewRating(queue_id=queue.id, item_id=f"i{n}", reviewer=r, score=v) for r, v in humans.items()]
    config = {
        "graders": [
            {"type": "llm_rubric", "name": "judge", "scale": "1-5"},
            {"type": "exact_match", "name": "exact"},
        ]
    }
    progress = ReviewQueueProgress(n_items=2, n_items_complete=2, n_ratings=3, reviewers={"ann": 2, "bob": 1})
    s = summarize(queue, config, items, ratings, samples, progress)
    judge, exact = s.graders
    assert judge.score_kappa.estimate == pytest.approx(56 / 59)
    assert judge.score_agreement.estimate == pytest.approx(2 / 3)
    assert exact.score_kappa is None  # not a 1-5 scale
    # Pass/fail at the threshold 4: item 0 humans mean 4.5 (pass), item 1 mean 1 (fail); the judge passes 5, fails 1.
    assert judge.agreement.estimate == 1.0 and judge.kappa.estimate == pytest.approx(1.0)
    assert s.candidates[0].mean_score.estimate == pytest.approx((4.5 + 1) / 2)
    assert s.candidates[0].score_counts == {"1": 1, "2": 0, "3": 0, "4": 1, "5": 1}
