"""Running an evaluation: generate every (candidate, example) answer not yet stored, then grade and summarise.

The run holds a lease on the evaluation row and commits samples as they arrive, so a killed worker loses at most the
answers in flight: the sweeper hands the row to another worker once the lease expires, and that worker skips every
stored sample (they are unique by evaluation, candidate and example key). Batch mode returns between steps (submit,
poll, collect) with ``next_run_at`` set, like a training job does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from api_schemas.evaluations import EvaluationStatus as S
from service.clock import utcnow
from service.datasets.models import Dataset
from service.datasets.storage import blob_path
from service.db import get_engine
from service.errors import ServiceError
from service.evaluations import service, states, targets
from service.evaluations.examples import Example, few_shot_turns, load_examples, with_few_shot
from service.evaluations.generation import GenRequest, GenResult, RateLimits, generate_all_sync
from service.evaluations.models import Evaluation, EvaluationSample
from service.logs import job_id_var
from service.settings import Settings, get_settings
from service.work.lease import Lease, claim

log = logging.getLogger(__name__)

CANCEL_CHECK_S = 2.0
# One local model generating at a time in this process: two would share the same cores or GPU and memory.
_LOCAL_DEVICE = threading.Lock()
FLUSH_EVERY = 32


class LeaseLost(Exception):
    """Another worker took the evaluation over (this one was too slow to renew): stop without writing more."""


class FatalRunError(Exception):
    def __init__(self, code: str, message: str, candidate: str | None = None) -> None:
        super().__init__(message)
        self.code, self.candidate = code, candidate


@dataclass
class _Ctx:
    evaluation_id: str
    owner: str
    lease: Lease
    settings: Settings
    last_check: float = 0.0
    cancelled: bool = False
    save_lock: threading.Lock = field(default_factory=threading.Lock)

    def session(self) -> Session:
        return Session(get_engine(), expire_on_commit=False)

    def heartbeat(self, force: bool = False) -> bool:
        """Renew the lease and look for a cancel request every few seconds. True when the run should stop."""
        now = time.monotonic()
        if not force and now - self.last_check < CANCEL_CHECK_S:
            return self.cancelled
        self.last_check = now
        if not self.lease.renew():
            raise LeaseLost(self.evaluation_id)
        with self.session() as s:
            requested = s.exec(
                select(Evaluation.cancel_requested_at).where(Evaluation.id == self.evaluation_id)
            ).first()
        self.cancelled = requested is not None
        return self.cancelled

    def update_candidate(self, name: str, **fields: Any) -> None:
        """Merge ``fields`` into one candidate's entry of the progress JSON."""

        def mutate(_s: Session, row: Evaluation) -> None:
            candidates = dict(row.progress.get("candidates") or {})
            candidates[name] = {**(candidates.get(name) or {}), **fields}
            row.progress = {**row.progress, "candidates": candidates}

        self.save(mutate)

    def save(self, mutate: Callable[[Session, Evaluation], None]) -> Evaluation:
        """Apply ``mutate`` to the row and commit, only while the lease is ours. Candidates run in threads and each
        rewrites the progress JSON, so saves in this process take turns (other processes do not hold the lease)."""
        with self.save_lock, self.session() as s:
            row = s.get(Evaluation, self.evaluation_id, with_for_update=s.bind.dialect.name == "postgresql")
            if row is None or row.lease_owner != self.owner:
                raise LeaseLost(self.evaluation_id)
            mutate(s, row)
            row.updated_at = utcnow()
            s.add(row)
            s.commit()
            return row


def run(evaluation_id: str) -> None:
    """One worker pass over an evaluation (the body of the Celery task)."""
    settings = get_settings()
    lease = claim(service.EVALUATIONS, evaluation_id, lease_s=settings.lease_s)
    if lease is None:
        return
    ctx = _Ctx(evaluation_id, lease.owner, lease, settings)
    token = job_id_var.set(evaluation_id)
    try:
        _run(ctx)
    except LeaseLost:
        log.warning("evaluation %s: lease lost; another worker continues", evaluation_id)
        return
    except Exception as exc:
        # Counted by the engine: retried with a growing delay, failed after the bound, cancelled if a cancel waits.
        lease.back_off(exc)
        raise
    finally:
        job_id_var.reset(token)
    lease.release()


