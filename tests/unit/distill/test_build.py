"""Answers to examples: grader filters, exact and near-duplicate removal, prompt order."""

from __future__ import annotations

from service.distill.build import Answer, build


def _answer(index: int, output: str, answer: int = 0, **passed: bool | None) -> Answer:
    prompt = [{"role": "user", "content": f"Tell me about item number {index} in the catalogue please"}]
    return Answer(index=index, answer=answer, prompt=prompt, output=output, passed=passed)


def test_every_filter_must_pass_and_the_first_failing_one_counts_it():
    answers = [
        _answer(0, "fine", a=True, b=True),
        _answer(1, "no a", a=False, b=True),
        _answer(2, "no b", a=True, b=False),
        _answer(3, "ungraded", a=None, b=True),
    ]
    out = build(answers, must_pass=["a", "b"], exact=False, near=False, near_threshold=0.85)
    assert [e["messages"][-1]["content"] for e in out.examples] == ["fine"]
    assert out.filtered_out == {"a": 2, "b": 1}


def test_examples_follow_prompt_then_answer_order_and_end_with_the_answer():
    answers = [_answer(1, "b0"), _answer(0, "a1", answer=1), _answer(0, "a0")]
    out = build(answers, must_pass=[], exact=False, near=False, near_threshold=0.85)
    assert [e["messages"][-1] for e in out.examples] == [
        {"role": "assistant", "content": c} for c in ("a0", "a1", "b0")
    ]
    assert out.examples[0]["messages"][0]["role"] == "user"


def test_exact_copies_keep_the_first():
    answers = [_answer(0, "same", answer=i) for i in range(3)] + [_answer(1, "same")]
    out = build(answers, must_pass=[], exact=True, near=False, near_threshold=0.85)
    assert out.exact_duplicates == 2 and len(out.examples) == 2
    kept_off = build(answers, must_pass=[], exact=False, near=False, near_threshold=0.85)
    assert len(kept_off.examples) == 4 and kept_off.exact_duplicates == 0


def test_near_duplicates_are_dropped_only_when_asked():
    long = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat all afternoon"
    answers = [_answer(0, long), _answer(0, long + " today", answer=1), _answer(5, "something else entirely")]
    plain = build(answers, must_pass=[], exact=True, near=False, near_threshold=0.7)
    assert len(plain.examples) == 3
    near = build(answers, must_pass=[], exact=True, near=True, near_threshold=0.7)
    assert near.near_duplicates == 1 and len(near.examples) == 2
    assert near.examples[0]["messages"][-1]["content"] == long


def test_nothing_kept_gives_no_examples():
    out = build([_answer(0, "x", a=False)], must_pass=["a"], exact=True, near=True, near_threshold=0.85)
    assert out.examples == [] and out.filtered_out == {"a": 1}
