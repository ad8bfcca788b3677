"""The distillation recipe: distil the teacher's answers into a dataset, split it (frozen), train the student on the
training part, evaluate student, teacher and the student's base on the held-out prompts, report.

Each step is its own object (a dataset distillation, datasets, a job, an evaluation) created by this row and shown on
it. The row waits for the current child with ``next_run_at``; a subscriber to the children's ends makes it due at
once (``wake_on_child_end``), the poll is the fallback. One step per pass, each one idempotent on the row's ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlmodel import Session, select

from api_schemas.datasets import DatasetStatus
from api_schemas.distill import DistillationCreate, DistillationOut, DistillDatasetCreate
from api_schemas.distill import DistillationStatus as R
from api_schemas.distill import DistillRunStatus as D
from api_schemas.evaluations import EvaluationCreate, JobCandidate, ModelCandidate
from api_schemas.evaluations import EvaluationStatus as E
from api_schemas.jobs import JobCreate, JobStatus
from service.clock import utcnow
from service.datasets import derive
from service.datasets.models import Dataset
from service.datasets.service import DATASETS
from service.datasets.views import first_problems
from service.distill import generate, states
from service.distill.models import Distillation, DistillRun
from service.distill.report import build_report
from service.errors import Conflict, InvalidInput, ServiceError
from service.evaluations import service as evaluations
from service.evaluations import targets
from service.evaluations.models import Evaluation, EvaluationSample
from service.jobs import service as jobs
from service.jobs.lifecycle import JOBS
from service.jobs.models import Job
from service.jobs.states import TERMINAL as JOB_ENDED
from service.providers import registry
from service.settings import Settings, get_settings
from service.tenancy import get_owned
from service.work import machine, names
from service.work.kind import StepFailure, WorkKind
from service.work.lease import leased
from service.work.wake import wake

log = logging.getLogger(__name__)

POLL_S = 30.0
STUDENT, TEACHER, BASE = "student", "teacher", "base"
Wake = tuple[Any, str]


def _student_target(provider: str) -> str:
    return registry.entry(provider).evaluation_target or "openai"


def _check_student(session: Session, settings: Settings, project_id: str, req: DistillationCreate) -> None:
    """The student can be trained and its base answered: checked now, before the teacher is paid."""
    entry = registry.entry(req.student.provider)
    ok, reason = entry.availability()
    if not ok:
        raise InvalidInput(f"provider {req.student.provider!r} is not available: {reason}", code="provider_unavailable")
    try:
        entry.params_model.model_validate(req.student.hyperparameters, strict=True, context={"method": "supervised"})
    except (ValidationError, ValueError, TypeError) as exc:
        raise InvalidInput(
            f"invalid student.hyperparameters for {req.student.provider}: {exc}",
            code="invalid_hyperparameters",
            field="student.hyperparameters",
        ) from exc
    base = ModelCandidate(name=BASE, provider=_student_target(req.student.provider), model=req.student.model)
    targets.resolve(session, settings, project_id, base.model_dump(mode="json"), check_only=True)
    evaluations.check_graders(req.evaluation)  # the evaluation's own check of its graders


def create(
    session: Session, project_id: str, req: DistillationCreate, *, settings: Settings | None = None
) -> Distillation:
    settings = settings or get_settings()
    _check_student(session, settings, project_id, req)
    row = Distillation(
        project_id=project_id,
        status=R.distilling,
        source_dataset_id=req.source_dataset_id,
        config={
            "student": req.student.model_dump(mode="json"),
            "held_out": req.held_out.model_dump(mode="json"),
            "evaluation": req.evaluation.model_dump(mode="json"),
            "local_usd_per_hour": req.local_usd_per_hour,
        },
        metadata_=dict(req.metadata),
        next_run_at=utcnow() + timedelta(seconds=POLL_S),
    )
    session.add(row)
    session.flush()
    dataset_req = DistillDatasetCreate(**{name: getattr(req, name) for name in DistillDatasetCreate.model_fields})
    run = generate.create_run(session, project_id, dataset_req, settings=settings, metadata={"distillation_id": row.id})
    row.distill_run_id = run.id
    row.config = {**row.config, "teacher": run.config["teacher"]}
    session.add(row)
    session.flush()
    return row


def first_pass(session: Session, run_id: str) -> dict[str, Any]:
    run = session.get(DistillRun, run_id)
    return {"evaluation_id": run.evaluation_id, "status": run.status} if run is not None else {}


def get(session: Session, project_id: str, distillation_id: str) -> Distillation:
    return get_owned(session, Distillation, distillation_id, project_id, "distillation")


def view(session: Session, row: Distillation) -> DistillationOut:
    from service.distill.views import distillation_out

    statuses: dict[str, Any] = {}
    for model, child in (
        (DistillRun, row.distill_run_id),
        (Dataset, row.config.get("dataset_id")),
        (Dataset, row.train_dataset_id),
        (Dataset, row.test_dataset_id),
        (Job, row.job_id),
        (Evaluation, row.evaluation_id),
    ):
        if child:
            found = session.get(model, child)
            statuses[child] = found.status if found is not None else "deleted"
    return distillation_out(row, statuses)


def transition(session: Session, row: Distillation, to: R, error: dict[str, Any] | None = None) -> None:
    def on_enter(_old: R) -> None:
        if error is not None:
            row.error = error
        if to in states.RECIPE_MACHINE.terminal:
            row.finished_at = utcnow()

    machine.transition(session, row, to, states.RECIPE_MACHINE, view=lambda r: view(session, r), on_enter=on_enter)
    session.add(row)


def _fail(session: Session, row: Distillation, code: str, message: str) -> None:
    transition(session, row, R.failed, {"code": code, "message": message})


def _wait(row: Distillation) -> None:
    row.next_run_at = utcnow() + timedelta(seconds=POLL_S)


def _next(row: Distillation) -> None:
    row.next_run_at = utcnow()


# Steps: each looks at the current child and either waits, fails the recipe, or makes the next child. -------------


def _distilling(session: Session, settings: Settings, row: Distillation) -> list[Wake]:
    run = session.get(DistillRun, row.distill_run_id)
    if run is None:
        _fail(session, row, "distillation_missing", "the dataset distillation was deleted")
        return []
    if D(run.status) == D.generating:
        _wait(row)
        return []
    if D(run.status) != D.succeeded:
        message = (run.error or {}).get("message") or f"the dataset distillation {run.id} is {run.status}"
        _fail(session, row, "distillation_failed", message)
        return []
    ds = session.get(Dataset, run.dataset_id) if run.dataset_id else None
    if ds is None:
        _fail(session, row, "dataset_missing", "the distilled dataset was deleted")
        return []
    row.config = {**row.config, "dataset_id": ds.id}
    if ds.status == DatasetStatus.validating:
        _wait(row)
        return []
    if ds.status != DatasetStatus.ready:
        _fail(session, row, "dataset_invalid", f"the distilled dataset {ds.id} is invalid: {first_problems(ds.report)}")
        return []
    held_out = row.config["held_out"]
    fraction = float(held_out["test_fraction"])
    try:
        with session.begin_nested():  # a refusal leaves nothing half-made
            splits, _later = derive.split(
                session,
                settings,
                row.project_id,
                ds.id,
                {"train": 1 - fraction, "test": fraction},
                held_out["seed"],
                None,
            )
    except ServiceError as exc:  # nothing a retry changes
        _fail(session, row, exc.code, f"the distilled dataset could not be split: {exc}")
        return []
    row.train_dataset_id, row.test_dataset_id = splits["train"].id, splits["test"].id
    transition(session, row, R.splitting)
    _next(row)
    return [(DATASETS, d.id) for d in splits.values() if d.status == DatasetStatus.validating]


def _splitting(session: Session, settings: Settings, row: Distillation) -> list[Wake]:
    parts = [session.get(Dataset, i) for i in (row.train_dataset_id, row.test_dataset_id) if i]
    if len(parts) != 2 or any(p is None for p in parts):
        _fail(session, row, "dataset_missing", "a split of the distilled dataset was deleted")
        return []
    if any(p.status == DatasetStatus.validating for p in parts):
        _wait(row)
        return []
    bad = [p for p in parts if p.status != DatasetStatus.ready]
    if bad:
        _fail(session, row, "dataset_invalid", f"split {bad[0].id} is invalid: {first_problems(bad[0].report)}")
        return []
    student = row.config["student"]
    job_req = JobCreate(
        training_dataset_id=row.train_dataset_id,
        provider=student["provider"],
        model=student["model"],
        method={"type": "supervised", "hyperparameters": student.get("hyperparameters") or {}},
        metadata={"distillation_id": row.id},
    )
    try:
        with session.begin_nested():
            job = jobs.create_job(session, row.project_id, job_req, settings)
    except ServiceError as exc:
        _fail(session, row, exc.code, f"the student's job could not be created: {exc}")
        return []
    row.job_id = job.id
    transition(session, row, R.training)
    _wait(row)
    return [(JOBS, job.id)]


def _training(session: Session, settings: Settings, row: Distillation) -> list[Wake]:
    job = session.get(Job, row.job_id) if row.job_id else None
    if job is None:
        _fail(session, row, "job_missing", "the student's job was deleted")
        return []
    if JobStatus(job.status) not in JOB_ENDED:
        _wait(row)
        return []
    if job.status != JobStatus.succeeded:
        message = (job.error or {}).get("message") if isinstance(job.error, dict) else None
        _fail(session, row, "training_failed", message or f"the student's job {job.id} is {job.status}")
        return []
    run = session.get(DistillRun, row.distill_run_id)
    assert run is not None
    try:
        with session.begin_nested():
            evaluation = _evaluation(session, settings, row, run, job)
    except ServiceError as exc:  # the teacher or the student can no longer answer (deleted, credentials removed)
        _fail(session, row, exc.code, f"the evaluation could not be created: {exc}")
        return []
    row.evaluation_id = evaluation.id
    transition(session, row, R.evaluating)
    _wait(row)
    return [(evaluations.EVALUATIONS, evaluation.id)]


def _evaluation(session: Session, settings: Settings, row: Distillation, run: DistillRun, job: Job) -> Evaluation:
    """Student, teacher and the student's base on the held-out prompts, graded against the teacher's answers."""
    sealed_teacher = {**run.config["evaluation"]["candidates"][0], "name": TEACHER}
    plain_teacher = {k: v for k, v in sealed_teacher.items() if k != "api_key_ciphertext"}
    spec = row.config["evaluation"]
    stored = run.config["evaluation"]
    create = EvaluationCreate.model_validate(
        {
            "dataset_id": row.test_dataset_id,
            "candidates": [
                JobCandidate(name=STUDENT, job_id=job.id),
                plain_teacher,
                ModelCandidate(name=BASE, provider=_student_target(job.provider), model=job.base_model),
            ],
            "graders": spec["graders"],
            "baseline": BASE,
            "sampling": stored["sampling"],
            "limits": stored["limits"],
            "max_examples": spec.get("max_examples"),
            "confidence": spec.get("confidence", 0.95),
            "metadata": {"distillation_id": row.id},
        },
        strict=False,
    )
    evaluation = evaluations.create_evaluation(session, row.project_id, create, settings=settings)
    # The teacher's key was sealed when the distillation was made; the evaluation keeps that ciphertext.
    candidates = [sealed_teacher if c["name"] == TEACHER else c for c in evaluation.config["candidates"]]
    evaluation.config = {**evaluation.config, "candidates": candidates}
    if stored.get("judge") is not None:
        evaluation.config = {**evaluation.config, "judge": stored["judge"]}
    session.add(evaluation)
    session.flush()
    return evaluation


def _evaluating(session: Session, settings: Settings, row: Distillation) -> list[Wake]:
    evaluation = session.get(Evaluation, row.evaluation_id) if row.evaluation_id else None
    if evaluation is None:
        _fail(session, row, "evaluation_missing", "the evaluation was deleted")
        return []
    if E(evaluation.status) not in evaluations.states.TERMINAL:
        _wait(row)
        return []
    if evaluation.status != E.succeeded or not evaluation.summary:
        message = (evaluation.error or {}).get("message") or f"the evaluation {evaluation.id} is {evaluation.status}"
        _fail(session, row, "evaluation_failed", message)
        return []
    row.report = _report(session, row, evaluation).model_dump(mode="json")
    transition(session, row, R.succeeded)
    return []


def _report(session: Session, row: Distillation, evaluation: Evaluation) -> Any:
    run = session.get(DistillRun, row.distill_run_id)
    local = {STUDENT, BASE} if _student_target(row.config["student"]["provider"]) == "local" else set()
    if run is not None and run.config.get("local"):
        local.add(TEACHER)
    means = dict(
        session.execute(
            sa.select(EvaluationSample.candidate, sa.func.avg(EvaluationSample.latency_s))
            .where(EvaluationSample.evaluation_id == evaluation.id, EvaluationSample.ok.is_(True))  # type: ignore[union-attr]
            .group_by(EvaluationSample.candidate)
        ).all()
    )
    return build_report(
        evaluation.summary or {},
        local=local,
        mean_latency_s={k: (float(v) if v is not None else None) for k, v in means.items()},
        usd_per_hour=row.config.get("local_usd_per_hour"),
        student=STUDENT,
        base=BASE,
    )


STEPS: dict[R, Callable[[Session, Settings, Distillation], list[Wake]]] = {
    R.distilling: _distilling,
    R.splitting: _splitting,
    R.training: _training,
    R.evaluating: _evaluating,
}


def advance(distillation_id: str) -> None:
    """Worker step: one step of the recipe; the children it made are woken once it has committed."""
    settings = get_settings()
    wakes: list[Wake] = []
    with leased(DISTILLATIONS, distillation_id) as got:
        if got is None:
            return
        session, row = got
        step = STEPS.get(R(row.status))
        if step is None:
            row.next_run_at = None
            return
        wakes = step(session, settings, row)
    for kind, child_id in wakes:
        wake(kind, child_id)


def request_cancel(session: Session, project_id: str, distillation_id: str) -> Distillation:
    """Cancels the step in progress (a dataset distillation keeps and builds the answers it has) and the recipe."""
    row = get(session, project_id, distillation_id)
    status = R(row.status)
    if status in states.RECIPE_MACHINE.terminal:
        raise Conflict(f"cannot cancel a distillation that is {status.value}", code="distillation_not_cancellable")
    row.cancel_requested_at = utcnow()
    try:
        if status == R.distilling and row.distill_run_id:
            run = session.get(DistillRun, row.distill_run_id)
            if run is not None and D(run.status) == D.generating:
                generate.request_cancel(session, project_id, run.id)
        elif status == R.training and row.job_id:
            jobs.request_action(session, project_id, row.job_id, "cancel")
        elif status == R.evaluating and row.evaluation_id:
            evaluations.request_cancel(session, project_id, row.evaluation_id)
    except Conflict:
        log.info("distillation %s: its current step had already ended when cancelled", row.id)
    transition(session, row, R.cancelled, {"code": "cancelled", "message": f"cancelled while {status.value}"})
    return row


def _give_up(session: Session, row: Distillation, failure: StepFailure) -> None:
    _fail(session, row, "step_failed", f"failed {failure.attempts} times in a row: {failure.message}")


DISTILLATIONS = WorkKind("distillation", Distillation, names.ADVANCE_DISTILLATION, give_up=_give_up)


def wake_on_child_end(session: Session, event: Any) -> None:
    """Subscriber to the end of a dataset, job or evaluation: the recipe waiting on it is due now, and so is a
    dataset distillation waiting on its generation pass (idempotent)."""
    child = (event.data.get("object") or {}).get("id")
    if not child:
        return
    generate.wake_on_evaluation_end(session, event)
    waiting = sa.or_(
        Distillation.job_id == child,
        Distillation.evaluation_id == child,
        Distillation.train_dataset_id == child,
        Distillation.test_dataset_id == child,
        Distillation.distill_run_id.in_(select(DistillRun.id).where(DistillRun.dataset_id == child)),  # type: ignore[union-attr]
    )
    session.execute(
        sa.update(Distillation)
        .where(waiting, Distillation.status.in_([R.distilling, R.splitting, R.training, R.evaluating]))  # type: ignore[attr-defined]
        .values(next_run_at=utcnow())
        .execution_options(synchronize_session=False)
    )