def _run(ctx: _Ctx) -> None:
    with ctx.session() as s:
        evaluation = s.get(Evaluation, ctx.evaluation_id)
    if evaluation is None or S(evaluation.status) in states.TERMINAL:
        return
    if evaluation.cancel_requested_at is not None:
        from service.evaluations import batch_mode

        # Batches still out at the provider are cancelled there first (they would keep running and billing); the
        # pass below winds them down and keeps what they finished.
        if not batch_mode.batches_out(evaluation):
            _finish(ctx, S.cancelled, "cancelled")
            return
        ctx.cancelled = True
    if evaluation.status == S.queued:
        ctx.save(lambda s, row: service.transition(s, row, S.running, "started"))
    config = evaluation.config
    try:
        examples = _examples(ctx, config)
        ctx.save(lambda s, row: _set_totals(row, examples))
        waiting = _generate_all(ctx, evaluation, examples)
        if waiting is not None:  # batches to poll, or (cancelled) to wind down
            ctx.save(lambda _s, row: setattr(row, "next_run_at", waiting))
            return
        if ctx.heartbeat(force=True):
            _finish(ctx, S.cancelled, "cancelled")
            return
        _finish(ctx, S.succeeded, "every candidate answered and was graded")
    except FatalRunError as exc:
        error = {"code": exc.code, "message": str(exc), "candidate": exc.candidate}
        _finish(ctx, S.failed, str(exc), error=error)
    except ServiceError as exc:
        # A reference went away (dataset deleted, job gone, credentials removed): nothing a retry fixes.
        _finish(ctx, S.failed, str(exc), error={"code": exc.code, "message": str(exc)})


def _generate_all(ctx: _Ctx, evaluation: Evaluation, examples: list[Example]) -> datetime | None:
    """Every candidate at once: remote candidates are usually different models or endpoints with limits of their own,
    so one waiting on its limiter should not hold the others back. Local inference takes ``_LOCAL_DEVICE`` in turn.
    Returns the earliest time a candidate (batch mode) wants to come back, or None when all are answered."""
    candidates = evaluation.config["candidates"]
    with ThreadPoolExecutor(max_workers=len(candidates), thread_name_prefix=f"eval-{evaluation.id[-6:]}") as pool:
        futures = [pool.submit(_generate, ctx, evaluation, c, examples) for c in candidates]
    outcomes, errors = [], []
    for future in futures:
        try:
            outcomes.append(future.result())
        except Exception as exc:  # every candidate finishes or fails on its own; the first error decides
            errors.append(exc)
    if errors:
        raise errors[0]
    waits = [w for w in outcomes if w is not None]
    return min(waits) if waits else None


def _dataset_path(ctx: _Ctx, dataset_id: str) -> Any:
    with ctx.session() as s:
        ds = s.get(Dataset, dataset_id)
    if ds is None:
        raise FatalRunError("dataset_not_found", f"dataset {dataset_id} no longer exists")
    return blob_path(ctx.settings, ds.sha256)


def _examples(ctx: _Ctx, config: dict[str, Any]) -> list[Example]:
    examples = load_examples(
        _dataset_path(ctx, config["dataset_id"]), "test", limit=config.get("max_examples"), seed=config["seed"]
    )
    if not examples:
        raise FatalRunError("dataset_empty", "the test dataset has no examples")
    overfit = config.get("overfit_check")
    if overfit:
        examples += load_examples(
            _dataset_path(ctx, overfit["dataset_id"]), "train", limit=overfit["size"], seed=overfit["seed"]
        )
    return examples


def _set_totals(row: Evaluation, examples: list[Example]) -> None:
    progress = dict(row.progress)
    progress["examples"] = sum(1 for e in examples if e.split == "test")
    progress["train_examples"] = sum(1 for e in examples if e.split == "train")
    candidates = dict(progress.get("candidates") or {})
    for c in row.config["candidates"]:
        candidates.setdefault(c["name"], {"total": len(examples), "done": 0, "failed": 0, "phase": "pending"})
        candidates[c["name"]]["total"] = len(examples)
    progress["candidates"] = candidates
    row.progress = progress


