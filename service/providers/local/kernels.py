"""How a training run computes on its device: the attention that keeps packed examples apart, Liger's fused kernels,
gradient checkpointing and torch.compile. Each choice is made once per run, from what is installed and the device, and
comes with one line that says what was chosen and why (the trainer logs it as a job event).

Packed rows hold several examples; attention must not cross from one to the next. Three ways, best first:
- ``flash_attention_2`` (CUDA, the ``flash_attn`` package): varlen kernels fed cumulative sequence lengths computed on
  the host (``varlen_kwargs``), so nothing is materialised and no host-device sync is needed to find the examples.
- ``flex_attention`` (torch >= 2.5): a document block mask; compiled by torch on first use (once per row shape, so the
  trainer pads packed rows to one width, see ``Kernels.fixed_width``). Runs on CPU too, where its compile time (about
  40 s for a tiny model on 2 cores) outweighs what it saves, so ``auto`` picks it only on CUDA.
- ``sdpa``: transformers detects the packing from position ids and materialises a (rows x 1 x seq x seq) boolean mask.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import LocalTrainingError

log = logging.getLogger(__name__)

ATTENTION_CHOICES = ("auto", "sdpa", "flex_attention", "flash_attention_2", "eager")
# Architectures whose output head is a plain bias-free projection (no logit scaling or soft-capping), where Liger's
# fused linear cross-entropy computes exactly the loss of ``modeling.loss_sum``. Liger patches more architectures
# (norms, RoPE, MLP); the fused loss is used only on these.
FUSED_LOSS_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm3"})


@dataclass
class Kernels:
    """What one run uses. ``notes`` are the lines to log, one per decision."""

    attention: str
    liger: bool = False
    fused_loss: Any = None  # Liger's fused linear cross-entropy (sum reduction) when on, else None
    gradient_checkpointing: bool = False
    compiled: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def fixed_width(self) -> bool:
        """Pad packed rows to the full row length: compiled flex_attention recompiles for every new width."""
        return self.attention == "flex_attention"

    @property
    def varlen(self) -> bool:
        """Pass each packed row's example boundaries to the varlen kernels (see ``varlen_kwargs``)."""
        return self.attention == "flash_attention_2"

    def summary(self) -> dict[str, Any]:
        return {
            "attention": self.attention,
            "liger_kernels": self.liger,
            "fused_linear_cross_entropy": self.fused_loss is not None,
            "gradient_checkpointing": self.gradient_checkpointing,
            "torch_compile": self.compiled,
        }


def flash_attn_available() -> bool:
    if importlib.util.find_spec("flash_attn") is None:
        return False
    from transformers.utils import is_flash_attn_2_available

    return bool(is_flash_attn_2_available())


def flex_attention_available() -> bool:
    from transformers.utils import is_torch_flex_attn_available

    return bool(is_torch_flex_attn_available())


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def choose_attention(requested: str, device: torch.device) -> tuple[str, str]:
    """(attn_implementation, why)."""
    if requested not in ATTENTION_CHOICES:
        raise LocalTrainingError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}, not {requested!r}")
    if requested == "flash_attention_2" and not (device.type == "cuda" and flash_attn_available()):
        raise LocalTrainingError("attention flash_attention_2 needs a CUDA device and the flash_attn package")
    if requested == "flex_attention" and not flex_attention_available():
        raise LocalTrainingError("attention flex_attention needs torch >= 2.5")
    if requested != "auto":
        return requested, "as requested"
    if device.type == "cuda":
        if flash_attn_available():
            return "flash_attention_2", "flash_attn is installed: varlen kernels, no mask"
        if flex_attention_available():
            return "flex_attention", "flash_attn is not installed: a compiled document block mask, no dense mask"
        return "sdpa", "neither flash_attn nor flex_attention is available: a materialised block-diagonal mask"
    return "sdpa", (
        f"on {device.type}, SDPA with a block-diagonal mask; flex_attention's compile time outweighs what it saves here"
    )


