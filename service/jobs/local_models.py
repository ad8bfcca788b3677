"""Which local model a project means when it names one: the operator's models (aliases, model directories, Hugging Face
ids; see ``service.providers.local.base_models``) or one of the project's own local fine-tunes, by job id or by
fine-tuned model name. Another project's fine-tune is found neither by its name nor by its folder: it gets the same
message as a name that exists nowhere.

Training on top of a fine-tune needs its merged model (``merge_adapter: true``); answering with one uses the merged
model when there is one, else the base model with the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlmodel import Session, or_, select

from api_schemas.jobs import JobStatus
from service.jobs.models import Job
from service.providers import registry
from service.providers.local import BaseModelSource, resolve_base_model
from service.providers.local.base_models import FINE_TUNE_NAME, not_allowed
from service.providers.local.errors import BaseModelError
from service.settings import Settings

# A chain of fine-tunes, each trained on the merged model of the one before, is followed this deep at most.
MAX_CHAIN = 8

Purpose = Literal["train", "infer"]


@dataclass(frozen=True)
class LocalModel:
    """A resolved local model: the full model to load, and a LoRA adapter to apply on top (or None)."""

    base: BaseModelSource
    adapter_path: Path | None = None


def resolve_local_model(
    session: Session, settings: Settings, project_id: str | None, spec: str, *, purpose: Purpose = "train"
) -> LocalModel:
    """What ``spec`` names for ``project_id`` (None: no project, only the operator's models). Raises BaseModelError."""
    return _resolve(session, settings, project_id, spec, purpose, depth=0)


def _resolve(
    session: Session, settings: Settings, project_id: str | None, spec: str, purpose: Purpose, depth: int
) -> LocalModel:
    text = spec.strip()
    if not FINE_TUNE_NAME.match(text):
        return LocalModel(resolve_base_model(text, model_dirs=settings.local_model_dirs))
    job = _own_fine_tune(session, project_id, text) if project_id is not None else None
    if job is None or depth >= MAX_CHAIN:
        raise not_allowed(text)
    if job.status != JobStatus.succeeded:
        raise BaseModelError(f"Fine-tune {job.id} is {job.status}; only a succeeded job's model can be used")
    from service.providers.local_provider import output_dir

    output = output_dir(settings, job.id)
    merged = output / "merged"
    if (merged / "config.json").is_file():
        return LocalModel(BaseModelSource(spec=text, kind="folder", location=str(merged.resolve())))
    if purpose == "train":
        raise BaseModelError(
            f"Fine-tune {job.id} has no merged model to train on: fine-tune it with merge_adapter: true to build on it"
        )
    adapter = output / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise BaseModelError(f"Fine-tune {job.id} has no adapter (was it kept?)")
    # The adapter was trained on the job's base model, which may itself be an earlier fine-tune's merged model.
    base = _resolve(session, settings, project_id, job.base_model, "train", depth + 1).base
    return LocalModel(base, adapter.resolve())


def _own_fine_tune(session: Session, project_id: str, name: str) -> Job | None:
    job_id = name.removeprefix("local:")
    return session.exec(
        select(Job).where(
            Job.project_id == project_id,
            # Fine-tunes whose weights are on this server: those of providers that train here.
            Job.provider.in_([e.name for e in registry.entries() if e.capabilities.runs_locally]),  # type: ignore[attr-defined]
            Job.model_deleted_at.is_(None),  # type: ignore[union-attr]  # a deleted fine-tune names nothing
            or_(Job.id == job_id, Job.fine_tuned_model == name),
        )
    ).first()
