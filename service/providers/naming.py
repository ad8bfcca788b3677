"""OpenAI-format names for the models a job produces, and reading them back.

OpenAI names a fine-tune ``ft:{base}:{organization}:{suffix}:{id}`` (the suffix may be empty) and its checkpoints
``...:ckpt-step-{n}``. Code written against OpenAI keeps those names in configuration and logs, so the fine-tunes this
service trains itself (providers that do not name their models) are named the same way. The last field is our job id:
that is what a name resolves by; the rest must match too, so a name cannot be forged from another job's id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CHECKPOINT = re.compile(r"^(?P<model>.+):ckpt-step-(?P<step>[0-9]{1,12})$")
_FT = re.compile(r"^ft:(?P<body>.+):(?P<job_id>job_[A-Za-z0-9]+)$")


def _field(text: str) -> str:
    # ':' separates the fields and '/' would break the model path in URLs; Hugging Face ids keep their org as a prefix.
    return _UNSAFE.sub("-", text.replace("/", "--")).strip("-")[:80]


def fine_tuned_name(*, base_model: str, project_name: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{_field(base_model)}:{_field(project_name.lower()) or 'project'}:{_field(suffix or '')}:{job_id}"


def checkpoint_name(model_name: str, step: int) -> str:
    return f"{model_name}:ckpt-step-{step}"


@dataclass(frozen=True)
class ParsedName:
    job_id: str
    model_name: str  # the fine-tune's name without any checkpoint part
    step: int | None


def parse_name(name: str) -> ParsedName | None:
    """The job (and checkpoint step) an ``ft:`` name points at, or None when it is not one of ours."""
    step = None
    model_name = name
    if (m := _CHECKPOINT.match(name)) is not None:
        model_name, step = m["model"], int(m["step"])
    if (m := _FT.match(model_name)) is None:
        return None
    return ParsedName(job_id=m["job_id"], model_name=model_name, step=step)


def job_model_name(
    *, fine_tuned_model: str | None, base_model: str, project_name: str, suffix: str | None, job_id: str
) -> str:
    """The name a job's fine-tune has or will have: the provider's own ``ft:`` name once it gave one, else ours."""
    if fine_tuned_model and fine_tuned_model.startswith("ft:"):
        return fine_tuned_model
    return fine_tuned_name(base_model=base_model, project_name=project_name, suffix=suffix, job_id=job_id)
