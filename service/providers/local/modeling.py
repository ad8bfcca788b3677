"""LoRA wrapping and the loss: the parts of training that touch the model itself."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .chat_data import IGNORE_INDEX
from .errors import LocalTrainingError
from .packing import target_positions
from .params import LocalTrainParams

_HEAD_NAMES = {"lm_head", "score", "classifier", "embed_out", "output"}


def detect_target_modules(model: nn.Module) -> list[str]:
    """Name suffixes of every linear layer except the output head: the usual 'all linear' LoRA for the architecture."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        if module is head or not name:
            continue
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":  # GPT-2 style blocks use Conv1D
            names.add(name.rsplit(".", 1)[-1])
    names -= _HEAD_NAMES
    if not names:
        raise LocalTrainingError(f"No linear layers found in {type(model).__name__} to attach LoRA to")
    return sorted(names)


def resolve_target_modules(model: nn.Module, requested: str | list[str]) -> list[str]:
    available = detect_target_modules(model)
    if requested in ("auto", "all-linear"):
        return available
    missing = [name for name in requested if name not in available]
    if missing:
        raise LocalTrainingError(
            f"target_modules {missing} match no linear layer of {type(model).__name__}; available: {available}"
        )
    return list(requested)


def attach_lora(model: nn.Module, params: LocalTrainParams, target_modules: list[str], spec: str) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=params.lora_r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    # Adapter weights stay fp32 even over bf16 base weights (autocast_adapter_dtype), for stable AdamW updates.
    with warnings.catch_warnings():
        # peft reads a transformers property that transformers 5 deprecated; nothing for us to change.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    # Recorded in adapter_config.json: the spec the user gave (alias, path or id), not a cache folder.
    peft_model.peft_config["default"].base_model_name_or_path = spec
    return peft_model


def supports_logits_to_keep(model: nn.Module) -> bool:
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(causal.forward).parameters


def loss_sum(model: nn.Module, batch: dict[str, torch.Tensor], *, keep_logits: bool) -> torch.Tensor:
    """Sum of next-token cross-entropy over target tokens. Only logits at positions with a target are computed
    (assistant tokens are a small share of chat data, and the vocabulary projection is a large share of the compute)."""
    labels = batch["labels"]
    positions = target_positions(labels)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    if keep_logits:
        logits = model(**inputs, use_cache=False, logits_to_keep=positions).logits
    else:
        logits = model(**inputs, use_cache=False).logits[:, positions]
    targets = labels[:, 1:][:, positions]
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
