"""Together fine-tuning behind the ``TrainingProvider`` interface.

Crash safety without metadata: Together's jobs carry no metadata we could tag, so the tag goes where Together keeps
what we send: the job's ``suffix``, which it returns in every job listing (``suffix``) and writes into the output
model's name (``<account>/<base>-<suffix>-<hash>``). The suffix is ``<the user's suffix>-<our job id>``; before any
create, ``find_job`` lists the account's jobs and adopts the one with our tag, so a worker killed between "Together made
the job" and "we recorded it" never makes a second one. Files are named by their content hash (``<sha256>.jsonl``) and
looked up by that name in ``GET /files`` before any upload, as the OpenAI provider does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, SecretStr, ValidationError

from api_schemas.jobs import JobStatus
from service.providers.base import (
    Capabilities,
    JobSpec,
    ProviderCheckpoint,
    ProviderError,
    ProviderEvent,
    ProviderJob,
    ProviderModel,
)
from service.providers.together.client import TogetherClient
from service.providers.together.params import TogetherHyperparameters

log = logging.getLogger(__name__)

# Together's statuses, ours for each. ``cancel_requested`` has none: the job keeps its status until Together says
# ``cancelled``; ``compressing`` and ``uploading`` are the model being packed after training, still running for us.
STATUS_MAP: dict[str, JobStatus | None] = {
    "pending": JobStatus.validating_files,
    "queued": JobStatus.queued,
    "running": JobStatus.running,
    "compressing": JobStatus.running,
    "uploading": JobStatus.running,
    "cancel_requested": None,
    "cancelled": JobStatus.cancelled,
    "error": JobStatus.failed,
    "completed": JobStatus.succeeded,
}
# Together's documented limit on a suffix; our tag (the job id's 26 characters) always fits whole.
SUFFIX_MAX = 40
_SUFFIX_UNSAFE = re.compile(r"[^a-z0-9-]+")
HYPERPARAMETER_FIELDS = (
    "n_epochs",
    "n_checkpoints",
    "n_evals",
    "batch_size",
    "learning_rate",
    "warmup_ratio",
    "max_grad_norm",
    "weight_decay",
    "lr_scheduler",
    "training_type",
    "training_method",
)


def job_tag(our_job_id: str) -> str:
    """Our job id as it can stand in a Together suffix (lower-case letters, digits, dashes)."""
    return _SUFFIX_UNSAFE.sub("", our_job_id.split("_", 1)[-1].lower())


def tagged_suffix(our_job_id: str, user_suffix: str | None) -> str:
    tag = job_tag(our_job_id)
    user = _SUFFIX_UNSAFE.sub("-", (user_suffix or "").lower()).strip("-")
    room = SUFFIX_MAX - len(tag) - 1
    return f"{user[:room].strip('-')}-{tag}" if user and room > 0 else tag


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class TogetherProvider:
    name: ClassVar[str] = "together"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=["supervised", "dpo"],
        training_types=["lora", "full"],
        pause_resume=False,
        checkpoints=True,
        events=True,
        webhooks=False,
    )
    params_model: ClassVar[type[BaseModel]] = TogetherHyperparameters

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout: float = 60.0) -> None:
        self._client = TogetherClient(api_key=SecretStr(api_key), base_url=base_url, timeout_s=timeout)
        self._account = hashlib.sha256(f"{self._client.base_url}\0{api_key}".encode()).hexdigest()[:32]

    @property
    def account(self) -> str:
        return self._account

    # Files -------------------------------------------------------------------------------------------------------

    @staticmethod
    def _filename(sha256: str) -> str:
        return f"{sha256}.jsonl"

    def find_file(self, *, sha256: str, purpose: str) -> str | None:
        wanted = self._filename(sha256)
        for f in self._client.json("GET", "/files", what="list files").get("data") or []:
            if isinstance(f, dict) and f.get("filename") == wanted and f.get("purpose") == purpose:
                return str(f["id"])
        return None

    def upload_file(self, path: Path, *, sha256: str, purpose: str) -> str:
        created = self._client.upload(path, file_name=self._filename(sha256), purpose=purpose)
        if not created.get("id"):
            raise ProviderError(
                "upload: Together's answer has no file id", transient=True, code="provider_bad_response"
            )
        return str(created["id"])

    # Jobs --------------------------------------------------------------------------------------------------------

    @staticmethod
    def _parse_job(raw: dict[str, Any]) -> ProviderJob:
        # Events come inline on GET /fine-tunes/{id}; they are synced on their own, not stored with the job.
        raw = {k: v for k, v in raw.items() if k != "events"}
        raw_status = str(raw.get("status") or "unknown")
        if raw_status not in STATUS_MAP:
            log.warning("unknown Together job status %r on %s; keeping ours", raw_status, raw.get("id"))
        status = STATUS_MAP.get(raw_status)
        terminal = status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
        return ProviderJob(
            id=str(raw["id"]),
            raw_status=raw_status,
            status=status,
            fine_tuned_model=raw.get("model_output_name") if status == JobStatus.succeeded else None,
            trained_tokens=raw.get("token_count") if status == JobStatus.succeeded else None,
            finished_at=_time(raw.get("updated_at")) if terminal else None,
            hyperparameters={k: raw[k] for k in HYPERPARAMETER_FIELDS if raw.get(k) is not None},
            raw=raw,
        )

    def _with_error(self, pj: ProviderJob, events: list[Any]) -> ProviderJob:
        """Together reports why a job failed in its events (``job_error``), not on the job."""
        if pj.status != JobStatus.failed:
            return pj
        messages = [e.get("message") for e in events if isinstance(e, dict) and e.get("type") == "job_error"]
        message = next((m for m in reversed(messages) if m), None) or "the job failed at Together (status error)"
        return pj.model_copy(update={"error": {"code": "together_job_error", "message": message, "param": None}})

    def find_job(self, our_job_id: str) -> ProviderJob | None:
        tag = job_tag(our_job_id)
        for raw in self._client.json("GET", "/fine-tunes", what="list fine-tunes").get("data") or []:
            if not isinstance(raw, dict) or not raw.get("id"):
                continue
            suffix = str(raw.get("suffix") or "")
            # The suffix when Together echoes it; the output model's name otherwise (it holds the suffix).
            if suffix == tag or suffix.endswith(f"-{tag}") or f"-{tag}-" in str(raw.get("model_output_name") or ""):
                return self.get_job(str(raw["id"]))
        return None

    def job_body(self, spec: JobSpec) -> dict[str, Any]:
        """The ``POST /fine-tunes`` body of ``spec`` (hyperparameters checked again: a stored job may predate a rule)."""
        try:
            params = TogetherHyperparameters.model_validate(spec.hyperparameters, context={"method": spec.method})
        except ValidationError as exc:
            raise ProviderError(
                f"invalid hyperparameters for Together: {exc}", transient=False, code="invalid_hyperparameters"
            ) from exc
        body: dict[str, Any] = {
            "training_file": spec.training_file,
            "model": spec.model,
            "suffix": tagged_suffix(spec.our_job_id, spec.suffix),
            **params.request_fields(spec.method),
        }
        if spec.validation_file:
            body["validation_file"] = spec.validation_file
            # Together only reads a validation file it is asked to evaluate on; OpenAI evaluates it by itself.
            body.setdefault("n_evals", 1)
        if spec.seed is not None:
            body.setdefault("random_seed", spec.seed)
        return body

    def create_job(self, spec: JobSpec) -> ProviderJob:
        self._check_estimate(spec)
        created = self._client.json("POST", "/fine-tunes", what="create fine-tune", json=self.job_body(spec))
        return self._parse_job(created)

    def _check_estimate(self, spec: JobSpec) -> None:
        """Ask Together what the job will cost before creating it, and stop when Together says the account may not
        proceed (over its credit limit): the job fails with the figures instead of being refused mid-way. The
        estimate is advice: when it cannot be had, the job is created anyway."""
        try:
            estimate = self.estimate_price(spec)
        except ProviderError as exc:
            log.warning("no Together price estimate for %s: %s", spec.our_job_id, exc.message)
            return
        log.info("Together estimates %s at $%s", spec.our_job_id, estimate.get("estimated_total_price"))
        if estimate.get("allowed_to_proceed") is False:
            raise ProviderError(
                f"Together would not run this job: estimated ${estimate.get('estimated_total_price')} against a "
                f"credit limit of ${estimate.get('user_limit')}",
                transient=False,
                code="insufficient_quota",
            )

    def get_job(self, provider_job_id: str) -> ProviderJob:
        raw = self._client.json("GET", f"/fine-tunes/{provider_job_id}", what=f"fine-tune {provider_job_id}")
        return self._with_error(self._parse_job(raw), raw.get("events") or [])

    def list_events(self, provider_job_id: str, *, after: str | None) -> list[ProviderEvent]:
        """Events newer than ``after``, oldest first. Together's events have no id: each gets a digest of what it
        says, stable across listings, so the same event is stored once."""
        raw = self._client.json("GET", f"/fine-tunes/{provider_job_id}/events", what=f"events of {provider_job_id}")
        events: list[ProviderEvent] = []
        for ev in raw.get("data") or []:
            if not isinstance(ev, dict):
                continue
            fields = {k: ev.get(k) for k in ("created_at", "type", "message", "step", "checkpoint_path")}
            digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]
            level = ev.get("level") if ev.get("level") in ("info", "warning", "error") else "info"
            data = {k: ev[k] for k in ("step", "total_steps", "token_count", "checkpoint_path") if ev.get(k)}
            events.append(
                ProviderEvent(
                    id=f"tev_{digest}",
                    created_at=_time(ev.get("created_at")) or datetime.now(UTC),
                    level=level,
                    type=str(ev.get("type") or "message"),
                    message=str(ev.get("message") or ""),
                    data=data,
                )
            )
        events.sort(key=lambda e: e.created_at)
        ids = [e.id for e in events]
        return events[ids.index(after) + 1 :] if after in ids else events

    def list_checkpoints(self, provider_job_id: str) -> list[ProviderCheckpoint]:
        raw = self._client.json(
            "GET", f"/fine-tunes/{provider_job_id}/checkpoints", what=f"checkpoints of {provider_job_id}"
        )
        by_step: dict[int, ProviderCheckpoint] = {}
        for cp in raw.get("data") or []:
            if not isinstance(cp, dict) or not isinstance(cp.get("step"), int):
                continue
            # Together lists a final step twice (adapter and merged): one checkpoint per step for us.
            by_step.setdefault(
                cp["step"],
                ProviderCheckpoint(
                    id=f"{provider_job_id}:{cp['step']}",
                    step=cp["step"],
                    # Together does not serve intermediate checkpoints; ``from_checkpoint`` trains on from them.
                    model=None,
                    metrics={"checkpoint_type": cp.get("checkpoint_type"), "path": cp.get("path")},
                    created_at=_time(cp.get("created_at")),
                ),
            )
        return [by_step[s] for s in sorted(by_step)]

    def cancel(self, provider_job_id: str) -> ProviderJob:
        try:
            return self._parse_job(
                self._client.json("POST", f"/fine-tunes/{provider_job_id}/cancel", what=f"cancel {provider_job_id}")
            )
        except ProviderError as exc:
            # Together refuses to cancel a job that has just finished: the job's own state is then the answer (a
            # model that was made is kept), not a failure of the job.
            if exc.transient or exc.status_code != 400:
                raise
            current = self.get_job(provider_job_id)
            if current.status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
                return current
            raise

    def pause(self, provider_job_id: str) -> ProviderJob:
        raise ProviderError("Together jobs cannot be paused", transient=False, code="unsupported_action")

    def resume(self, provider_job_id: str) -> ProviderJob:
        raise ProviderError("Together jobs cannot be resumed", transient=False, code="unsupported_action")

    def list_models(self) -> list[ProviderModel]:
        raw = self._client.json("GET", "/fine-tunes/models/supported", what="supported models")
        return [
            ProviderModel(id=name, owned_by="together", fine_tunable=True)
            for name in raw.get("models") or []
            if isinstance(name, str)
        ]

    # Beyond the interface ----------------------------------------------------------------------------------------

    def estimate_price(self, spec: JobSpec) -> dict[str, Any]:
        """Together's own estimate for this job (``POST /fine-tunes/estimate-price``): ``estimated_total_price`` in
        USD, ``allowed_to_proceed``, ``user_limit`` and the token counts, as Together answers them."""
        body = self.job_body(spec)
        keys = ("training_file", "validation_file", "model", "n_epochs", "n_evals", "training_method", "training_type")
        wanted = {k: body[k] for k in keys if k in body}
        if "from_checkpoint" in body:
            wanted["from_checkpoint"] = body["from_checkpoint"]
        return self._client.json("POST", "/fine-tunes/estimate-price", what="estimate price", json=wanted)

    def download(
        self, provider_job_id: str, dest: Path, *, checkpoint: str = "adapter", step: int | None = None
    ) -> int:
        """Write the fine-tuned model's files as Together packs them into ``dest``: the LoRA ``adapter`` (default),
        the ``merged`` model, or the checkpoint at ``step``. Returns the size in bytes."""
        params: dict[str, Any] = {"ft_id": provider_job_id}
        if step is not None:
            params["checkpoint_step"] = step
        else:
            params["checkpoint"] = checkpoint
        return self._client.download("/finetune/download", params=params, dest=dest, what=f"download {provider_job_id}")
