"""Rows to API objects."""

from __future__ import annotations

from api_schemas.evaluations import EvaluationOut, Progress, SampleOut
from service.evaluations.models import Evaluation, EvaluationSample
from service.evaluations.targets import public_candidate
from service.work.views import last_error_out


def evaluation_out(evaluation: Evaluation) -> EvaluationOut:
    config = evaluation.config
    progress = {k: v for k, v in (evaluation.progress or {}).items() if k in Progress.model_fields}
    return EvaluationOut(
        id=evaluation.id,
        project_id=evaluation.project_id,
        status=evaluation.status,
        dataset_id=evaluation.dataset_id,
        job_id=evaluation.job_id,
        mode=config.get("mode", "realtime"),
        candidates=[public_candidate(c) for c in config.get("candidates", [])],
        graders=config.get("graders", []),
        baseline=config.get("baseline") or config["candidates"][0]["name"],
        sampling=config.get("sampling") or {},
        limits=config.get("limits") or {},
        max_examples=config.get("max_examples"),
        seed=config.get("seed", 0),
        confidence=config.get("confidence", 0.95),
        overfit_check=config.get("overfit_check"),
        progress=Progress.model_validate(progress),
        results=evaluation.summary,
        error=evaluation.error,
        last_error=last_error_out(evaluation),
        attempts=evaluation.attempts,
        cancel_requested=evaluation.cancel_requested_at is not None,
        metadata=evaluation.metadata_,
        created_at=evaluation.created_at,
        updated_at=evaluation.updated_at,
        started_at=evaluation.started_at,
        finished_at=evaluation.finished_at,
    )


def sample_out(row: EvaluationSample) -> SampleOut:
    return SampleOut(
        id=row.id,
        evaluation_id=row.evaluation_id,
        candidate=row.candidate,
        split=row.split,
        example_index=row.example_index,
        input=row.input,
        reference=row.reference,
        output=row.output,
        finish_reason=row.finish_reason,
        ok=row.ok,
        error=row.error,
        error_kind=row.error_kind,
        scores=row.scores or {},
        latency_s=row.latency_s,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        attempts=row.attempts,
        created_at=row.created_at,
    )
