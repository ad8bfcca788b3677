"""LoRA wrapping and the loss: the parts of training that touch the model itself."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
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


def device_batch(collated: dict[str, torch.Tensor], device: torch.device, *, varlen: bool = False) -> dict[str, Any]:
    """A collated micro-batch on the device, with what the loss and the kernels need worked out on the host first.

    The target positions (which logits to compute) and FlashAttention's example boundaries are read from host tensors
    here: computed from device tensors, each would stop the host until the device caught up (a `nonzero` or an
    `.item()`), once per micro-batch or once per layer, and a GPU left waiting for the host runs at the host's pace.
    """
    out: dict[str, Any] = {key: value.to(device, non_blocking=True) for key, value in collated.items()}
    out["target_positions"] = target_positions(collated["labels"]).to(device, non_blocking=True)
    if varlen and "position_ids" in collated:
        from .kernels import varlen_kwargs

        out.update(
            {
                k: v.to(device) if isinstance(v, torch.Tensor) else v
                for k, v in varlen_kwargs(collated["position_ids"]).items()
            }
        )
    return out


def split_batch(batch: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """(model inputs, labels, target positions) of a batch from ``device_batch`` (or a plain collated one)."""
    labels = batch["labels"]
    positions = batch.get("target_positions")
    if positions is None:
        positions = target_positions(labels)
    inputs = {key: value for key, value in batch.items() if key not in ("labels", "target_positions")}
    return inputs, labels, positions


def loss_sum(
    model: nn.Module, batch: dict[str, Any], *, keep_logits: bool, fused_loss: Callable[..., Any] | None = None
) -> torch.Tensor:
    """Sum of next-token cross-entropy over target tokens. Only logits at positions with a target are computed
    (assistant tokens are a small share of chat data, and the vocabulary projection is a large share of the compute).

    With `fused_loss` (Liger's fused linear cross-entropy: ``(head weight, hidden states, targets) -> summed loss``) no
    logits are materialised at all: the decoder's hidden states at the target positions go to the fused kernel, which
    projects and reduces them chunk by chunk.
    """
    inputs, labels, positions = split_batch(batch)
    targets = labels[:, 1:][:, positions]
    if fused_loss is not None:
        causal = model.get_base_model() if hasattr(model, "get_base_model") else model
        # LoRA layers sit inside the decoder's modules, so calling the decoder directly still trains the adapter.
        hidden = causal.get_decoder()(**inputs, use_cache=False).last_hidden_state[:, positions]
        weight = causal.get_output_embeddings().weight
        return fused_loss(weight, hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1))
    if keep_logits:
        logits = model(**inputs, use_cache=False, logits_to_keep=positions).logits
    else:
        logits = model(**inputs, use_cache=False).logits[:, positions]
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
