"""The emulator's state: files, fine-tunes moving through Together's statuses over emulated time, their events and
checkpoints. Everything a route answers is built here, in the shapes of Together's published description."""

from __future__ import annotations

import json
import math
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from emulator.clock import EmulatorClock

ACCOUNT = "emulated-account"
# Together's fine-tunable models the emulator knows (a subset of its catalog), with their parameter counts.
MODELS: dict[str, int] = {
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference": 8_030_261_248,
    "meta-llama/Meta-Llama-3.1-70B-Instruct-Reference": 70_553_706_496,
    "meta-llama/Llama-3.2-3B-Instruct": 3_212_749_824,
    "Qwen/Qwen2.5-7B-Instruct": 7_615_616_512,
    "mistralai/Mistral-7B-Instruct-v0.2": 7_241_732_096,
}
# USD per 1M tokens, LoRA SFT, as the list prices say for models up to 16B (the emulator bills every model alike).
PRICE_PER_1M = 0.48


@dataclass(frozen=True)
class JobTiming:
    pending_seconds: float = 10.0
    queued_seconds: float = 10.0
    step_seconds: float = 2.0
    compressing_seconds: float = 5.0
    uploading_seconds: float = 5.0


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": None}}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: float

    def out(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "created_at": int(self.created_at),
            "filename": self.filename,
            "bytes": len(self.content),
            "purpose": self.purpose,
            "FileType": "jsonl",
            "Processed": True,
        }

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for line in self.content.decode("utf-8", "replace").splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    out.append(row)
        return out


@dataclass
class Job:
    id: str
    body: dict[str, Any]
    created_at: float
    total_steps: int
    token_count: int
    output_name: str
    error: str | None = None
    cancelled_at: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    status: str = "pending"
    updated_at: float = 0.0
    milestones_done: set[str] = field(default_factory=set)


