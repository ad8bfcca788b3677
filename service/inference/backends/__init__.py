"""Which engine generates for local models. Both answer the runtime interface (``service.inference.calls.Runtime``):

- ``transformers``: ``service.inference.runtime.InferenceRuntime``, our scheduler over a transformers model (any
  device; per-request LoRA through peft; on a GPU its batch is sized from free memory);
- ``vllm``: ``service.inference.backends.vllm.VllmRuntime`` (a GPU and the vllm package; multi-LoRA, paged attention,
  CUDA graphs).

``auto`` takes vLLM when both it and a CUDA device are present, else transformers, and says why in the log.

No static-cache + ``torch.compile`` (CUDA graph) path for the transformers runtime: a static cache fixes the batch's
rows and length when it is made, while continuous batching merges joining rows into the running cache between any two
steps, and peft's per-row adapters (``adapter_names``) split each LoRA layer by adapter in Python, which a captured
graph cannot follow. CUDA graphs come with vLLM, which captures them per batch size with its multi-LoRA kernels.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

log = logging.getLogger(__name__)

BACKENDS = ("auto", "transformers", "vllm")


def vllm_unavailable_reason() -> str | None:
    """Why vLLM cannot serve here, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "the vllm package is not installed (pip install vllm: a build for this machine's torch and CUDA)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def select_backend(name: str = "auto", device: str = "auto") -> str:
    """'vllm' or 'transformers' for the setting `name` on `device`; raises ValueError when vllm is asked for and
    cannot run."""
    if name not in BACKENDS:
        raise ValueError(f"inference backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    if name == "transformers":
        log.info("inference backend: transformers (configured)")
        return name
    wanted = (device or "auto").strip().lower()
    reason = None if wanted == "auto" or wanted.startswith("cuda") else f"device {device}"
    reason = reason or vllm_unavailable_reason()
    if reason is None:
        log.info("inference backend: vllm (%s)", "configured" if name == "vllm" else "installed, CUDA present")
        return "vllm"
    if name == "vllm":
        raise ValueError(f"inference backend vllm cannot run here: {reason}")
    log.info("inference backend: transformers (vllm skipped: %s)", reason)
    return "transformers"


def make_runtime(backend: str = "auto", **options: Any) -> Any:
    """A runtime of the selected backend, built with the transformers runtime's options (vLLM ignores those it has no
    use for: memory budget, device, threads)."""
    if select_backend(backend, options.get("device", "auto")) == "vllm":
        from .vllm import VllmRuntime

        return VllmRuntime(**options)
    from ..runtime import InferenceRuntime

    return InferenceRuntime(**options)


def runtime_from_settings(settings: Any) -> Any:
    """The process's runtime as the settings describe it."""
    import torch

    # On a GPU the batch is sized from free memory (transformers: capacity.py; vLLM: its paged KV cache) below a
    # larger cap than a CPU's.
    gpu = torch.cuda.is_available()
    return make_runtime(
        settings.inference_backend,
        cache_dir=settings.data_dir / "cache",
        max_batch_size=settings.inference_gpu_max_batch_size if gpu else settings.inference_max_batch_size,
        max_queued=settings.inference_max_queued,
        max_tokens=settings.inference_max_tokens,
        memory_budget_mb=settings.inference_memory_budget_mb,
        request_timeout_s=settings.inference_request_timeout_s,
    )
