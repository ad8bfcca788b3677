"""The `local` provider's engine: LoRA fine-tuning and batched inference of open causal LMs with transformers + peft.

Importing this package needs neither torch nor transformers (the service runs without the `local` extra and reports
the provider unavailable via `is_available()`); `train` and `LocalGenerator` import them when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .availability import INSTALL_HINT, is_available
from .base_models import DEFAULT_BASE_MODEL, SMOLLM2_ALIAS, BaseModelSource, resolve_base_model
from .errors import (
    BaseModelError,
    ChatTemplateError,
    CheckpointMismatchError,
    DatasetFormatError,
    LocalProviderUnavailable,
    LocalTrainingError,
)
from .events import (
    CheckpointSaved,
    StepMetrics,
    TrainEvent,
    TrainMessage,
    TrainResult,
    ValidationMetrics,
    train_event_adapter,
)
from .inference import Generation, LocalGenerator
from .model_names import claims_local_model
from .params import LocalTrainParams

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = [
    "DEFAULT_BASE_MODEL",
    "INSTALL_HINT",
    "SMOLLM2_ALIAS",
    "BaseModelError",
    "BaseModelSource",
    "ChatTemplateError",
    "CheckpointMismatchError",
    "CheckpointSaved",
    "DatasetFormatError",
    "Generation",
    "LocalGenerator",
    "LocalProviderUnavailable",
    "LocalTrainParams",
    "LocalTrainingError",
    "StepMetrics",
    "TrainEvent",
    "TrainMessage",
    "TrainResult",
    "ValidationMetrics",
    "claims_local_model",
    "is_available",
    "resolve_base_model",
    "train",
    "train_event_adapter",
]


def train(
    params: LocalTrainParams,
    *,
    base_model: str,
    train_path: str | Path,
    validation_path: str | Path | None = None,
    output_dir: str | Path,
    cache_dir: str | Path,
    device: str = "auto",
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    num_threads: int | None = None,
    method: str = "supervised",
) -> TrainResult:
    """See `trainer.train`; this wrapper defers importing torch to the first call."""
    from .availability import require_available

    require_available()
    from .trainer import train as run

    return run(
        params,
        base_model=base_model,
        train_path=train_path,
        validation_path=validation_path,
        output_dir=output_dir,
        cache_dir=cache_dir,
        device=device,
        on_event=on_event,
        should_stop=should_stop,
        num_threads=num_threads,
        method=method,
    )