def _update_progress(ctx: _Ctx, name: str, *, phase: str | None = None, extra: dict[str, Any] | None = None) -> None:
    with ctx.session() as s:
        counts = s.exec(
            select(EvaluationSample.ok, sa.func.count())
            .where(EvaluationSample.evaluation_id == ctx.evaluation_id, EvaluationSample.candidate == name)
            .group_by(EvaluationSample.ok)
        ).all()
    fields: dict[str, Any] = {"done": sum(n for _, n in counts), "failed": sum(n for ok, n in counts if not ok)}
    if phase is not None:
        fields["phase"] = phase
    ctx.update_candidate(name, **fields, **(extra or {}))


# Generation -------------------------------------------------------------------------------------------------------


def _done_keys(ctx: _Ctx, name: str) -> set[str]:
    with ctx.session() as s:
        return set(
            s.exec(
                select(EvaluationSample.example_key).where(
                    EvaluationSample.evaluation_id == ctx.evaluation_id, EvaluationSample.candidate == name
                )
            )
        )


def _sampling(config: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in (config.get("sampling") or {}).items() if v is not None}
    params.update(candidate.get("params") or {})
    return params


def _generate(ctx: _Ctx, evaluation: Evaluation, candidate: dict[str, Any], examples: list[Example]) -> Any:
    """Answers for every example of one candidate not stored yet. Returns when to come back (batch mode), else None."""
    name = candidate["name"]
    if ctx.cancelled:
        from service.evaluations import batch_mode

        if name not in batch_mode.batches_out(evaluation):
            return None  # cancelled: only batches still out at the provider have something left to do
    done = _done_keys(ctx, name)
    todo = [e for e in examples if e.key not in done]
    if not todo:
        _update_progress(ctx, name, phase="done")
        return None
    with ctx.session() as s:
        try:
            target = targets.resolve(s, ctx.settings, evaluation.project_id, candidate)
        except ServiceError as exc:
            raise FatalRunError(exc.code, f"candidate {name!r}: {exc}", name) from exc
    turns: list[dict[str, Any]] = []
    if candidate.get("few_shot"):
        fs = candidate["few_shot"]
        turns = few_shot_turns(_dataset_path(ctx, fs["dataset_id"]), fs["k"], fs.get("seed", 0))
    where = {"model": target.model, "provider": "local" if isinstance(target, targets.LocalTarget) else target.provider}
    _update_progress(ctx, name, extra=where)
    work = CandidateWork(
        name,
        target,
        todo,
        turns,
        _sampling(evaluation.config, candidate),
        _SampleWriter(ctx, name, {e.key: e for e in todo}),
    )
    if (
        isinstance(target, targets.RemoteTarget)
        and evaluation.config.get("mode") == "batch"
        and target.provider == "openai"
    ):
        from service.evaluations import batch_mode

        return batch_mode.step(ctx, evaluation, work)
    _update_progress(ctx, name, phase="generating")
    if isinstance(target, targets.LocalTarget):
        _generate_local(ctx, work)
    else:
        _generate_remote(ctx, evaluation, work)
    work.writer.flush()
    _update_progress(ctx, name, phase="cancelled" if ctx.cancelled else "done")
    return None


@dataclass(frozen=True)
class CandidateWork:
    """What one candidate still has to answer, and how."""

    name: str
    target: targets.Target
    todo: list[Example]
    few_shot: list[dict[str, Any]]
    params: dict[str, Any]
    writer: _SampleWriter

    def messages(self, example: Example) -> list[dict[str, Any]]:
        return with_few_shot(example.prompt, self.few_shot)

    def requests(self) -> list[GenRequest]:
        return [
            GenRequest(key=e.key, model=self.target.model, messages=self.messages(e), params=self.params)
            for e in self.todo
        ]


class _SampleWriter:
    """Buffers results and inserts them in small transactions; a key stored meanwhile by another worker is skipped."""

    def __init__(self, ctx: _Ctx, candidate: str, examples: dict[str, Example]) -> None:
        self.ctx, self.candidate, self.examples = ctx, candidate, examples
        self.buffer: list[EvaluationSample] = []
        self.lock = threading.Lock()

    def add(self, result: GenResult) -> None:
        example = self.examples[result.key]
        row = EvaluationSample(
            evaluation_id=self.ctx.evaluation_id,
            candidate=self.candidate,
            example_key=example.key,
            split=example.split,
            example_index=example.index,
            input=example.prompt,
            reference=example.reference,
            output=result.output,
            finish_reason=result.finish_reason,
            ok=result.ok,
            error=result.error,
            error_kind=result.error_kind,
            latency_s=result.latency_s,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            attempts=result.attempts,
        )
        with self.lock:
            self.buffer.append(row)
            full = len(self.buffer) >= FLUSH_EVERY
        if full:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            rows, self.buffer = self.buffer, []
        if not rows:
            return
        with self.ctx.session() as s:
            s.add_all(rows)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                for row in rows:
                    s.add(row)
                    try:
                        s.commit()
                    except IntegrityError:
                        s.rollback()
        _update_progress(self.ctx, self.candidate)


