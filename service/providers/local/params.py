"""Typed hyperparameters of a local LoRA fine-tune, with defaults that suit a ~135M model on a few CPU cores."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from service.providers.openai_vocabulary import from_openai

# Fields that only change what is observed or kept, or how fast the same computation runs (kernels, memory for time),
# not the trained weights: a resume may change them, and runs recorded before they existed keep their fingerprint.
_NON_TRAJECTORY_FIELDS = frozenset(
    {
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "merge_adapter",
        "attention",
        "liger_kernels",
        "gradient_checkpointing",
        "torch_compile",
    }
)
# DPO's beta when a DPO job does not set it (OpenAI's and TRL's default).
DEFAULT_DPO_BETA = 0.1


class LocalTrainParams(BaseModel):
    """Hyperparameters of the `local` provider.

    Batching: `batch_size` counts rows per micro-batch. With `packing` (the default) a row is `max_seq_length` tokens
    filled with whole examples (each attends only to itself; positions restart per example); without packing a row is
    one example, and examples of similar length are batched together so rows need little padding. One optimizer step
    consumes `batch_size * gradient_accumulation_steps` rows. The loss is the mean over assistant tokens of the step.
    """

    model_config = ConfigDict(extra="forbid")

    lora_r: int = Field(default=16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: float = Field(default=32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: Literal["auto", "all-linear"] | list[str] = Field(
        default="auto",
        description="'auto' (every linear layer of the decoder blocks, detected per architecture), 'all-linear', "
        "or explicit module name suffixes such as ['q_proj', 'v_proj'].",
    )
    learning_rate: float = Field(default=1e-3, gt=0, le=1.0, description="Peak learning rate of AdamW.")
    n_epochs: int = Field(default=3, ge=1, le=100)
    batch_size: int = Field(default=2, ge=1, le=4096, description="Rows per micro-batch (see class doc).")
    max_seq_length: int = Field(
        default=512, ge=16, le=131072, description="Tokens per example (longer ones are truncated) and per packed row."
    )
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    warmup_ratio: float = Field(default=0.05, ge=0.0, le=0.5, description="Share of steps with a linear warmup.")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradients are clipped to this global L2 norm.")
    eval_every_steps: int = Field(default=25, ge=0, description="Validation loss cadence; 0 means only at the end.")
    checkpoint_every_steps: int = Field(default=25, ge=0, description="Checkpoint cadence; 0 disables resume points.")
    keep_checkpoints: int = Field(default=2, ge=1, le=100, description="How many recent checkpoints are kept.")
    merge_adapter: bool = Field(default=False, description="Also write the base model with the adapter merged in.")
    packing: bool = Field(default=True, description="Pack examples into full rows instead of padding each one.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="'auto': bf16 autocast on a CUDA device that supports it, fp32 elsewhere."
    )
    attention: Literal["auto", "sdpa", "flex_attention", "flash_attention_2", "eager"] = Field(
        default="auto",
        description="How packed examples are kept apart in attention. 'auto': flash_attention_2 on CUDA when flash_attn "
        "is installed, else flex_attention (a document block mask) on CUDA, else sdpa with a block-diagonal mask.",
    )
    liger_kernels: bool = Field(
        default=True,
        description="Use Liger's kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU) on CUDA when liger-kernel "
        "is installed (the gpu extra) and supports the architecture; ignored elsewhere.",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: less memory, about a third more compute.",
    )
    torch_compile: bool = Field(
        default=False, description="torch.compile each decoder layer (compile time first, faster steps after on GPU)."
    )
    beta: float | None = Field(
        default=None,
        gt=0,
        le=2,
        description=f"DPO only: how far the policy may move from the reference (the base model); {DEFAULT_DPO_BETA} "
        "when unset. DPO trains on preference pairs, one pair per row (no packing).",
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty_modules(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value or any(not isinstance(name, str) or not name.strip() for name in value):
                raise ValueError("target_modules must be 'auto', 'all-linear' or a non-empty list of module names")
            return sorted({name.strip() for name in value})
        return value

    @model_validator(mode="after")
    def _method_fields(self, info: ValidationInfo) -> LocalTrainParams:
        # Validated with context={"method": ...} where the method is known (job creation, the trainer).
        method = (info.context or {}).get("method") if info is not None else None
        if method is not None:
            check_method_params(self, method)
            if method == "dpo" and self.beta is None:
                self.beta = DEFAULT_DPO_BETA  # resolved when the job is made, so the job shows the beta it trains with
        return self

    def dpo_beta(self) -> float:
        return self.beta if self.beta is not None else DEFAULT_DPO_BETA

    def trajectory_fingerprint(self) -> str:
        """Hash of the fields that determine the trained weights: a checkpoint is resumable only under the same one."""
        # beta is left out while unset, so runs recorded before it existed keep their fingerprint.
        data = self.model_dump(
            mode="json", exclude=set(_NON_TRAJECTORY_FIELDS) | ({"beta"} if self.beta is None else set())
        )
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


METHODS = ("supervised", "dpo")


def check_method_params(params: LocalTrainParams, method: str) -> None:
    """Refuse a method the trainer does not know, and hyperparameters that belong to another method."""
    if method not in METHODS:
        raise ValueError(f"the local provider trains with {' or '.join(METHODS)}, not {method!r}")
    if method != "dpo" and params.beta is not None:
        raise ValueError("beta is a DPO hyperparameter; it is not accepted for supervised fine-tuning")


# OpenAI's hyperparameters, for jobs created through the OpenAI-shaped routes. OpenAI scales its own per-model
# learning rate by `learning_rate_multiplier`; here the multiplier scales our default (1e-3, suited to LoRA), so 1.0
# means "what this provider would have chosen", as it does at OpenAI. "auto" leaves our default.
def from_openai_hyperparameters(hyperparameters: dict[str, object]) -> dict[str, object]:
    return from_openai(
        hyperparameters, base_learning_rate=LocalTrainParams.model_fields["learning_rate"].default, beta_name="beta"
    )


def to_openai_hyperparameters(params: dict[str, object]) -> dict[str, object]:
    resolved = LocalTrainParams(**params)
    default_lr = LocalTrainParams.model_fields["learning_rate"].default
    out: dict[str, object] = {
        "n_epochs": resolved.n_epochs,
        "batch_size": resolved.batch_size,
        "learning_rate_multiplier": round(resolved.learning_rate / default_lr, 6),
    }
    if resolved.beta is not None:
        out["beta"] = resolved.beta
    return out
