"""Grading stored samples and turning them into results: per candidate every grader's metrics with bootstrap
intervals, tokens, cost and latency; per candidate against the baseline the paired differences, p-values and flipped
examples; the overfitting check on the training sample; pairwise judge verdicts.

Scores are written back to the samples, so a resumed run grades only what is new (and LLM judges are not paid twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlmodel import Session, select

from api_schemas.evaluations import CandidateComparison, CandidateResult, EvaluationResults
from api_schemas.graders import GraderSummary, Score
from service.db import get_engine
from service.evaluations import targets
from service.evaluations.graders.analysis import compare, summarize
from service.evaluations.graders.base import Grader, Sample
from service.evaluations.graders.grading import compare_all, grade_all
from service.evaluations.graders.registry import get_grader
from service.evaluations.models import Evaluation, EvaluationSample
from service.providers import registry
from service.settings import Settings, get_settings

BOOTSTRAP_RESAMPLES = 2000


def _sample(row: EvaluationSample) -> Sample:
    # A failed generation is graded as an empty answer: it counts against the candidate rather than vanishing
    # from the denominator.
    return Sample(
        output=row.output if row.ok and row.output is not None else "",
        reference=row.reference,
        messages=row.input,
        key=row.example_key,
    )


def _judge_client(evaluation: Evaluation, settings: Settings, session: Session) -> Any:
    """Where LLM judges send prompts, when a grader needs one."""
    if not any(spec.get("type", "").startswith("llm_") for spec in evaluation.config.get("graders") or []):
        return None
    endpoint = targets.judge_endpoint(evaluation.config.get("judge"))
    if endpoint is not None:
        return targets.resolve(session, settings, evaluation.project_id, endpoint).client  # type: ignore[union-attr]
    return targets.openai_client(session, settings, evaluation.project_id)


def _rows(session: Session, evaluation_id: str) -> dict[str, list[EvaluationSample]]:
    rows = session.exec(
        select(EvaluationSample)
        .where(EvaluationSample.evaluation_id == evaluation_id)
        .order_by(EvaluationSample.split, EvaluationSample.example_index)
    ).all()
    by_candidate: dict[str, list[EvaluationSample]] = {}
    for row in rows:
        by_candidate.setdefault(row.candidate, []).append(row)
    return by_candidate


async def _grade_missing(graders: list[Grader[Any]], rows: list[EvaluationSample]) -> None:
    for grader in graders:
        if grader.is_pairwise:
            continue
        todo = [r for r in rows if grader.name not in (r.scores or {})]
        if not todo:
            continue
        scores = await grade_all(grader, [_sample(r) for r in todo])
        for row, score in zip(todo, scores, strict=True):
            row.scores = {**(row.scores or {}), grader.name: score.model_dump(mode="json")}


def _score(row: EvaluationSample, grader: str) -> Score:
    return Score.model_validate(row.scores[grader])


def _summaries(
    graders: list[Grader[Any]], rows: list[EvaluationSample], confidence: float, seed: int
) -> dict[str, GraderSummary]:
    samples = [_sample(r) for r in rows]
    return {
        g.name: summarize(
            g,
            [_score(r, g.name) for r in rows],
            samples,
            confidence=confidence,
            n_resamples=BOOTSTRAP_RESAMPLES,
            rng=seed,
        )
        for g in graders
    }


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def _cost(model: str | None, provider: str, input_tokens: int, output_tokens: int, batch: bool) -> str | None:
    entry = registry.find(provider)  # endpoint candidates have no entry: their price is unknown
    pricing = entry.pricing if entry is not None else None
    if pricing == "free":
        return "0"
    if entry is not None and entry.inference_quote is not None and model is not None:
        from service.pricing.table import UnknownModel

        try:
            return str(entry.inference_quote(model, input_tokens, output_tokens))
        except UnknownModel:
            return None
    if pricing != "price_table" or model is None:
        return None
    from service.pricing.estimates import inference_cost
    from service.pricing.table import load_price_table

    try:
        # A provider with its own table (Azure) is priced from it: a name it lacks (a deployment's) has no cost.
        table = load_price_table(entry.price_table_path(get_settings())) if entry.price_table_path else None
        return str(inference_cost(model, input_tokens, output_tokens, batch=batch, table=table))
    except Exception:  # a model missing from the price table has no cost, not a failed evaluation
        return None


def _provider_and_model(candidate: dict[str, Any], evaluation: Evaluation) -> tuple[str, str | None]:
    models = (evaluation.progress.get("candidates") or {}).get(candidate["name"]) or {}
    if candidate["kind"] == "endpoint":
        return "endpoint", candidate.get("model")
    if candidate["kind"] == "model":
        return candidate.get("provider", "openai"), candidate.get("model")
    return models.get("provider", "openai"), models.get("model")


def _candidate_status(n: int, n_failed: int) -> str:
    if n and n_failed == n:
        return "failed"
    return "partial" if n_failed else "complete"


def no_answers_error(results: dict[str, Any]) -> dict[str, Any] | None:
    """The evaluation's error when no candidate answered a single sample: its metrics would grade only empty
    answers, which is not a result. (A candidate alone without answers shows as ``status: failed`` in the results.)"""
    candidates = results.get("candidates") or []
    if not candidates or any(c.get("status") != "failed" for c in candidates):
        return None
    return {
        "code": "no_successful_samples",
        "message": "no candidate answered any sample; the samples' errors say why (GET .../samples?only=failed)",
        "candidate": candidates[0]["candidate"] if len(candidates) == 1 else None,
    }


def summarize_evaluation(evaluation_id: str, settings: Settings) -> dict[str, Any]:
    with Session(get_engine(), expire_on_commit=False) as session:
        evaluation = session.get(Evaluation, evaluation_id)
        assert evaluation is not None
        judge_client = _judge_client(evaluation, settings, session)
        by_candidate = _rows(session, evaluation_id)
        results = asyncio.run(_summarize(evaluation, judge_client, by_candidate))
        for rows in by_candidate.values():
            session.add_all(rows)
        session.commit()
        return results


async def _summarize(
    evaluation: Evaluation, judge_client: Any, by_candidate: dict[str, list[EvaluationSample]]
) -> dict[str, Any]:
    runner = chat_client = None
    if judge_client is not None:
        from service.evaluations.generation import ChatRunner, JudgeChatClient

        # Made inside the running loop: the HTTP client belongs to the loop that uses it.
        runner = ChatRunner(judge_client)
        chat_client = JudgeChatClient(runner)
    graders = [get_grader(spec, chat_client=chat_client) for spec in evaluation.config.get("graders") or []]
    try:
        return await _results(evaluation, graders, by_candidate)
    finally:
        if runner is not None:
            await runner.aclose()


async def _results(
    evaluation: Evaluation, graders: list[Grader[Any]], by_candidate: dict[str, list[EvaluationSample]]
) -> dict[str, Any]:
    config = evaluation.config
    confidence = float(config.get("confidence", 0.95))
    seed = int(config.get("seed", 0))
    batch = config.get("mode") == "batch"
    for rows in by_candidate.values():
        await _grade_missing(graders, rows)
    per_sample = [g for g in graders if not g.is_pairwise]

    candidates: list[CandidateResult] = []
    for candidate in config["candidates"]:
        name = candidate["name"]
        rows = by_candidate.get(name, [])
        test = [r for r in rows if r.split == "test"]
        train = [r for r in rows if r.split == "train"]
        provider, model = _provider_and_model(candidate, evaluation)
        input_tokens = sum(r.input_tokens for r in rows)
        output_tokens = sum(r.output_tokens for r in rows)
        latencies = [r.latency_s for r in rows if r.ok and r.latency_s is not None]
        candidates.append(
            CandidateResult(
                candidate=name,
                model=model,
                n=len(test),
                n_failed=sum(1 for r in test if not r.ok),
                status=_candidate_status(len(test), sum(1 for r in test if not r.ok)),
                graders=_summaries(per_sample, test, confidence, seed),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=_cost(model, provider, input_tokens, output_tokens, batch and provider == "openai"),
                latency_p50_s=_percentile(latencies, 50),
                latency_p95_s=_percentile(latencies, 95),
                train_graders=_summaries(per_sample, train, confidence, seed) if train else None,
            )
        )

    baseline = config["baseline"]
    base_rows = {r.example_key: r for r in by_candidate.get(baseline, []) if r.split == "test"}
    comparisons: list[CandidateComparison] = []
    pairwise: dict[str, dict[str, Any]] = {}
    for candidate in config["candidates"]:
        name = candidate["name"]
        if name == baseline:
            continue
        other = {r.example_key: r for r in by_candidate.get(name, []) if r.split == "test"}
        keys = sorted(base_rows.keys() & other.keys(), key=lambda k: int(k.split(":")[1]))
        if not keys:
            continue
        a = [base_rows[k] for k in keys]
        b = [other[k] for k in keys]
        comparisons.append(
            CandidateComparison(
                baseline=baseline,
                candidate=name,
                graders={
                    g.name: compare(
                        g,
                        keys,
                        [_score(r, g.name) for r in a],
                        [_score(r, g.name) for r in b],
                        [_sample(r) for r in a],
                        [_sample(r) for r in b],
                        confidence=confidence,
                        n_resamples=BOOTSTRAP_RESAMPLES,
                        rng=seed,
                    )
                    for g in per_sample
                },
            )
        )
        for g in graders:
            if not g.is_pairwise:
                continue
            samples = [_sample(r) for r in a]
            verdicts = await compare_all(g, samples, [s.output for s in samples], [_sample(r).output for r in b])
            pairwise.setdefault(name, {})[g.name] = summarize(
                g, verdicts, samples, confidence=confidence, n_resamples=BOOTSTRAP_RESAMPLES, rng=seed
            ).model_dump(mode="json")
    results = EvaluationResults(candidates=candidates, comparisons=comparisons, pairwise=pairwise)
    return results.model_dump(mode="json")
