"""Together's fine-tuning hyperparameters, typed: what ``POST /fine-tunes`` takes besides files and model.

Unknown names are refused (``extra="forbid"``), as are values outside Together's documented ranges and fields of
another method (``dpo_beta`` on a supervised job). Weights & Biases settings are not accepted: they carry an API key,
and hyperparameters are stored and shown in the clear.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from service.providers.openai_vocabulary import from_openai

# Together's default learning rate (``learning_rate`` in its description): OpenAI's ``learning_rate_multiplier``
# scales it, so 1.0 means "what Together would have chosen", as it does at OpenAI.
BASE_LEARNING_RATE = 1e-5
DEFAULT_DPO_BETA = 0.1
METHODS = ("supervised", "dpo")
DPO_ONLY = ("dpo_beta", "rpo_alpha", "simpo_gamma", "dpo_normalize_logratios_by_length", "dpo_reference_free")
LORA_ONLY = ("lora_r", "lora_alpha", "lora_dropout", "lora_trainable_modules")


class TogetherHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    training_type: Literal["lora", "full"] = Field(default="lora", description="LoRA adapter or all weights.")
    # "auto" (OpenAI's word, carried over when a recipe moves here) leaves Together's default, as leaving it out does.
    n_epochs: Annotated[int, Field(ge=1, le=20)] | Literal["auto"] | None = Field(
        default=None, description="1-20; Together's default: 1."
    )
    n_checkpoints: int | None = Field(default=None, ge=1, le=20, description="Intermediate checkpoints kept.")
    n_evals: int | None = Field(default=None, ge=0, le=100, description="Evaluations on the validation file.")
    batch_size: int | Literal["max", "auto"] | None = Field(
        default=None, description="An integer, or 'max' (Together's default; 'auto' means the same)."
    )
    learning_rate: float | None = Field(default=None, gt=0, le=1, description=f"Default {BASE_LEARNING_RATE}.")
    lr_scheduler: Literal["linear", "cosine"] | None = None
    min_lr_ratio: float | None = Field(default=None, ge=0, le=1, description="Final / peak learning rate.")
    num_cycles: float | None = Field(default=None, gt=0, description="Cosine scheduler only.")
    warmup_ratio: float | None = Field(default=None, ge=0, le=1)
    max_grad_norm: float | None = Field(default=None, ge=0, description="0 turns gradient clipping off.")
    weight_decay: float | None = Field(default=None, ge=0)
    random_seed: int | None = Field(default=None, ge=0)
    lora_r: int | None = Field(default=None, ge=1, le=1024)
    lora_alpha: int | None = Field(default=None, ge=1, le=4096)
    lora_dropout: float | None = Field(default=None, ge=0, lt=1)
    lora_trainable_modules: str | None = Field(default=None, min_length=1, max_length=500)
    # Together's own "auto" masks the prompt of chat data; the description types the field boolean, so we say it:
    # False (train on the assistant's turns only, as OpenAI does) unless the job asks otherwise.
    train_on_inputs: bool | None = Field(default=None, description="Supervised only; default false.")
    dpo_beta: float | None = Field(default=None, gt=0, le=10, description=f"DPO only; default {DEFAULT_DPO_BETA}.")
    rpo_alpha: float | None = Field(default=None, ge=0)
    simpo_gamma: float | None = Field(default=None, ge=0)
    dpo_normalize_logratios_by_length: bool | None = None
    dpo_reference_free: bool | None = None
    from_checkpoint: str | None = Field(
        default=None, min_length=1, max_length=300, description="A Together job id or output model, ':step' optional."
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> TogetherHyperparameters:
        if self.training_type == "full":
            given = [name for name in LORA_ONLY if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: LoRA settings are not accepted with training_type 'full'")
        if self.num_cycles is not None and self.lr_scheduler != "cosine":
            raise ValueError("num_cycles needs lr_scheduler 'cosine'")
        if self.min_lr_ratio is not None and self.lr_scheduler is None:
            raise ValueError("min_lr_ratio needs lr_scheduler 'linear' or 'cosine'")
        method = (info.context or {}).get("method") if info is not None else None
        if method is not None:
            if method not in METHODS:
                raise ValueError(f"Together trains with {' or '.join(METHODS)}, not {method!r}")
            if method != "dpo":
                given = [name for name in DPO_ONLY if getattr(self, name) is not None]
                if given:
                    raise ValueError(f"{', '.join(given)}: DPO hyperparameters are not accepted for {method!r}")
            elif self.train_on_inputs is not None:
                raise ValueError("train_on_inputs is a supervised hyperparameter; it is not accepted for 'dpo'")
        return self

    def request_fields(self, method: str) -> dict[str, Any]:
        """The body fields of ``POST /fine-tunes`` (and ``/fine-tunes/estimate-price``) these settings make."""
        flat = ("n_epochs", "n_checkpoints", "n_evals", "batch_size", "learning_rate", "warmup_ratio")
        out: dict[str, Any] = {k: getattr(self, k) for k in flat if getattr(self, k) not in (None, "auto")}
        for name in ("max_grad_norm", "weight_decay", "random_seed", "from_checkpoint"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.lr_scheduler is not None:
            args: dict[str, Any] = {"min_lr_ratio": self.min_lr_ratio or 0.0}
            if self.lr_scheduler == "cosine":
                args["num_cycles"] = self.num_cycles if self.num_cycles is not None else 0.5
            out["lr_scheduler"] = {"lr_scheduler_type": self.lr_scheduler, "lr_scheduler_args": args}
        if self.training_type == "full":
            out["training_type"] = {"type": "Full"}
        else:
            lora: dict[str, Any] = {"type": "Lora", "lora_r": self.lora_r or 8, "lora_alpha": self.lora_alpha or 16}
            if self.lora_dropout is not None:
                lora["lora_dropout"] = self.lora_dropout
            if self.lora_trainable_modules is not None:
                lora["lora_trainable_modules"] = self.lora_trainable_modules
            out["training_type"] = lora
        if method == "dpo":
            dpo: dict[str, Any] = {"method": "dpo", "dpo_beta": self.dpo_beta or DEFAULT_DPO_BETA}
            dpo.update({k: getattr(self, k) for k in DPO_ONLY[1:] if getattr(self, k) is not None})
            out["training_method"] = dpo
        else:
            out["training_method"] = {"method": "sft", "train_on_inputs": bool(self.train_on_inputs)}
        return out


# OpenAI's hyperparameters, for jobs created through the OpenAI-shaped routes ("auto" leaves Together's default).
def from_openai_hyperparameters(hyperparameters: dict[str, object]) -> dict[str, object]:
    return from_openai(hyperparameters, base_learning_rate=BASE_LEARNING_RATE, beta_name="dpo_beta")


def to_openai_hyperparameters(params: dict[str, object]) -> dict[str, object]:
    resolved = TogetherHyperparameters(**params)  # type: ignore[arg-type]
    out: dict[str, object] = {
        "n_epochs": resolved.n_epochs if isinstance(resolved.n_epochs, int) else 1,
        "batch_size": resolved.batch_size if isinstance(resolved.batch_size, int) else "auto",
        "learning_rate_multiplier": round((resolved.learning_rate or BASE_LEARNING_RATE) / BASE_LEARNING_RATE, 6),
    }
    if resolved.dpo_beta is not None:
        out["beta"] = resolved.dpo_beta
    return out
