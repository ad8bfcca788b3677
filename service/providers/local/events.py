"""What the trainer reports while it runs (events) and when it returns (result). Plain pydantic: no torch needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter


class StepMetrics(BaseModel):
    """One optimizer step finished."""

    type: Literal["step"] = "step"
    step: int
    total_steps: int
    epoch: float = Field(description="Fractional epoch reached, e.g. 1.5 is halfway through the second epoch.")
    train_loss: float = Field(
        description="Mean cross-entropy over the assistant tokens of this step (DPO: mean DPO loss over its pairs)."
    )
    learning_rate: float = Field(description="Learning rate used for this step.")
    grad_norm: float = Field(description="Global gradient L2 norm before clipping.")
    tokens: int = Field(description="Real (non-padding) tokens processed so far, this step included.")
    target_tokens: int = Field(description="Assistant tokens that carried loss so far.")
    tokens_per_second: float = Field(description="Real tokens of this step divided by its wall time.")
    elapsed_s: float
    peak_gpu_memory_bytes: int | None = Field(
        default=None, description="CUDA only: the most device memory torch has held at once so far in this run."
    )
    peak_process_rss_bytes: int | None = Field(
        default=None,
        description="The worker process's peak resident host memory so far (everything it holds, not only training).",
    )
    reward_accuracy: float | None = Field(
        default=None, description="DPO: share of the step's pairs whose preferred answer has the higher reward."
    )
    reward_margin: float | None = Field(
        default=None, description="DPO: mean of (preferred reward - non-preferred reward) over the step's pairs."
    )


class ValidationMetrics(BaseModel):
    type: Literal["validation"] = "validation"
    step: int
    total_steps: int
    validation_loss: float
    validation_tokens: int = Field(description="Assistant tokens the validation loss is averaged over.")
    elapsed_s: float


class CheckpointSaved(BaseModel):
    type: Literal["checkpoint"] = "checkpoint"
    step: int
    path: Path


class TrainMessage(BaseModel):
    """Something worth a line in the job's event log (model loaded, data statistics, resumed, ...)."""

    type: Literal["message"] = "message"
    level: Literal["info", "warning"] = "info"
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


TrainEvent = Annotated[StepMetrics | ValidationMetrics | CheckpointSaved | TrainMessage, Field(discriminator="type")]
train_event_adapter: TypeAdapter[TrainEvent] = TypeAdapter(TrainEvent)


class TrainResult(BaseModel):
    status: Literal["succeeded", "cancelled"]
    base_model: str
    device: str
    precision: str
    steps: int = Field(description="Optimizer steps completed, across resumes.")
    total_steps: int
    trained_tokens: int = Field(description="Real tokens processed, across resumes.")
    target_tokens: int
    final_train_loss: float | None = Field(description="Train loss of the last step.")
    final_validation_loss: float | None
    wall_time_s: float = Field(description="Wall time of this call (load, train, save), not of earlier attempts.")
    padding_share: float = Field(description="Share of the trained token slots that were padding.")
    target_modules: list[str]
    adapter_path: Path | None = Field(description="PEFT LoRA adapter folder; None when cancelled.")
    merged_path: Path | None
    metrics_path: Path
    checkpoint_path: Path | None = Field(description="Latest checkpoint kept in output_dir, if any.")
    resumed_from_step: int | None = None
    peak_gpu_memory_bytes: int | None = Field(default=None, description="CUDA only: peak device memory of this call.")
    peak_process_rss_bytes: int | None = Field(default=None, description="Peak resident host memory of the process.")