def _generate_remote(ctx: _Ctx, evaluation: Evaluation, work: CandidateWork) -> None:
    limits_cfg = evaluation.config.get("limits") or {}
    limits = RateLimits(
        max_concurrency=limits_cfg.get("max_concurrency", 16),
        requests_per_minute=limits_cfg.get("requests_per_minute"),
        tokens_per_minute=limits_cfg.get("tokens_per_minute"),
    )
    assert isinstance(work.target, targets.RemoteTarget)
    stats = generate_all_sync(
        work.requests(),
        on_result=work.writer.add,
        client_config=work.target.client,
        limits=limits,
        should_stop=ctx.heartbeat,
    )
    work.writer.flush()
    if stats.aborted:
        # A refused address gets the code the API gives a refused URL; other fatal errors keep the generic one.
        code = "url_not_allowed" if stats.abort_kind == "refused" else "generation_aborted"
        raise FatalRunError(code, f"candidate {work.name!r}: {stats.abort_reason}", work.name)


def _generate_local(ctx: _Ctx, work: CandidateWork) -> None:
    from service.evaluations.local_inference import generator_for
    from service.providers.local.errors import LocalTrainingError

    target = work.target
    assert isinstance(target, targets.LocalTarget)
    with _LOCAL_DEVICE:
        try:
            generator = generator_for(ctx.settings, target.base_model, target.adapter_path)
        except LocalTrainingError as exc:
            raise FatalRunError("local_model_unusable", f"{target.model}: {exc}", work.name) from exc
        _generate_with(ctx, work, generator)


def _generate_with(ctx: _Ctx, work: CandidateWork, generator: Any) -> None:
    target, todo, params, writer = work.target, work.todo, work.params, work.writer
    step = max(1, generator.batch_size)
    for start in range(0, len(todo), step):
        if ctx.heartbeat():
            return
        chunk = todo[start : start + step]
        began = time.monotonic()
        outputs = generator.generate(
            [work.messages(e) for e in chunk],
            max_new_tokens=int(params.get("max_tokens", 256)),
            temperature=float(params.get("temperature", 0.0)),
            seed=params.get("seed"),
        )
        elapsed = time.monotonic() - began
        for example, out in zip(chunk, outputs, strict=True):
            writer.add(
                GenResult(
                    key=example.key,
                    ok=True,
                    output=out.text,
                    finish_reason=out.finish_reason,
                    model=target.model,
                    input_tokens=out.input_tokens,
                    output_tokens=out.output_tokens,
                    # From submitting this prompt to the runtime to its last token (it shares batches with others).
                    latency_s=out.latency_s,
                    total_s=elapsed,
                    attempts=1,
                )
            )
        writer.flush()


# Finishing --------------------------------------------------------------------------------------------------------


def _finish(ctx: _Ctx, status: S, reason: str, *, error: dict[str, Any] | None = None) -> None:
    """Grade what is stored (partial results too, when cancelled), write the results and the terminal state."""
    results = None
    if status != S.failed:
        from service.evaluations.summary import summarize_evaluation

        results = summarize_evaluation(ctx.evaluation_id, ctx.settings)
        if status == S.succeeded:
            from service.evaluations.summary import no_answers_error

            error = no_answers_error(results)
            if error is not None:
                status, reason = S.failed, error["message"]
    elif error is not None:
        try:
            from service.evaluations.summary import summarize_evaluation

            results = summarize_evaluation(ctx.evaluation_id, ctx.settings)
        except Exception:  # partial results are a courtesy on failure; the error is what matters
            log.exception("evaluation %s: partial summary failed", ctx.evaluation_id)

    def mutate(s: Session, row: Evaluation) -> None:
        if results is not None:
            row.summary = results
        if error is not None:
            row.error = error
        service.transition(s, row, status, reason)

    ctx.save(mutate)
