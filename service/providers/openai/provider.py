"""OpenAI fine-tuning (and any server speaking the same protocol, via ``base_url``)."""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import logging
import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import openai
from pydantic import BaseModel, ConfigDict, Field

from api_schemas.jobs import JobStatus
from service.clock import from_unix
from service.providers.base import (
    Capabilities,
    JobSpec,
    ProviderCheckpoint,
    ProviderError,
    ProviderEvent,
    ProviderJob,
    ProviderModel,
    ResultFile,
)

log = logging.getLogger(__name__)

TAG_KEY = "finetune_job_id"
# OpenAI's single-request file limit; larger files go through the multipart Uploads API.
SINGLE_UPLOAD_LIMIT = 512 * 1024**2
MAX_EVENTS_PER_SYNC = 10_000

STATUS_MAP: dict[str, JobStatus] = {
    "validating_files": JobStatus.validating_files,
    "queued": JobStatus.queued,
    "running": JobStatus.running,
    "paused": JobStatus.paused,
    "succeeded": JobStatus.succeeded,
    "failed": JobStatus.failed,
    "cancelled": JobStatus.cancelled,
}


class OpenAIHyperparameters(BaseModel):
    """OpenAI's hyperparameters; "auto" lets OpenAI choose from the dataset size."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Literal["auto"] | int = Field(default="auto", description="'auto' or 1-50")
    batch_size: Literal["auto"] | int = Field(default="auto", description="'auto' or 1-256")
    learning_rate_multiplier: Literal["auto"] | float = Field(default="auto", description="'auto' or > 0")
    beta: Literal["auto"] | float | None = Field(default=None, description="DPO only: 'auto' or (0, 2]")

    def model_post_init(self, _ctx: Any) -> None:
        checks = [
            ("n_epochs", self.n_epochs, lambda v: 1 <= v <= 50, "1-50"),
            ("batch_size", self.batch_size, lambda v: 1 <= v <= 256, "1-256"),
            ("learning_rate_multiplier", self.learning_rate_multiplier, lambda v: v > 0, "> 0"),
            ("beta", self.beta, lambda v: 0 < v <= 2, "in (0, 2]"),
        ]
        for name, value, ok, rule in checks:
            if value is not None and value != "auto" and not ok(value):
                raise ValueError(f"{name} must be 'auto' or {rule}, got {value!r}")


def _error_from(exc: Exception) -> ProviderError:
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return ProviderError(f"cannot reach the provider: {exc}", transient=True, code="provider_unreachable")
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        err = body.get("error", body) if isinstance(body, dict) else {}
        message = (err.get("message") if isinstance(err, dict) else None) or str(exc)
        retry_after = None
        headers = exc.response.headers if exc.response is not None else {}
        if headers.get("retry-after-ms"):
            retry_after = float(headers["retry-after-ms"]) / 1000
        elif headers.get("retry-after"):
            try:
                retry_after = float(headers["retry-after"])
            except ValueError:
                retry_after = None
        transient = exc.status_code in (408, 409, 429) or exc.status_code >= 500
        return ProviderError(
            message,
            transient=transient,
            status_code=exc.status_code,
            code=(err.get("code") if isinstance(err, dict) else None) or f"http_{exc.status_code}",
            param=err.get("param") if isinstance(err, dict) else None,
            retry_after=retry_after,
        )
    return ProviderError(f"{type(exc).__name__}: {exc}", transient=True, code="provider_error")


class OpenAIProvider:
    name: ClassVar[str] = "openai"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=["supervised", "dpo"], pause_resume=True, checkpoints=True, events=True, webhooks=True
    )
    params_model: ClassVar[type[BaseModel]] = OpenAIHyperparameters

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout: float = 60.0) -> None:
        # Reads may retry inside the SDK; creating calls never do (see ``_create_client``): the SDK sends no
        # idempotency key, so its retry of a create whose answer was lost would make a second job.
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=2)
        self._create_client = self._client.with_options(max_retries=0)
        self._account = hashlib.sha256(f"{base_url or 'openai'}\0{api_key}".encode()).hexdigest()[:32]

    @property
    def account(self) -> str:
        return self._account

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except openai.OpenAIError as exc:
            raise _error_from(exc) from exc

    # Files -------------------------------------------------------------------------------------------------------

    @staticmethod
    def _filename(sha256: str) -> str:
        return f"{sha256}.jsonl"

    def find_file(self, *, sha256: str, purpose: str) -> str | None:
        wanted = self._filename(sha256)
        page = self._call(self._client.files.list, purpose=purpose)
        for f in self._call(lambda: list(page)):
            if f.filename == wanted and getattr(f, "status", "processed") not in ("error", "deleted"):
                return f.id
        return None

    def upload_file(self, path: Path, *, sha256: str, purpose: str) -> str:
        size = path.stat().st_size
        if size > SINGLE_UPLOAD_LIMIT:
            upload = self._call(
                self._create_client.uploads.upload_file_chunked,
                file=path,
                filename=self._filename(sha256),
                bytes=size,
                mime_type="application/jsonl",
                purpose=purpose,
            )
            return upload.file.id
        with path.open("rb") as fh:
            created = self._call(self._create_client.files.create, file=(self._filename(sha256), fh), purpose=purpose)
        return created.id

    # Jobs --------------------------------------------------------------------------------------------------------

    @staticmethod
    def _parse_job(job: Any) -> ProviderJob:
        raw = job.model_dump(mode="json") if hasattr(job, "model_dump") else dict(job)
        raw_status = str(raw.get("status") or "unknown")
        status = STATUS_MAP.get(raw_status)
        if status is None:
            log.warning("unknown OpenAI job status %r on %s; keeping ours", raw_status, raw.get("id"))
        error = raw.get("error") or None
        if error and not error.get("message"):
            error = None  # OpenAI sends {} or nulls while the job is fine
        method = raw.get("method") or {}
        hp = (method.get(method.get("type") or "", {}) or {}).get("hyperparameters") or raw.get("hyperparameters") or {}
        return ProviderJob(
            id=raw["id"],
            raw_status=raw_status,
            status=status,
            fine_tuned_model=raw.get("fine_tuned_model"),
            trained_tokens=raw.get("trained_tokens"),
            error=error,
            estimated_finish=from_unix(raw.get("estimated_finish")),
            finished_at=from_unix(raw.get("finished_at")),
            hyperparameters=hp,
            result_files=list(raw.get("result_files") or []),
            metadata=raw.get("metadata") or {},
            raw=raw,
        )

    def find_job(self, our_job_id: str) -> ProviderJob | None:
        page = self._call(self._client.fine_tuning.jobs.list, metadata={TAG_KEY: our_job_id}, limit=20)
        for job in page.data:
            # Check the tag ourselves too: a compatible server may ignore the filter.
            if (job.metadata or {}).get(TAG_KEY) == our_job_id:
                return self._parse_job(job)
        return None

    def create_job(self, spec: JobSpec) -> ProviderJob:
        hp = {k: v for k, v in spec.hyperparameters.items() if v is not None}
        kwargs: dict[str, Any] = {
            "model": spec.model,
            "training_file": spec.training_file,
            "metadata": {**spec.metadata, TAG_KEY: spec.our_job_id},
            "method": {"type": spec.method, spec.method: {"hyperparameters": hp}},
        }
        if spec.validation_file:
            kwargs["validation_file"] = spec.validation_file
        if spec.suffix:
            kwargs["suffix"] = spec.suffix
        if spec.seed is not None:
            kwargs["seed"] = spec.seed
        return self._parse_job(self._call(self._create_client.fine_tuning.jobs.create, **kwargs))

    def get_job(self, provider_job_id: str) -> ProviderJob:
        return self._parse_job(self._call(self._client.fine_tuning.jobs.retrieve, provider_job_id))

    def list_events(self, provider_job_id: str, *, after: str | None) -> list[ProviderEvent]:
        """Events newer than ``after`` (an event id), oldest first. OpenAI lists newest first, so we walk back."""
        collected: list[ProviderEvent] = []
        cursor: str | None = None
        while len(collected) < MAX_EVENTS_PER_SYNC:
            kwargs: dict[str, Any] = {"limit": 100}
            if cursor:
                kwargs["after"] = cursor
            page = self._call(self._client.fine_tuning.jobs.list_events, provider_job_id, **kwargs)
            if not page.data:
                break
            for ev in page.data:
                if after is not None and ev.id == after:
                    return list(reversed(collected))
                raw = ev.model_dump(mode="json")
                collected.append(
                    ProviderEvent(
                        id=ev.id,
                        created_at=from_unix(raw.get("created_at")) or datetime.now(UTC),
                        level=raw.get("level") or "info",
                        type=raw.get("type") or "message",
                        message=raw.get("message") or "",
                        data=raw.get("data") or {},
                    )
                )
            if not getattr(page, "has_more", False):
                break
            cursor = page.data[-1].id
        return list(reversed(collected))

    def list_checkpoints(self, provider_job_id: str) -> list[ProviderCheckpoint]:
        page = self._call(self._client.fine_tuning.jobs.checkpoints.list, provider_job_id, limit=100)
        out = []
        for cp in self._call(lambda: list(page)):
            raw = cp.model_dump(mode="json")
            out.append(
                ProviderCheckpoint(
                    id=raw["id"],
                    step=int(raw.get("step_number") or 0),
                    model=raw.get("fine_tuned_model_checkpoint"),
                    metrics=raw.get("metrics") or {},
                    created_at=from_unix(raw.get("created_at")),
                )
            )
        return sorted(out, key=lambda c: c.step)

    def cancel(self, provider_job_id: str) -> ProviderJob:
        return self._parse_job(self._call(self._client.fine_tuning.jobs.cancel, provider_job_id))

    def pause(self, provider_job_id: str) -> ProviderJob:
        return self._parse_job(self._call(self._client.fine_tuning.jobs.pause, provider_job_id))

    def resume(self, provider_job_id: str) -> ProviderJob:
        return self._parse_job(self._call(self._client.fine_tuning.jobs.resume, provider_job_id))

    def list_models(self) -> list[ProviderModel]:
        page = self._call(self._client.models.list)
        out = []
        for m in self._call(lambda: list(page)):
            raw = m.model_dump(mode="json")
            shutdown = raw.get("shutdown_date")
            try:
                shutdown_date = date.fromisoformat(shutdown) if shutdown else None
            except (TypeError, ValueError):
                shutdown_date = None
            out.append(ProviderModel(id=raw["id"], owned_by=raw.get("owned_by"), shutdown_date=shutdown_date))
        return out

    def download_file(self, file_id: str) -> bytes:
        return self._call(lambda: self._client.files.content(file_id).read())

    def result_metrics(self, job: ProviderJob) -> list[ResultFile]:
        """The job's result files (per-step metrics CSVs), downloaded and parsed; files that are not CSV are skipped."""
        out = []
        for file_id in job.result_files:
            parsed = parse_result_csv(self.download_file(file_id))
            if parsed is None:
                log.warning("result file %s of %s is not a metrics CSV; skipped", file_id, job.id)
                continue
            columns, rows = parsed
            out.append(ResultFile(file_id=file_id, columns=columns, rows=rows))
        return out


