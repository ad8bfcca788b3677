"""OpenAI fine-tuning (and any server speaking the same protocol, via ``base_url``)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from api_schemas.jobs import RESERVED_METADATA_KEY, JobStatus
from service.clock import from_unix
from service.providers.base import (
    Capabilities,
    JobSpec,
    ProviderCheckpoint,
    ProviderEvent,
    ProviderJob,
    ProviderModel,
    ResultFile,
)
from service.providers.openai.client import API_RESPONSE_BYTES, ClientConfig, no_retries, sync_client
from service.providers.openai.errors import classify, is_call_failure
from service.providers.openai.paging import Listing
from service.providers.openai.results import parse_result_csv

log = logging.getLogger(__name__)

# Every job carries our id in its metadata (one of the 16 pairs OpenAI allows; users get the other 15).
TAG_KEY = RESERVED_METADATA_KEY
# OpenAI's single-request file limit; larger files go through the multipart Uploads API.
SINGLE_UPLOAD_LIMIT = 512 * 1024**2
# Bounds on every listing we walk (see ``paging``): pages of 100, so at most 10,000 events per sync.
EVENT_PAGES = 100
CHECKPOINT_PAGES = 20
JOB_LOOKUP_PAGES = 50
FILE_LOOKUP_PAGES = 20
PAGE_SIZE = 100

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


class OpenAIProvider:
    name: ClassVar[str] = "openai"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=["supervised", "dpo"], pause_resume=True, checkpoints=True, events=True, webhooks=True
    )
    params_model: ClassVar[type[BaseModel]] = OpenAIHyperparameters
    # Provider status -> ours; servers speaking the protocol with their own statuses extend it (Azure).
    status_map: ClassVar[dict[str, JobStatus]] = STATUS_MAP

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        auth: Literal["bearer", "api-key"] = "bearer",
    ) -> None:
        config = ClientConfig(api_key=SecretStr(api_key), base_url=base_url, timeout_s=timeout, auth=auth)
        # Reads may retry inside the SDK; creating calls never do (see ``client.no_retries``).
        self._client = sync_client(config, max_retries=max_retries, max_response_bytes=API_RESPONSE_BYTES)
        self._create_client = no_retries(self._client)
        self._account = hashlib.sha256(f"{base_url or 'openai'}\0{api_key}".encode()).hexdigest()[:32]

    @property
    def account(self) -> str:
        return self._account

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_call_failure(exc):
                raise
            raise classify(exc).as_provider_error() from exc

    def _listing(self, fn: Callable[..., Any], *args: Any, what: str, max_pages: int, **kwargs: Any) -> Listing:
        """A bounded walk over a cursor-paged list; each page is one call of ``fn``."""

        def fetch(after: str | None) -> Any:
            return self._call(fn, *args, **kwargs, **({"after": after} if after else {}))

        return Listing(fetch, what=what, max_pages=max_pages)

    # Files -------------------------------------------------------------------------------------------------------

    @staticmethod
    def _filename(sha256: str) -> str:
        return f"{sha256}.jsonl"

    def find_file(self, *, sha256: str, purpose: str) -> str | None:
        wanted = self._filename(sha256)
        files = self._listing(
            self._client.files.list, purpose=purpose, what=f"{purpose} files", max_pages=FILE_LOOKUP_PAGES
        )
        for f in files:
            if getattr(f, "filename", None) == wanted and getattr(f, "status", "processed") not in ("error", "deleted"):
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

    @classmethod
    def _parse_job(cls, job: Any) -> ProviderJob:
        raw = job.model_dump(mode="json") if hasattr(job, "model_dump") else dict(job)
        raw_status = str(raw.get("status") or "unknown")
        status = cls.status_map.get(raw_status)
        if status is None:
            log.warning("unknown %s job status %r on %s; keeping ours", cls.name, raw_status, raw.get("id"))
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
        jobs = self._listing(
            self._client.fine_tuning.jobs.list,
            metadata={TAG_KEY: our_job_id},
            limit=PAGE_SIZE,
            what=f"jobs tagged {our_job_id}",
            max_pages=JOB_LOOKUP_PAGES,
        )
        for job in jobs:
            # Check the tag ourselves too: a compatible server may ignore the filter.
            if (getattr(job, "metadata", None) or {}).get(TAG_KEY) == our_job_id:
                return self._parse_job(job)
        return None

    def create_job(self, spec: JobSpec) -> ProviderJob:
        return self._parse_job(self._call(self._create_client.fine_tuning.jobs.create, **self._create_kwargs(spec)))

    def _create_kwargs(self, spec: JobSpec) -> dict[str, Any]:
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
        return kwargs

    def get_job(self, provider_job_id: str) -> ProviderJob:
        return self._parse_job(self._call(self._client.fine_tuning.jobs.retrieve, provider_job_id))

    def list_events(self, provider_job_id: str, *, after: str | None) -> list[ProviderEvent]:
        """Events newer than ``after`` (an event id), oldest first. OpenAI lists newest first, so we walk back."""
        events = self._listing(
            self._client.fine_tuning.jobs.list_events,
            provider_job_id,
            limit=PAGE_SIZE,
            what=f"events of {provider_job_id}",
            max_pages=EVENT_PAGES,
        )
        collected: list[ProviderEvent] = []
        for ev in events:
            if after is not None and ev.id == after:
                break
            raw = ev.model_dump(mode="json") if hasattr(ev, "model_dump") else dict(ev)
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
        return list(reversed(collected))

    def list_checkpoints(self, provider_job_id: str) -> list[ProviderCheckpoint]:
        checkpoints = self._listing(
            self._client.fine_tuning.jobs.checkpoints.list,
            provider_job_id,
            limit=PAGE_SIZE,
            what=f"checkpoints of {provider_job_id}",
            max_pages=CHECKPOINT_PAGES,
        )
        out = []
        for cp in checkpoints:
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
        # One request: the models list is not paged.
        page = self._call(self._client.models.list)
        out = []
        for m in page.data or []:
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