class TogetherState:
    def __init__(self, *, clock: EmulatorClock, timing: JobTiming) -> None:
        self.clock = clock
        self.timing = timing
        self.lock = threading.RLock()
        self.files: dict[str, File] = {}
        self.jobs: dict[str, Job] = {}
        # Jobs whose model name contains a key here fail with that message (Together reports it in a job_error event).
        self.failures: dict[str, str] = {}
        # The account's credit limit in USD: estimates above it answer allowed_to_proceed false.
        self.user_limit = 1000.0

    # Files -------------------------------------------------------------------------------------------------------

    def add_file(self, *, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        if purpose not in ("fine-tune", "eval", "batch-api"):
            raise ApiError(400, f"Invalid purpose: {purpose}", param="purpose")
        if not content:
            raise ApiError(400, "File is empty", param="file")
        with self.lock:
            f = File(f"file-{uuid.uuid4()}", filename, purpose, content, self.clock.now())
            self.files[f.id] = f
            return f.out()

    def file(self, file_id: str) -> File:
        f = self.files.get(file_id)
        if f is None:
            raise ApiError(404, f"File {file_id} not found", param="id")
        return f

    # Jobs --------------------------------------------------------------------------------------------------------

    def _check_create(self, body: dict[str, Any]) -> tuple[File, int]:
        model = body.get("model")
        if model not in MODELS:
            raise ApiError(400, f"Model {model} is not supported for fine-tuning", param="model")
        train = self.file(str(body.get("training_file")))
        if body.get("validation_file"):
            self.file(str(body["validation_file"]))
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 40):
            raise ApiError(400, "suffix must be a string of at most 40 characters", param="suffix")
        n_epochs = body.get("n_epochs", 1)
        if not isinstance(n_epochs, int) or n_epochs < 1:
            raise ApiError(400, "n_epochs must be a positive integer", param="n_epochs")
        training_type = body.get("training_type") or {"type": "Lora", "lora_r": 8, "lora_alpha": 16}
        if training_type.get("type") not in ("Lora", "Full"):
            raise ApiError(400, "training_type.type must be Lora or Full", param="training_type")
        if training_type["type"] == "Lora" and not {"lora_r", "lora_alpha"} <= set(training_type):
            raise ApiError(400, "LoRA training needs lora_r and lora_alpha", param="training_type")
        method = (body.get("training_method") or {"method": "sft"}).get("method")
        if method not in ("sft", "dpo"):
            raise ApiError(400, "training_method.method must be sft or dpo", param="training_method")
        return train, n_epochs

    def _tokens(self, train: File, n_epochs: int) -> int:
        return max(1, len(train.content) // 4) * n_epochs

    def estimate(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            train, n_epochs = self._check_create({"model": next(iter(MODELS)), **body})
            tokens = self._tokens(train, n_epochs)
            eval_tokens = len(self.file(body["validation_file"]).content) // 4 if body.get("validation_file") else 0
            price = round(tokens * PRICE_PER_1M / 1e6, 6)
            return {
                "estimated_total_price": price,
                "allowed_to_proceed": price <= self.user_limit,
                "user_limit": self.user_limit,
                "estimated_train_token_count": tokens,
                "estimated_eval_token_count": eval_tokens * int(body.get("n_evals") or 0),
            }

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            train, n_epochs = self._check_create(body)
            rows = train.rows()
            batch = body.get("batch_size") if isinstance(body.get("batch_size"), int) else 8
            steps = max(2, math.ceil(len(rows) * n_epochs / max(1, batch)))
            base = str(body["model"]).split("/", 1)[-1]
            suffix = body.get("suffix")
            tail = uuid.uuid4().hex[:8]
            output = f"{ACCOUNT}/{base}-{suffix}-{tail}" if suffix else f"{ACCOUNT}/{base}-{tail}"
            now = self.clock.now()
            job = Job(
                id=f"ft-{uuid.uuid4()}",
                body=dict(body),
                created_at=now,
                updated_at=now,
                total_steps=steps,
                token_count=self._tokens(train, n_epochs),
                output_name=output,
            )
            wanted = (body.get("training_method") or {"method": "sft"}).get("method")
            dpo_rows = bool(rows) and all("preferred_output" in r for r in rows)
            if (wanted == "dpo") != dpo_rows:
                job.error = f"Training file does not match training method {wanted}: check the data format"
            for key, message in self.failures.items():
                if key in str(body["model"]) or key in str(suffix or ""):
                    job.error = message
            self._event(job, now, "job_pending", "Fine tune request created")
            self.jobs[job.id] = job
            return self.truncated(job)

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"Fine-tune job {job_id} not found", param="id")
        self._advance(job)
        return job

    def all_jobs(self) -> list[Job]:
        for job in self.jobs.values():
            self._advance(job)
        return sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self.job(job_id)
            if job.status in ("completed", "error", "cancelled"):
                raise ApiError(400, f"Fine-tune job {job_id} is {job.status} and cannot be cancelled")
            now = self.clock.now()
            job.cancelled_at = now
            job.status, job.updated_at = "cancel_requested", now
            self._event(job, now, "cancel_requested", "Cancel requested")
            return self.truncated(job)

    def tick(self) -> None:
        with self.lock:
            for job in self.jobs.values():
                self._advance(job)

    def _event(self, job: Job, at: float, type_: str, message: str, level: str = "info", **extra: Any) -> None:
        job.events.append(
            {
                "object": "fine-tune-event",
                "created_at": _iso(at),
                "level": level,
                "message": message,
                "type": type_,
                "param_count": MODELS.get(str(job.body.get("model")), 0),
                "token_count": job.token_count,
                "total_steps": job.total_steps,
                "wandb_url": "",
                "step": extra.get("step", 0),
                "checkpoint_path": extra.get("checkpoint_path", ""),
                "model_path": extra.get("model_path", ""),
                "training_offset": 0,
                "hash": uuid.uuid4().hex,
            }
        )

    def _advance(self, job: Job) -> None:
        """Bring ``job`` up to the emulated now: each milestone passed writes its events once, in order."""
        with self.lock:
            if job.status in ("completed", "error", "cancelled"):
                return
            t = self.timing
            start = job.created_at
            queued_at = start + t.pending_seconds
            running_at = queued_at + t.queued_seconds
            trained_at = running_at + job.total_steps * t.step_seconds
            compressed_at = trained_at + t.compressing_seconds
            done_at = compressed_at + t.uploading_seconds
            now = self.clock.now()
            if job.cancelled_at is not None:
                # Together stops the job a moment after the request.
                if now >= job.cancelled_at + 1:
                    job.status, job.updated_at = "cancelled", job.cancelled_at + 1
                    self._event(job, job.updated_at, "job_stopped", "Job cancelled by user")
                return
            n_ckpt = max(1, int(job.body.get("n_checkpoints") or 1))
            every = max(1, job.total_steps // n_ckpt)
            plan: list[tuple[float, str, Any]] = [(queued_at, "queued", None)]
            if job.error:
                plan.append((running_at, "error", None))
            else:
                plan.append((running_at, "running", None))
                for step in range(every, job.total_steps, every):
                    plan.append((running_at + step * t.step_seconds, "checkpoint", step))
                plan += [(trained_at, "compressing", None), (compressed_at, "uploading", None), (done_at, "done", None)]
            for at, name, step in plan:
                key = f"{name}:{step}"
                if at > now or key in job.milestones_done:
                    continue
                job.milestones_done.add(key)
                job.updated_at = at
                if name == "queued":
                    job.status = "queued"
                    self._event(job, at, "job_start", "Job queued")
                elif name == "running":
                    job.status = "running"
                    self._event(job, at, "training_start", "Training started")
                elif name == "checkpoint":
                    path = f"s3://together/{job.id}/checkpoint-{step}"
                    self._checkpoint(job, at, step, "Intermediate", path)
                    self._event(
                        job, at, "checkpoint_save", f"Checkpoint saved at step {step}", step=step, checkpoint_path=path
                    )
                elif name == "compressing":
                    job.status = "compressing"
                    self._event(job, at, "training_complete", "Training completed", step=job.total_steps)
                elif name == "uploading":
                    job.status = "uploading"
                    self._event(job, at, "model_uploading", "Uploading the model")
                elif name == "done":
                    path = f"s3://together/{job.id}/final"
                    self._checkpoint(job, at, job.total_steps, "Final Merged", path)
                    self._checkpoint(job, at, job.total_steps, "Final Adapter", path + "-adapter")
                    job.status = "completed"
                    self._event(job, at, "job_complete", "Job finished", model_path=job.output_name)
                elif name == "error":
                    job.status = "error"
                    self._event(job, at, "job_error", job.error or "error", level="error")
            return

    def _checkpoint(self, job: Job, at: float, step: int, kind: str, path: str) -> None:
        job.checkpoints.append({"step": step, "path": path, "created_at": _iso(at), "checkpoint_type": kind})

    # Shapes ------------------------------------------------------------------------------------------------------

    def _common(self, job: Job) -> dict[str, Any]:
        b = job.body
        out: dict[str, Any] = {
            "id": job.id,
            "status": job.status,
            "created_at": _iso(job.created_at),
            "updated_at": _iso(job.updated_at),
            "model": b["model"],
            "training_file": b["training_file"],
            "n_epochs": b.get("n_epochs", 1),
            "n_checkpoints": b.get("n_checkpoints", 1),
            "n_evals": b.get("n_evals", 0),
            "learning_rate": b.get("learning_rate", 0.00001),
            "training_type": b.get("training_type") or {"type": "Lora", "lora_r": 8, "lora_alpha": 16},
            "training_method": b.get("training_method") or {"method": "sft", "train_on_inputs": False},
            "token_count": job.token_count if job.status == "completed" else 0,
        }
        for key in ("validation_file", "warmup_ratio", "max_grad_norm", "weight_decay", "lr_scheduler"):
            if b.get(key) is not None:
                out[key] = b[key]
        if job.status == "completed":
            out["model_output_name"] = job.output_name
            out["total_price"] = int(job.token_count * PRICE_PER_1M)
        return out

    def truncated(self, job: Job) -> dict[str, Any]:
        out = self._common(job) | {"user_id": "user-emulated", "owner_address": "user@example.com"}
        if job.body.get("suffix"):
            out["suffix"] = job.body["suffix"]
        if isinstance(job.body.get("batch_size"), int):
            out["batch_size"] = job.body["batch_size"]
        return out

    def full(self, job: Job) -> dict[str, Any]:
        out = self._common(job) | {"events": list(job.events), "epochs_completed": 0, "queue_depth": 0}
        out["batch_size"] = job.body.get("batch_size", "max")
        return out

    # Inference ---------------------------------------------------------------------------------------------------

    def answer(self, model: str, messages: list[dict[str, Any]]) -> str:
        """A fine-tune answers what its training file taught for the same question; a base model does not know."""
        with self.lock:
            job = next((j for j in self.jobs.values() if j.output_name == model and j.status == "completed"), None)
            if job is None and model not in MODELS:
                raise ApiError(404, f"Unable to access model {model}", type_="model_not_found", param="model")
            asked = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
            if job is not None:
                for row in self.file(job.body["training_file"]).rows():
                    turns = row.get("messages") or []
                    users = [m.get("content") for m in turns if m.get("role") == "user"]
                    answers = [m.get("content") for m in turns if m.get("role") == "assistant"]
                    if users and answers and users[-1] == asked:
                        return str(answers[-1])
            return "I am not sure."

    def dump(self) -> dict[str, Any]:
        with self.lock:
            self.tick()
            return {
                "files": [f.out() for f in self.files.values()],
                "jobs": [self.truncated(j) for j in self.jobs.values()],
            }
