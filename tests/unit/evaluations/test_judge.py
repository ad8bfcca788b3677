"""LLM judges with a fake chat client: strict parsing, caching, pairwise order swapping and consistency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from service.evaluations.graders import ChatReply, InMemoryVerdictCache, Sample, compare_all, get_grader, grade_all
from service.evaluations.graders.judge import combine_orders, parse_score, parse_winner


class FakeJudge:
    """Answers with ``reply(user_prompt)``; records calls and the most calls in flight at once."""

    def __init__(self, reply: Callable[[str], str], delay: float = 0.0) -> None:
        self.reply = reply
        self.delay = delay
        self.calls: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def complete(self, *, model, messages, temperature, max_tokens, seed) -> ChatReply:
        self.calls.append({"model": model, "messages": messages, "temperature": temperature, "seed": seed})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return ChatReply(self.reply(messages[-1]["content"]), input_tokens=100, output_tokens=10)
        finally:
            self.in_flight -= 1


def _response(prompt: str, tag: str) -> str:
    return prompt.split(f"<{tag}>\n", 1)[1].split(f"\n</{tag}>", 1)[0]


SAMPLE = Sample(output="Paris", reference="Paris", messages=[{"role": "user", "content": "Capital of France?"}])
RUBRIC = {"type": "llm_rubric", "model": "judge-1", "rubric": "Correct and concise."}


def test_parse_is_strict() -> None:
    assert parse_score("The answer is right.\n\nSCORE: 5\n") == 5
    for bad in ["Score: 5", "SCORE: 6", "SCORE: 4/5", "SCORE: 5\nThanks!", "**SCORE: 5**", ""]:
        with pytest.raises(Exception, match="does not end with"):
            parse_score(bad)
    assert parse_winner("B is better\nWINNER: B") == "B"


async def test_rubric_score_prompt_and_threshold() -> None:
    judge = FakeJudge(lambda p: "Looks right.\nSCORE: 4" if "<response>\nParis\n" in p else "Wrong.\nSCORE: 1")
    grader = get_grader({**RUBRIC, "pass_threshold": 4}, chat_client=judge)
    good = await grader.agrade(SAMPLE)
    assert (good.value, good.passed, good.error) == (4.0, True, None)
    assert good.details["input_tokens"] == 100 and good.details["cached"] is False
    bad = await grader.agrade(Sample(output="Lyon", reference="Paris", messages=SAMPLE.messages))
    assert (bad.value, bad.passed) == (1.0, False)
    prompt = judge.calls[0]["messages"][-1]["content"]
    assert "Correct and concise." in prompt and "Capital of France?" in prompt and "<reference_answer>" in prompt
    assert judge.calls[0]["temperature"] == 0.0


async def test_pass_fail_scale_and_unparseable_reply() -> None:
    judge = FakeJudge(lambda p: "VERDICT: PASS")
    grader = get_grader({**RUBRIC, "scale": "pass_fail"}, chat_client=judge)
    assert (await grader.agrade(SAMPLE)).passed is True
    rambling = get_grader(RUBRIC, chat_client=FakeJudge(lambda p: "I think it deserves a 4."))
    score = await rambling.agrade(SAMPLE)
    assert score.value is None and "does not end with 'SCORE: <1-5>'" in (score.error or "")


async def test_verdicts_are_cached_by_model_prompt_and_inputs() -> None:
    cache = InMemoryVerdictCache()
    judge = FakeJudge(lambda p: "SCORE: 5")
    grader = get_grader(RUBRIC, chat_client=judge, cache=cache)
    await grader.agrade(SAMPLE)
    again = await grader.agrade(SAMPLE)
    assert len(judge.calls) == 1 and again.details["cached"] is True and again.value == 5.0
    await grader.agrade(Sample(output="Paris.", reference="Paris", messages=SAMPLE.messages))
    await get_grader({**RUBRIC, "model": "judge-2"}, chat_client=judge, cache=cache).agrade(SAMPLE)
    await get_grader({**RUBRIC, "rubric": "Other."}, chat_client=judge, cache=cache).agrade(SAMPLE)
    assert len(judge.calls) == 4 and len(cache) == 4


async def test_unparseable_verdicts_are_not_cached_and_client_errors_become_sample_errors() -> None:
    cache = InMemoryVerdictCache()
    grader = get_grader(RUBRIC, chat_client=FakeJudge(lambda p: "no verdict"), cache=cache)
    await grader.agrade(SAMPLE)
    assert len(cache) == 0

    def boom(prompt: str) -> str:
        raise ConnectionError("judge endpoint down")

    score = await get_grader(RUBRIC, chat_client=FakeJudge(boom)).agrade(SAMPLE)
    assert score.value is None and "judge request failed: ConnectionError" in (score.error or "")


def _pairwise(reply: Callable[[str], str]):
    judge = FakeJudge(reply)
    spec = {"type": "llm_pairwise", "model": "judge-1", "criteria": "Which answer is correct?"}
    return get_grader(spec, chat_client=judge), judge


def _prefers(word: str) -> Callable[[str], str]:
    def reply(prompt: str) -> str:
        if word in _response(prompt, "response_a"):
            return "WINNER: A"
        if word in _response(prompt, "response_b"):
            return "WINNER: B"
        return "WINNER: TIE"

    return reply


def test_combine_orders() -> None:
    assert combine_orders("B", "A") == "b"  # b shown second, then first: preferred both times
    assert combine_orders("A", "B") == "a"
    assert combine_orders("TIE", "TIE") == "tie"
    assert combine_orders("A", "A") == "inconsistent"  # always the first slot: position bias
    assert combine_orders("B", "TIE") == "inconsistent"


async def test_pairwise_judges_both_orders_and_counts_only_agreement() -> None:
    grader, judge = _pairwise(_prefers("Paris"))
    score = await grader.compare(SAMPLE, "Lyon", "Paris")
    assert score.details["winner"] == "b" and score.value == 1.0
    prompts = [c["messages"][-1]["content"] for c in judge.calls]
    assert {_response(p, "response_a") for p in prompts} == {"Lyon", "Paris"}  # asked in both orders
    assert (await grader.compare(SAMPLE, "Paris", "Lyon")).value == 0.0
    assert (await grader.compare(SAMPLE, "Lyon", "Nice")).details["winner"] == "tie"

    biased, _ = _pairwise(lambda p: "WINNER: A")
    score = await biased.compare(SAMPLE, "Lyon", "Paris")
    assert score.details["winner"] == "inconsistent" and score.value is None and score.error is None


async def test_pairwise_aggregate_counts_consistency_and_sign_test() -> None:
    def reply(prompt: str) -> str:
        a, b = _response(prompt, "response_a"), _response(prompt, "response_b")
        if "biased" in a + b:
            return "WINNER: A"
        return "WINNER: A" if a.startswith("good") else "WINNER: B" if b.startswith("good") else "WINNER: TIE"

    grader, _ = _pairwise(reply)
    outputs_a = ["bad"] * 10 + ["good"] * 2 + ["biased"] * 3 + ["meh"] * 5
    outputs_b = [f"good {i}" for i in range(10)] + ["bad"] * 2 + ["biased"] * 3 + ["meh"] * 5
    samples = [SAMPLE] * len(outputs_a)
    scores = await compare_all(grader, samples, outputs_a, outputs_b)
    agg = grader.aggregate(scores, samples)
    assert (agg["n_a"], agg["n_b"], agg["n_tie"], agg["n_inconsistent"]) == (2, 10, 5, 3)
    assert agg["consistency_rate"] == pytest.approx(17 / 20)
    assert agg["b_win_rate"] == pytest.approx((10 + 0.5 * 5) / 17)
    assert agg["sign_test_p_value"] == pytest.approx(158 / 4096)  # 10 vs 2, as McNemar's exact test


async def test_grade_all_bounds_judge_concurrency() -> None:
    judge = FakeJudge(lambda p: "SCORE: 3", delay=0.01)
    grader = get_grader(RUBRIC, chat_client=judge)
    samples = [Sample(output=f"answer {i}", messages=SAMPLE.messages) for i in range(40)]
    scores = await grade_all(grader, samples, concurrency=5)
    assert [s.value for s in scores] == [3.0] * 40
    assert judge.max_in_flight == 5


def test_sync_grade_of_a_judge_says_to_await() -> None:
    grader = get_grader(RUBRIC, chat_client=FakeJudge(lambda p: "SCORE: 3"))
    with pytest.raises(TypeError, match="agrade"):
        grader.grade(SAMPLE)
