"""Evaluations: create (checking every reference before anything runs), read, cancel, and start one when a job that
asked for it succeeds (a subscriber to ``job.succeeded``). The run itself is in ``service.evaluations.run``; the work
kind ``EVALUATIONS`` says how the engine ends an evaluation whose run keeps failing or is cancelled."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from api_schemas.evaluations import (
    EndpointCandidate,
    EvaluationCreate,
    JobCandidate,
    JobEvaluationRequest,
    ModelCandidate,
)
from api_schemas.evaluations import (
    EvaluationStatus as S,
)
from service.clock import utcnow
from service.datasets.models import Dataset
from service.datasets.service import get_ready_dataset
from service.errors import Conflict, InvalidInput, NotFound
from service.evaluations import states, targets
from service.evaluations.graders.base import GraderConfigError
from service.evaluations.models import Evaluation
from service.events.models import Event
from service.jobs.models import Job
from service.net import allowed_url, outbound_policy
from service.providers import registry
from service.settings import Settings, get_settings
from service.tenancy import get_owned
from service.work import machine, names
from service.work.kind import StepFailure, WorkKind


def _ready_dataset(session: Session, project_id: str, dataset_id: str, role: str) -> Dataset:
    ds = get_ready_dataset(session, project_id, dataset_id, role)
    if ds.format not in ("chat", "prompt_completion", "preference"):
        raise InvalidInput(
            f"{role} dataset {dataset_id} is {ds.format}; convert it to chat first", code="dataset_format_unsupported"
        )
    return ds


def check_graders(req: EvaluationCreate | JobEvaluationRequest) -> None:
    from service.evaluations.graders.registry import get_grader

    class _NoCalls:
        async def complete(self, **_: Any) -> Any:  # never called: building only checks the spec
            raise RuntimeError

    for spec in req.graders:
        try:
            get_grader(spec, chat_client=_NoCalls())
        except GraderConfigError as exc:
            raise InvalidInput(str(exc), code="invalid_grader") from exc


def _check_urls(req: EvaluationCreate | JobEvaluationRequest, settings: Settings, prefix: str = "") -> None:
    """Every URL this evaluation will dial passes the outbound policy now (422 ``url_not_allowed`` naming the
    field); the address it resolves to is checked again at each connection."""
    policy = outbound_policy(settings)
    for i, candidate in enumerate(req.candidates if isinstance(req, EvaluationCreate) else ()):
        if isinstance(candidate, EndpointCandidate):
            allowed_url(candidate.base_url, field=f"{prefix}candidates.{i}.base_url", policy=policy)
    if req.judge is not None and req.judge.base_url is not None:
        allowed_url(req.judge.base_url, field=f"{prefix}judge.base_url", policy=policy)


def create_evaluation(
    session: Session,
    project_id: str,
    req: EvaluationCreate,
    *,
    job_id: str | None = None,
    settings: Settings | None = None,
) -> Evaluation:
    settings = settings or get_settings()
    _check_urls(req, settings)
    _ready_dataset(session, project_id, req.dataset_id, "test")
    resolved = []
    for candidate in req.candidates:
        if candidate.few_shot is not None:
            _ready_dataset(session, project_id, candidate.few_shot.dataset_id, "few-shot")
        resolved.append(
            targets.resolve(session, settings, project_id, candidate.model_dump(mode="json"), check_only=True)
        )
    judge = targets.judge_endpoint(req.judge.model_dump(mode="json") if req.judge is not None else None)
    if judge is not None:
        resolved.append(targets.resolve(session, settings, project_id, judge, check_only=True))
    if req.overfit_check is not None:
        _ready_dataset(session, project_id, req.overfit_check.dataset_id, "training")
    check_graders(req)
    config = req.model_dump(mode="json", exclude={"candidates", "judge", "metadata"})
    config["candidates"] = [targets.seal_candidate(settings, c.model_dump()) for c in req.candidates]
    for c in config["candidates"]:
        if c.get("few_shot") is not None:
            c["few_shot"] = dict(c["few_shot"])
    config["baseline"] = req.baseline or req.candidates[0].name
    if req.judge is not None:
        config["judge"] = targets.seal_candidate(settings, req.judge.model_dump())
    evaluation = Evaluation(
        project_id=project_id,
        status=S.queued,
        dataset_id=req.dataset_id,
        job_id=job_id,
        config=config,
        progress={},
        metadata_=dict(req.metadata),
        next_run_at=utcnow(),
        worker_queue=names.DEVICE_QUEUE
        if any(isinstance(t, targets.LocalTarget) for t in resolved)
        else names.DEFAULT_QUEUE,
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def get_evaluation(session: Session, project_id: str, evaluation_id: str) -> Evaluation:
    return get_owned(session, Evaluation, evaluation_id, project_id, "evaluation")


def request_cancel(session: Session, project_id: str, evaluation_id: str) -> Evaluation:
    """Queued: cancelled at once. Running: the worker stops between samples and keeps what it has."""
    evaluation = get_evaluation(session, project_id, evaluation_id)
    status = S(evaluation.status)
    if status in states.TERMINAL:
        raise Conflict(f"cannot cancel an evaluation that is {status.value}", code="evaluation_not_cancellable")
    now = utcnow()
    evaluation.cancel_requested_at = evaluation.cancel_requested_at or now
    if status == S.queued:
        transition(session, evaluation, S.cancelled, "cancelled before it started")
    else:
        evaluation.next_run_at = now
    evaluation.updated_at = now
    session.add(evaluation)
    return evaluation


def _view(evaluation: Evaluation) -> Any:
    from service.evaluations.views import evaluation_out

    return evaluation_out(evaluation)


def transition(session: Session, evaluation: Evaluation, new: S, reason: str) -> None:
    def on_enter(_old: S) -> None:
        now = utcnow()
        if new == S.running:
            evaluation.started_at = evaluation.started_at or now
        if new in states.TERMINAL:
            evaluation.finished_at = now
        evaluation.progress = {**evaluation.progress, "reason": reason}

    machine.transition(session, evaluation, new, states.MACHINE, view=_view, on_enter=on_enter)


def _give_up(session: Session, evaluation: Evaluation, failure: StepFailure) -> None:
    message = f"the run failed {failure.attempts} times in a row; last error: {failure.message}"
    evaluation.error = {"code": "step_failed", "message": message}
    transition(session, evaluation, S.failed, "gave up after repeated errors")


def _cancel(session: Session, evaluation: Evaluation, error: str) -> None:
    """A cancel wins over a run that keeps failing: cancelled without grading (that may be what fails)."""
    transition(session, evaluation, S.cancelled, f"cancelled (the run could not finish: {error})"[:500])


EVALUATIONS = WorkKind(
    "evaluation",
    Evaluation,
    names.RUN_EVALUATION,
    queue_column="worker_queue",
    give_up=_give_up,
    cancel_requested=lambda evaluation: evaluation.cancel_requested_at is not None,
    cancel=_cancel,
)


def check_job_evaluation_request(
    session: Session, project_id: str, req: JobEvaluationRequest, settings: Settings
) -> dict[str, Any]:
    """Check a job's evaluation request when the job is created (not hours later), and return it as stored."""
    _check_urls(req, settings, prefix="evaluation.")
    _ready_dataset(session, project_id, req.dataset_id, "evaluation")
    check_graders(req)
    stored = req.model_dump(mode="json", exclude={"judge"})
    if req.judge is not None:
        stored["judge"] = targets.seal_candidate(settings, req.judge.model_dump())
    return stored