def prepare(model: nn.Module, params: Any, device: torch.device) -> Kernels:
    """Set the attention, Liger kernels and gradient checkpointing on the base model (before LoRA is attached)."""
    attention, why = choose_attention(params.attention, device)
    try:
        model.set_attn_implementation(attention)
    except (ValueError, ImportError) as exc:
        if params.attention != "auto":
            raise LocalTrainingError(f"attention {attention} is not available for this model: {exc}") from None
        current = model.config._attn_implementation
        why = f"{attention} is not supported by {type(model).__name__}, kept {current}"
        attention = current
    kernels = Kernels(attention=attention, notes=[f"Attention: {attention} ({why})"])
    _apply_liger(model, params, device, kernels)
    if params.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (LoRA): no need to make the embeddings require grad.
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name; the old one warns
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        kernels.gradient_checkpointing = True
        kernels.notes.append("Gradient checkpointing: on (non-reentrant); activations are recomputed in backward")
    return kernels


def _apply_liger(model: nn.Module, params: Any, device: torch.device, kernels: Kernels) -> None:
    model_type = getattr(model.config, "model_type", None)
    if not params.liger_kernels:
        kernels.notes.append("Liger kernels: off (liger_kernels=false)")
        return
    if device.type != "cuda":
        kernels.notes.append(f"Liger kernels: skipped, they are Triton kernels for CUDA and this run is on {device}")
        return
    if not liger_available():
        kernels.notes.append("Liger kernels: skipped, liger-kernel is not installed (pip install '.[gpu]')")
        return
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    apply = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type or "")
    if apply is None:
        kernels.notes.append(f"Liger kernels: skipped, no Liger kernels for model type {model_type!r}")
        return
    # On this instance only (norms, MLPs; RoPE is a module-level function). The loss is not patched into the model's
    # forward: loss_sum calls the fused loss itself on the hidden states of the target positions.
    wanted = {"model": model, "rope": True, "rms_norm": True, "swiglu": True}
    wanted |= {"cross_entropy": False, "fused_linear_cross_entropy": False}
    accepted = inspect.signature(apply).parameters
    apply(**{key: value for key, value in wanted.items() if key in accepted})
    kernels.liger = True
    fused = model_type in FUSED_LOSS_MODEL_TYPES and getattr(model.get_output_embeddings(), "bias", None) is None
    if fused:
        kernels.fused_loss = LigerFusedLinearCrossEntropyLoss(ignore_index=-100, reduction="sum")
    kernels.notes.append(
        f"Liger kernels: on for {model_type} (RMSNorm, RoPE, SwiGLU"
        + (", fused linear cross-entropy: no logits materialised)" if fused else "; the loss keeps plain logits)")
    )


def compile_layers(model: nn.Module, kernels: Kernels, enabled: bool) -> None:
    """torch.compile each decoder layer (regional compile: one graph reused by every layer, short compile times)."""
    if not enabled:
        return
    layers = _decoder_layers(model)
    if layers is None:
        kernels.notes.append("torch.compile: skipped, no decoder layer list found on this architecture")
        return
    for layer in layers:
        layer.compile(dynamic=True)
    kernels.compiled = True
    kernels.notes.append(f"torch.compile: {len(layers)} decoder layers compiled (dynamic shapes)")


def _decoder_layers(model: nn.Module) -> Sequence[nn.Module] | None:
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = causal.get_decoder() if hasattr(causal, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    return layers if isinstance(layers, nn.ModuleList) else None


def varlen_kwargs(position_ids: torch.Tensor) -> dict[str, Any]:
    """FlashAttention's varlen arguments for packed rows, from host position ids (every example starts at 0): the
    rows are one flattened sequence cut where a position restarts. Computed before the batch goes to the device, so
    the kernels need no sync to find the examples (transformers' own detection reads them back per forward)."""
    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().view(-1).to(torch.int32)
    cu = torch.cat([starts, torch.tensor([flat.numel()], dtype=torch.int32)])
    longest = int(cu.diff().max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
