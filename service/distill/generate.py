"""Dataset distillation: the teacher answers a dataset's prompts, and its answers become a new chat dataset.

The answers are generated as an evaluation of the teacher on the prompts (one candidate per answer asked of each
prompt). That is the generation engine with everything it brings: rate limits, retries, the Batch API at half price,
local inference on the device queue, samples stored by (candidate, prompt) as they arrive, cancel between requests,
graders (the filters), token usage, cost and latency. The distillation waits for that pass to end, then builds the
dataset from what it holds: all of it, or (cancelled) what it had.

A resume starts a new pass seeded with copies of every answer the earlier passes got, so the engine skips them:
no request is made (or paid for) twice.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlmodel import Session, select

from api_schemas.datasets import DatasetStatus
from api_schemas.distill import DistillDatasetCreate
from api_schemas.distill import DistillRunStatus as D
from api_schemas.evaluations import EndpointCandidate, EvaluationCreate
from api_schemas.evaluations import EvaluationStatus as E
from service.clock import utcnow
from service.datasets import service as datasets
from service.datasets.models import Dataset
from service.datasets.storage import stage_file
from service.distill import states
from service.distill.build import Answer, build, write_jsonl
from service.distill.models import Distillation, DistillRun
from service.errors import Conflict, InvalidInput
from service.evaluations import service as evaluations
from service.evaluations import targets
from service.evaluations.models import Evaluation, EvaluationSample
from service.net import allowed_url, outbound_policy
from service.settings import Settings, get_settings
from service.tenancy import get_owned
from service.work import machine, names
from service.work.kind import StepFailure, WorkKind
from service.work.lease import leased
from service.work.wake import wake

log = logging.getLogger(__name__)

# How often a distillation looks at its generation pass when no event woke it (a subscriber to the evaluation's end
# makes it due at once; this is the fallback).
POLL_S = 30.0
# A chat dataset of prompts only fails validation with these errors alone (no answers yet, and maybe too few of
# them); it is a valid source of prompts.
PROMPT_ONLY_ERRORS = frozenset({"no_assistant_message", "too_few_examples"})
SOURCE_FORMATS = ("chat", "prompt_completion", "preference")
# Every pass keeps only answers with text: an empty assistant turn is no training example.
NON_EMPTY = {"type": "regex", "name": "non_empty", "pattern": r"\S"}


def _source(session: Session, project_id: str, dataset_id: str) -> Dataset:
    ds = datasets.get_dataset(session, project_id, dataset_id)
    if ds.status == DatasetStatus.ready and ds.format in SOURCE_FORMATS:
        return ds
    errors = {c["code"] for c in (ds.report or {}).get("issue_counts") or [] if c.get("severity") == "error"}
    if ds.status == DatasetStatus.invalid and ds.format == "chat" and errors and errors <= PROMPT_ONLY_ERRORS:
        return ds
    if ds.status == DatasetStatus.ready:
        detail = f"dataset {ds.id} is {ds.format}; the prompts must be chat, prompt_completion or preference"
    else:
        detail = (
            f"dataset {ds.id} is {ds.status}; the prompts must be a ready dataset or a chat dataset of prompts only"
            + (f" (it has other errors: {', '.join(sorted(errors - PROMPT_ONLY_ERRORS))})" if errors else "")
        )
    raise Conflict(detail, code="dataset_not_usable", field="source_dataset_id")


def _candidates(teacher: Any, answers: int, sampling_seed: int | None) -> list[Any]:
    """The teacher once per answer asked of each prompt; answer i > 0 samples with seed + i under its own name (the
    teacher's own seed, else the sampling's)."""
    out = [teacher]
    seed = (teacher.params or {}).get("seed", sampling_seed)
    base_seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
    for i in range(1, answers):
        name = f"{teacher.name[:56]}.{i + 1}"
        out.append(teacher.model_copy(update={"name": name, "params": {**teacher.params, "seed": base_seed + i}}))
    return out


def evaluation_request(req: DistillDatasetCreate) -> EvaluationCreate:
    """The teacher's generation pass as an evaluation request: the teacher (once per answer) on the prompts, graded
    by the filters."""
    graders: list[Any] = list(req.filters.graders)
    if not any(g.name == NON_EMPTY["name"] for g in graders):
        graders.append(NON_EMPTY)
    try:
        return _evaluation_create(req, graders)
    except ValidationError as exc:  # a combination the evaluation refuses that the request's own checks let through
        first = exc.errors()[0]
        raise InvalidInput(
            f"the teacher's generation pass cannot be made: {first['msg']}",
            code="invalid_distillation",
            field=".".join(str(p) for p in first.get("loc") or ()),
        ) from exc


def _evaluation_create(req: DistillDatasetCreate, graders: list[Any]) -> EvaluationCreate:
    return EvaluationCreate.model_validate(
        {
            "dataset_id": req.source_dataset_id,
            "candidates": _candidates(req.teacher, req.answers_per_prompt, req.sampling.seed),
            "graders": graders,
            "sampling": req.sampling,
            "limits": req.limits,
            "mode": req.mode,
            "max_examples": req.max_prompts,
            "seed": req.seed,
            "judge": req.judge,
        },
        strict=False,
    )


def _check_teacher(session: Session, settings: Settings, project_id: str, req: DistillDatasetCreate) -> bool:
    """The teacher can answer (its job succeeded, its model exists, its URL is allowed; 422/404/409 naming the
    field otherwise). Returns whether it runs on this machine."""
    policy = outbound_policy(settings)
    if isinstance(req.teacher, EndpointCandidate):
        allowed_url(req.teacher.base_url, field="teacher.base_url", policy=policy)
    if req.judge is not None and req.judge.base_url is not None:
        allowed_url(req.judge.base_url, field="judge.base_url", policy=policy)
    if req.teacher.few_shot is not None:
        datasets.get_ready_dataset(session, project_id, req.teacher.few_shot.dataset_id, "few-shot")
    target = targets.resolve(session, settings, project_id, req.teacher.model_dump(mode="json"), check_only=True)
    judge = targets.judge_endpoint(req.judge.model_dump(mode="json") if req.judge is not None else None)
    if judge is not None:
        targets.resolve(session, settings, project_id, judge, check_only=True)
    return isinstance(target, targets.LocalTarget)


def create_run(
    session: Session,
    project_id: str,
    req: DistillDatasetCreate,
    *,
    settings: Settings | None = None,
    metadata: dict[str, Any] | None = None,
) -> DistillRun:
    """Check everything the run will need (prompts, teacher, filters, URLs), then start its first pass."""
    settings = settings or get_settings()
    src = _source(session, project_id, req.source_dataset_id)
    create = evaluation_request(req)
    local = _check_teacher(session, settings, project_id, req)
    evaluations.check_graders(create)  # the evaluation's own check: filters are its graders
    config = create.model_dump(mode="json", exclude={"candidates", "judge", "metadata"})
    config["candidates"] = [targets.seal_candidate(settings, c.model_dump()) for c in create.candidates]
    config["baseline"] = create.candidates[0].name
    if create.judge is not None:
        config["judge"] = targets.seal_candidate(settings, create.judge.model_dump())
    stem = src.filename.rsplit(".", 1)[0]
    run = DistillRun(
        project_id=project_id,
        status=D.generating,
        source_dataset_id=src.id,
        config={
            "request": req.model_dump(mode="json", exclude={"teacher", "judge"}),
            "teacher": targets.public_candidate(config["candidates"][0]),
            "filename": req.filename or f"{stem}.distilled.jsonl",
            "must_pass": [g["name"] for g in config["graders"]],
            "local": local,
            "evaluation": config,
        },
        counts={},
        usage={},
        metadata_={**req.metadata, **(metadata or {})},
    )
    session.add(run)
    session.flush()
    _new_pass(session, run, seed_from=None)
    return run


def _new_pass(session: Session, run: DistillRun, *, seed_from: Evaluation | None) -> Evaluation:
    """A generation pass: an evaluation of the teacher on the prompts, holding copies of every answer ``seed_from``
    got (with their grades), which the engine then skips."""
    config = dict(run.config["evaluation"])
    evaluation = Evaluation(
        project_id=run.project_id,
        status=E.queued,
        dataset_id=run.source_dataset_id,
        config=config,
        progress={},
        metadata_={"distill_run_id": run.id},
        next_run_at=utcnow(),
        # Like any evaluation that runs a model here: on the device queue, never beside a training.
        worker_queue=names.DEVICE_QUEUE if run.config.get("local") else names.DEFAULT_QUEUE,
    )
    session.add(evaluation)
    session.flush()
    if seed_from is not None:
        kept = session.exec(
            select(EvaluationSample).where(
                EvaluationSample.evaluation_id == seed_from.id,
                EvaluationSample.ok.is_(True),  # type: ignore[union-attr]
            )
        ).all()
        for s in kept:
            data = s.model_dump(exclude={"id", "evaluation_id", "created_at"})
            session.add(EvaluationSample(**data, evaluation_id=evaluation.id))
    run.evaluation_id = evaluation.id
    run.evaluation_ids = [*run.evaluation_ids, evaluation.id]
    run.next_run_at = utcnow() + timedelta(seconds=POLL_S)
    session.add(run)
    session.flush()
    return evaluation


def get_run(session: Session, project_id: str, run_id: str) -> DistillRun:
    return get_owned(session, DistillRun, run_id, project_id, "distill_run")


def request_cancel(session: Session, project_id: str, run_id: str) -> DistillRun:
    """The generation pass stops between requests; the dataset is then built from the answers it has."""
    run = get_run(session, project_id, run_id)
    if D(run.status) != D.generating:
        raise Conflict(f"cannot cancel a distillation that is {run.status}", code="distillation_not_cancellable")
    run.cancel_requested_at = run.cancel_requested_at or utcnow()
    evaluation = session.get(Evaluation, run.evaluation_id) if run.evaluation_id else None
    if evaluation is not None and E(evaluation.status) not in evaluations.states.TERMINAL:
        evaluations.request_cancel(session, project_id, evaluation.id)
    run.next_run_at = utcnow()
    run.updated_at = utcnow()
    session.add(run)
    return run


def resume(session: Session, project_id: str, run_id: str) -> DistillRun:
    """A cancelled or failed distillation goes on where it stopped: a new pass seeded with the answers it has."""
    run = get_run(session, project_id, run_id)
    if D(run.status) not in (D.cancelled, D.failed):
        raise Conflict(f"cannot resume a distillation that is {run.status}", code="distillation_not_resumable")
    _source(session, project_id, run.source_dataset_id)
    previous = session.get(Evaluation, run.evaluation_id) if run.evaluation_id else None
    run.cancel_requested_at = None
    run.error = None
    transition(session, run, D.generating)
    _new_pass(session, run, seed_from=previous)
    return run


def _view(run: DistillRun) -> Any:
    from service.distill.views import run_out

    return run_out(run)


def transition(session: Session, run: DistillRun, to: D) -> None:
    def on_enter(_old: D) -> None:
        run.finished_at = utcnow() if to in states.RUN_ENDED else None

    machine.transition(session, run, to, states.RUN_MACHINE, view=_view, on_enter=on_enter)
    if to in states.RUN_ENDED:
        run.next_run_at = None
        # A recipe waiting on this distillation goes on now rather than at its next poll.
        session.execute(
            sa.update(Distillation).where(Distillation.distill_run_id == run.id).values(next_run_at=utcnow())
        )


def _give_up(session: Session, run: DistillRun, failure: StepFailure) -> None:
    run.error = {"code": "step_failed", "message": f"failed {failure.attempts} times in a row: {failure.message}"}
    transition(session, run, D.failed)


DISTILL_RUNS = WorkKind("distill_run", DistillRun, names.ADVANCE_DISTILL_RUN, give_up=_give_up)


def advance(run_id: str) -> None:
    """Worker step: once the generation pass has ended, build the dataset from its answers."""
    settings = get_settings()
    made: Dataset | None = None
    with leased(DISTILL_RUNS, run_id) as got:
        if got is None:
            return
        session, run = got
        if D(run.status) != D.generating:
            run.next_run_at = None
            return
        evaluation = session.get(Evaluation, run.evaluation_id) if run.evaluation_id else None
        if evaluation is None:
            run.error = {"code": "generation_missing", "message": "the generation pass was deleted"}
            transition(session, run, D.failed)
            return
        if E(evaluation.status) not in evaluations.states.TERMINAL:
            run.next_run_at = utcnow() + timedelta(seconds=POLL_S)
            return
        made = finish_pass(session, settings, run, evaluation)
    if made is not None and made.status == DatasetStatus.validating:
        wake(datasets.DATASETS, made.id)


def _answers(session: Session, run: DistillRun, evaluation: Evaluation) -> tuple[list[Answer], int]:
    order = {c["name"]: i for i, c in enumerate(evaluation.config["candidates"])}
    rows = session.exec(select(EvaluationSample).where(EvaluationSample.evaluation_id == evaluation.id)).all()
    answers = [
        Answer(
            index=r.example_index,
            answer=order.get(r.candidate, 0),
            prompt=list(r.input),
            output=r.output or "",
            passed={name: (score or {}).get("passed") for name, score in (r.scores or {}).items()},
        )
        for r in rows
        if r.ok
    ]
    return answers, sum(1 for r in rows if not r.ok)


def _usage(evaluation: Evaluation) -> dict[str, Any]:
    from service.pricing.table import load_price_table

    results = (evaluation.summary or {}).get("candidates") or []
    costs = [r.get("cost_usd") for r in results]
    priced = bool(results) and all(c is not None for c in costs)
    return {
        "input_tokens": sum(int(r.get("input_tokens") or 0) for r in results),
        "output_tokens": sum(int(r.get("output_tokens") or 0) for r in results),
        "cost_usd": str(sum((Decimal(c) for c in costs if c is not None), Decimal(0))) if priced else None,
        "price_table_version": load_price_table().version if priced else None,
        "batch": evaluation.config.get("mode") == "batch",
    }


def finish_pass(session: Session, settings: Settings, run: DistillRun, evaluation: Evaluation) -> Dataset | None:
    """Build the dataset from the pass's answers and end the run as the pass ended (a cancelled pass still gives its
    answers). Returns the dataset (None when no answer survived)."""
    answers, failed = _answers(session, run, evaluation)
    req = run.config["request"]
    filters = req.get("filters") or {}
    dedupe = filters.get("dedupe") or {}
    n_prompts = int((evaluation.progress or {}).get("examples") or 0)
    counts: dict[str, Any] = {
        "prompts": n_prompts,
        "answers_requested": n_prompts * int(req.get("answers_per_prompt", 1)),
        "answered": len(answers),
        "failed": failed,
    }
    tmp_root = settings.files_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    dataset: Dataset | None = None
    with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
        built = build(
            answers,
            must_pass=run.config["must_pass"],
            exact=bool(dedupe.get("exact", True)),
            near=bool(dedupe.get("near", False)),
            near_threshold=float(dedupe.get("near_threshold", 0.85)),
            workdir=Path(tmp),
        )
        counts.update(
            filtered_out=built.filtered_out,
            exact_duplicates=built.exact_duplicates,
            near_duplicates=built.near_duplicates,
            kept=len(built.examples),
        )
        run.counts = counts
        run.usage = _usage(evaluation)
        if built.examples:
            path = write_jsonl(built.examples, Path(tmp) / "distilled.jsonl")
            dataset = _register(session, settings, run, path)
    outcome = {E.succeeded: D.succeeded, E.cancelled: D.cancelled}.get(E(evaluation.status), D.failed)
    if outcome == D.failed:
        run.error = evaluation.error or {"code": "generation_failed", "message": "the generation pass failed"}
    elif dataset is None and outcome == D.succeeded:
        outcome = D.failed
        run.error = {
            "code": "no_examples_kept",
            "message": f"no answer passed the filters ({counts['answered']} answered, {failed} failed)",
        }
    if dataset is not None:
        run.dataset_id = dataset.id
    transition(session, run, outcome)
    session.add(run)
    return dataset


def _register(session: Session, settings: Settings, run: DistillRun, path: Path) -> Dataset:
    src = session.get(Dataset, run.source_dataset_id)
    staged = stage_file(settings, path)
    derivation = {
        "kind": "distillation",
        "distill_run_id": run.id,
        "teacher": run.config["teacher"],
        "evaluation_id": run.evaluation_id,
        "answers_per_prompt": run.config["request"].get("answers_per_prompt", 1),
        "sampling": run.config["request"].get("sampling"),
        "counts": run.counts,
        "usage": run.usage,
    }
    ds, created = datasets.create_from_staged(
        session,
        settings,
        run.project_id,
        staged,
        filename=run.config["filename"],
        declared_format="chat",
        model=src.model if src is not None else None,
        source_dataset_id=run.source_dataset_id,
        derivation=derivation,
        metadata={"distill_run_id": run.id},
    )
    if not created:
        log.info("distillation %s: the same examples as dataset %s; using it", run.id, ds.id)
    return ds


def wake_on_evaluation_end(session: Session, event: Any) -> None:
    """Subscriber to an evaluation's end: the distillation waiting on it is due now (idempotent)."""
    evaluation_id = (event.data.get("object") or {}).get("id")
    if not evaluation_id:
        return
    session.execute(
        sa.update(DistillRun)
        .where(DistillRun.evaluation_id == evaluation_id, DistillRun.status == D.generating)
        .values(next_run_at=utcnow())
    )