def evaluation_for_job_event(session: Session, event: Event) -> None:
    """Subscriber to ``job.succeeded`` (``service.events.subscribers``): start the evaluation the job asked for."""
    job = session.get(Job, event.data["object"]["id"])
    if job is not None:
        evaluation_for_job(session, job)
        session.add(job)


def evaluation_for_job(session: Session, job: Job, settings: Settings | None = None) -> Evaluation | None:
    """The evaluation a job asked for (``evaluation`` in its create request), created when it succeeds.

    A request that can no longer be met (its dataset was deleted) is recorded as a failed evaluation rather than
    failing the job's own transition: the training succeeded either way.
    """
    if not job.evaluation_request or job.evaluation_id:
        return None
    settings = settings or get_settings()
    stored = dict(job.evaluation_request)
    sealed_judge = stored.pop("judge", None)
    req = JobEvaluationRequest.model_validate(stored)
    candidates: list[Any] = []
    # The base model is called the way the job's provider serves its models: at that provider when it speaks OpenAI's
    # protocol (openai, azure), or by this service's inference (local).
    target = registry.entry(job.provider).evaluation_target
    provider = job.provider if target == "openai" else (target or "openai")
    if req.include_base:
        candidates.append(ModelCandidate(name="base", provider=provider, model=job.base_model))
    if req.few_shot_k:
        candidates.append(
            ModelCandidate(
                name=f"base-{req.few_shot_k}-shot",
                provider=provider,
                model=job.base_model,
                few_shot={"dataset_id": job.training_dataset_id, "k": req.few_shot_k},
            )
        )
    candidates.append(JobCandidate(name="fine-tuned", job_id=job.id))
    create = EvaluationCreate(
        dataset_id=req.dataset_id,
        candidates=candidates,
        graders=req.graders,
        baseline=candidates[0].name,
        sampling=req.sampling,
        limits=req.limits,
        mode=req.mode,
        max_examples=req.max_examples,
        metadata={"job_id": job.id},
    )
    try:
        with session.begin_nested():
            evaluation = create_evaluation(session, job.project_id, create, job_id=job.id, settings=settings)
            if sealed_judge is not None:
                evaluation.config = {**evaluation.config, "judge": sealed_judge}
    except (InvalidInput, Conflict, NotFound) as exc:
        evaluation = Evaluation(
            project_id=job.project_id,
            status=S.queued,
            dataset_id=req.dataset_id,
            job_id=job.id,
            config=create.model_dump(mode="json"),
            progress={},
            metadata_={"job_id": job.id},
        )
        session.add(evaluation)
        session.flush()
        evaluation.error = {"code": exc.code, "message": str(exc)}
        transition(session, evaluation, S.failed, "the job's evaluation request could not be started")
    job.evaluation_id = evaluation.id
    return evaluation


def sample_filter_keys(evaluation: Evaluation, candidate: str | None) -> set[str]:
    """Example keys where candidates disagree (flipped against the baseline), from the stored results."""
    results = (evaluation.summary or {}).get("comparisons") or []
    keys: set[str] = set()
    for comparison in results:
        if candidate is not None and candidate not in (comparison["candidate"], comparison["baseline"]):
            continue
        for grader in comparison["graders"].values():
            flips = grader.get("flips") or {}
            keys.update(flips.get("a_only") or [])
            keys.update(flips.get("b_only") or [])
    return keys


def list_samples_stmt(evaluation_id: str) -> Any:
    from service.evaluations.models import EvaluationSample

    return select(EvaluationSample).where(EvaluationSample.evaluation_id == evaluation_id)
