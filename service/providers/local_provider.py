"""The ``local`` provider: LoRA training on this service's own workers, behind the same interface as OpenAI.

A run lives in a folder (``data/local_runs/<job id>``): ``spec.json`` (what to train), ``status.json`` (written by the
trainer, with a heartbeat), ``events.jsonl`` (step metrics, validation loss, checkpoints), ``cancel`` (a flag the
trainer polls), ``revived`` (when a dead trainer's task was last sent again), ``artifacts.json`` (checksums of the
downloads) and ``output/`` (checkpoints, the adapter, the optional merged model). The job runner polls it like a
remote provider; the training itself runs as the ``local.train`` task on the ``train`` queue, one per device. A trainer
that dies leaves a stale heartbeat: the next poll sends the task again and training resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

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
from service.providers.local.artifacts import Artifact, list_artifacts
from service.providers.local.params import LocalTrainParams
from service.providers.naming import checkpoint_name
from service.settings import Settings

# A running trainer rewrites its heartbeat every HEARTBEAT_S; twice STALE_AFTER_S without one means it died.
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
# A queued run whose task message was lost is sent again after this long.
REQUEUE_QUEUED_AFTER_S = 300.0

STATUS = {
    "queued": JobStatus.queued,
    "running": JobStatus.running,
    "succeeded": JobStatus.succeeded,
    "failed": JobStatus.failed,
    "cancelled": JobStatus.cancelled,
}


def runs_dir(settings: Settings) -> Path:
    return settings.data_dir / "local_runs"


def run_dir(settings: Settings, job_id: str) -> Path:
    return runs_dir(settings) / job_id


def output_dir(settings: Settings, job_id: str) -> Path:
    """Where the trainer writes: checkpoints/, adapter/, merged/ (see service.providers.local.trainer)."""
    return run_dir(settings, job_id) / "output"


def run_artifacts(settings: Settings, job_id: str) -> list[Artifact]:
    """What the run produced so far, newest first: adapter, merged model, checkpoints (empty for an unknown run)."""
    run = run_dir(settings, job_id)
    if not run.is_dir():
        return []
    return list_artifacts(output_dir(settings, job_id), checksum_cache=run / "artifacts.json")


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


class LocalProvider:
    name: ClassVar[str] = "local"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=["supervised", "dpo"],
        pause_resume=False,
        checkpoints=True,
        events=True,
        webhooks=False,
        needs_credentials=False,
        runs_locally=True,
    )
    params_model: ClassVar[type[BaseModel]] = LocalTrainParams

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = runs_dir(settings)

    @property
    def account(self) -> str:
        return "local"

    # Files are read straight from the content-addressed store: "uploading" is naming the blob.
    def find_file(self, *, sha256: str, purpose: str) -> str | None:
        return f"sha256:{sha256}"

    def upload_file(self, path: Path, *, sha256: str, purpose: str) -> str:
        return f"sha256:{sha256}"

    def _dir(self, job_id: str) -> Path:
        return self.root / job_id

    def _job(self, job_id: str) -> ProviderJob:
        run = self._dir(job_id)
        spec = read_json(run / "spec.json")
        if spec is None:
            raise ProviderError(f"no local run {job_id}", transient=False, code="run_not_found")
        status = read_json(run / "status.json") or {"status": "queued"}
        raw_status = str(status.get("status", "queued"))
        self._revive_if_dead(job_id, raw_status, status, spec)
        result = status.get("result") or {}
        return ProviderJob(
            id=job_id,
            raw_status=raw_status,
            status=STATUS.get(raw_status),
            fine_tuned_model=_model_name(spec, job_id) if raw_status == "succeeded" else None,
            trained_tokens=result.get("trained_tokens"),
            error=status.get("error"),
            finished_at=datetime.fromtimestamp(status["finished_at"], UTC) if status.get("finished_at") else None,
            hyperparameters=spec.get("hyperparameters") or {},
            metadata=spec.get("metadata") or {},
            raw={"status": status, "spec": spec},
        )

    def _revive_if_dead(self, job_id: str, raw_status: str, status: dict[str, Any], spec: dict[str, Any]) -> None:
        now = time.time()
        revived = self._dir(job_id) / "revived"
        # The last revival counts as a sign of life: while its message waits in the train queue (behind another
        # training, say), polls must not pile more copies on top of it.
        revived_at = revived.stat().st_mtime if revived.exists() else 0.0
        if raw_status == "running" and now - max(float(status.get("heartbeat", 0)), revived_at) > STALE_AFTER_S:
            revived.touch()
            self._enqueue(job_id)
        elif raw_status == "queued" and now - float(status.get("heartbeat", 0)) <= STALE_AFTER_S:
            return  # a trainer holds the run and waits for its device (the heartbeat says it is alive)
        elif raw_status == "queued" and now - float(spec.get("queued_at", now)) > REQUEUE_QUEUED_AFTER_S:
            spec["queued_at"] = now
            write_json(self._dir(job_id) / "spec.json", spec)
            self._enqueue(job_id)

    @staticmethod
    def _enqueue(job_id: str) -> None:
        from service import queue
        from service.work import names

        queue.enqueue(names.TRAIN_LOCAL, job_id, queue=names.DEVICE_QUEUE)

    def find_job(self, our_job_id: str) -> ProviderJob | None:
        if not (self._dir(our_job_id) / "spec.json").exists():
            return None
        return self._job(our_job_id)

    def create_job(self, spec: JobSpec) -> ProviderJob:
        run = self._dir(spec.our_job_id)
        run.mkdir(parents=True, exist_ok=True)
        write_json(
            run / "spec.json",
            {
                "job_id": spec.our_job_id,
                "model": spec.model,
                "method": spec.method,
                "hyperparameters": spec.hyperparameters | ({"seed": spec.seed} if spec.seed is not None else {}),
                "training_file": spec.training_file,
                "validation_file": spec.validation_file,
                "metadata": spec.metadata,
                "model_name": spec.model_name,
                "queued_at": time.time(),
            },
        )
        self._enqueue(spec.our_job_id)
        return self._job(spec.our_job_id)

    def get_job(self, provider_job_id: str) -> ProviderJob:
        return self._job(provider_job_id)

    def list_events(self, provider_job_id: str, *, after: str | None) -> list[ProviderEvent]:
        path = self._dir(provider_job_id) / "events.jsonl"
        if not path.exists():
            return []
        start = int(after) if after else 0
        out = []
        with path.open() as fh:
            for n, line in enumerate(fh, start=1):
                if n <= start or not line.endswith("\n"):
                    continue  # seen already, or still being written
                ev = json.loads(line)
                kind = ev.get("type")
                is_metrics = kind in ("step", "validation")
                data = {k: v for k, v in ev.items() if k not in ("type", "time", "message")}
                if kind == "validation" and "validation_loss" in data:
                    data["valid_loss"] = data["validation_loss"]
                out.append(
                    ProviderEvent(
                        id=str(n),
                        created_at=datetime.fromisoformat(ev["time"]) if ev.get("time") else datetime.now(UTC),
                        level=ev.get("level", "info"),
                        type="metrics" if is_metrics else "message",
                        message=ev.get("message") or _describe(ev),
                        data=data,
                    )
                )
        return out

    def list_checkpoints(self, provider_job_id: str) -> list[ProviderCheckpoint]:
        out = []
        job = self._job(provider_job_id)
        name = _model_name(job.raw.get("spec") or {}, provider_job_id)
        for ev in self.list_events(provider_job_id, after=None):
            if ev.data.get("path") and "step" in ev.data and ev.type == "message":
                out.append(
                    ProviderCheckpoint(
                        id=f"{provider_job_id}:step-{ev.data['step']}",
                        step=int(ev.data["step"]),
                        model=checkpoint_name(name, int(ev.data["step"])) if name.startswith("ft:") else None,
                        metrics={},
                        created_at=ev.created_at,
                    )
                )
        result = (job.raw.get("status") or {}).get("result") or {}
        if job.raw_status == "succeeded" and result.get("steps"):
            out.append(
                ProviderCheckpoint(
                    id=f"{provider_job_id}:final",
                    step=int(result["steps"]),
                    model=name,
                    metrics={
                        "train_loss": result.get("final_train_loss"),
                        "valid_loss": result.get("final_validation_loss"),
                    },
                )
            )
        return out

    def cancel(self, provider_job_id: str) -> ProviderJob:
        (self._dir(provider_job_id) / "cancel").touch()
        job = self._job(provider_job_id)
        if job.raw_status == "queued":
            # Nothing is training yet: the run ends here, and a late task sees the terminal status and stops.
            write_json(self._dir(provider_job_id) / "status.json", {"status": "cancelled", "finished_at": time.time()})
            job = self._job(provider_job_id)
        return job

    def pause(self, provider_job_id: str) -> ProviderJob:
        raise ProviderError("local jobs cannot be paused; cancel keeps a checkpoint", transient=False)

    def resume(self, provider_job_id: str) -> ProviderJob:
        raise ProviderError("local jobs cannot be resumed", transient=False)

    def list_artifacts(self, provider_job_id: str) -> list[Artifact]:
        return run_artifacts(self.settings, provider_job_id)

    def list_models(self) -> list[ProviderModel]:
        from service.providers.local import DEFAULT_BASE_MODEL

        return [ProviderModel(id=DEFAULT_BASE_MODEL, owned_by="local", fine_tunable=True)]


def _describe(ev: dict[str, Any]) -> str:
    kind = ev.get("type")
    if kind == "step":
        return f"Step {ev.get('step')}/{ev.get('total_steps')}: training loss={ev.get('train_loss', 0):.4f}"
    if kind == "validation":
        return f"Step {ev.get('step')}: validation loss={ev.get('validation_loss', 0):.4f}"
    if kind == "checkpoint":
        return f"Checkpoint saved at step {ev.get('step')}"
    return str(kind)


def _model_name(spec: dict[str, Any], job_id: str) -> str:
    # Runs created before the service named its fine-tunes kept the old ``local:`` form.
    return str(spec.get("model_name") or f"local:{job_id}")
