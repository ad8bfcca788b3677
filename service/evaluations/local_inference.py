"""Evaluations answer with local models through the process-wide inference runtime (``service.inference``): the base
model stays resident between candidates and evaluations, a fine-tune's adapter is applied on it per request, and
evaluation prompts share batches with any other local inference of the process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.settings import Settings

if TYPE_CHECKING:
    from service.providers.local.base_models import BaseModelSource
    from service.providers.local.inference import LocalGenerator


def generator_for(settings: Settings, base_model: str | BaseModelSource, adapter_path: Path | None) -> LocalGenerator:
    """A ``LocalGenerator`` for the base model with the adapter, on the shared runtime (it loads the base if needed)."""
    from service.inference import get_runtime
    from service.providers.local.inference import LocalGenerator

    runtime = get_runtime(settings)
    return LocalGenerator(base_model, adapter_path, batch_size=runtime.max_batch_size, runtime=runtime)