# Result files ---------------------------------------------------------------------------------------------------------

# OpenAI's result CSV names token accuracy differently from its metrics events; we keep the events' names.
RESULT_COLUMN_ALIASES = {
    "train_accuracy": "train_mean_token_accuracy",
    "valid_accuracy": "valid_mean_token_accuracy",
    "validation_loss": "valid_loss",
}


def _decode_result(content: bytes) -> str | None:
    """OpenAI serves result files base64-encoded; compatible servers may send the CSV itself."""
    text = content.decode("utf-8-sig", errors="replace").strip()
    if "," in text.split("\n", 1)[0]:
        return text
    try:
        return base64.b64decode("".join(text.split()), validate=True).decode("utf-8-sig").strip()
    except (binascii.Error, ValueError):
        return None


def _number(value: str) -> int | float | None:
    value = value.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_result_csv(content: bytes) -> tuple[list[str], list[list[int | float | None]]] | None:
    """``(columns, rows)`` of a per-step metrics CSV, column names normalised, or None when it is not one.

    Lenient on purpose, since the columns have changed over the years: any column order, unknown numeric columns kept,
    empty or non-numeric cells become None, rows without an integer step are dropped. Only a ``step`` column is needed.
    """
    text = _decode_result(content)
    if not text:
        return None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        return None
    columns = [RESULT_COLUMN_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    if "step" not in columns:
        return None
    step_at = columns.index("step")
    rows: list[list[int | float | None]] = []
    for raw in reader:
        if len(raw) <= step_at:
            continue
        values = [_number(v) for v in raw[: len(columns)]]
        values += [None] * (len(columns) - len(values))
        step = values[step_at]
        if not isinstance(step, int) or step < 0:
            continue
        rows.append(values)
    return columns, rows
