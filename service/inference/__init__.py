"""The inference runtime for local models: resident base models, LoRA adapters applied per request, continuous
batching, streaming, and bounds on queued work, tokens and time. Pure domain code: the OpenAI-shaped routes and the
evaluation runner call it; it knows nothing of HTTP or Celery.

``get_runtime(settings)`` returns the process-wide runtime; its scheduler thread starts with the first request.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .types import (
    Choice,
    Completion,
    FinishReason,
    InferenceError,
    InferenceTimeout,
    InvalidRequest,
    ModelLoadError,
    ModelRef,
    Overloaded,
    Prompt,
    SamplingParams,
    StreamEvent,
    StreamItem,
    Usage,
)

if TYPE_CHECKING:
    from .backends.vllm import VllmRuntime
    from .remote import RemoteRuntime
    from .runtime import InferenceRuntime

__all__ = [
    "Choice",
    "Completion",
    "FinishReason",
    "InferenceError",
    "InferenceRuntime",
    "InferenceTimeout",
    "InvalidRequest",
    "ModelLoadError",
    "ModelRef",
    "Overloaded",
    "Prompt",
    "SamplingParams",
    "StreamEvent",
    "StreamItem",
    "Usage",
    "get_runtime",
    "local_runtime",
]

_runtime: InferenceRuntime | None = None
_runtime_config: tuple[Any, ...] = ()
_lock = threading.Lock()


def _config(settings: Any) -> tuple[Any, ...]:
    return (
        settings.data_dir,
        settings.inference_max_batch_size,
        settings.inference_gpu_max_batch_size,
        settings.inference_backend,
        settings.inference_max_queued,
        settings.inference_max_tokens,
        settings.inference_memory_budget_mb,
        settings.inference_request_timeout_s,
    )


def get_runtime(settings: Any) -> InferenceRuntime | VllmRuntime | RemoteRuntime:
    """The runtime this process sends local inference to: the `finetune inference` role's when
    ``FINETUNE_INFERENCE_URL`` is set (scaled out: one process per device holds the models), else its own."""
    if settings.inference_url:
        return _remote(settings)
    return local_runtime(settings)


_remotes: dict[tuple[str, int, float], RemoteRuntime] = {}


def _remote(settings: Any) -> RemoteRuntime:
    from .remote import RemoteRuntime

    key = (settings.inference_url, settings.inference_max_batch_size, settings.inference_request_timeout_s)
    with _lock:
        if key not in _remotes:
            _remotes[key] = RemoteRuntime.from_settings(settings)
        return _remotes[key]


def local_runtime(settings: Any) -> InferenceRuntime | VllmRuntime:
    """The process-wide in-process runtime, built from `settings` on first use. Settings with other inference values
    (tests run many configurations in one process) get a new runtime; the old one finishes what it runs and stops."""
    global _runtime, _runtime_config
    with _lock:
        config = _config(settings)
        if _runtime is not None and config != _runtime_config:
            old, _runtime = _runtime, None
            threading.Thread(target=old.close, kwargs={"drain": True}, name="inference-close", daemon=True).start()
        if _runtime is None:
            from service.errors import Unavailable
            from service.providers.local import is_available

            ok, reason = is_available()
            if not ok:
                raise Unavailable(f"local inference is not available here: {reason}", code="provider_unavailable")
            from .backends import runtime_from_settings

            try:
                _runtime, _runtime_config = runtime_from_settings(settings), config
            except ValueError as exc:  # FINETUNE_INFERENCE_BACKEND=vllm where vLLM cannot run
                raise Unavailable(
                    f"local inference is not available here: {exc}", code="provider_unavailable"
                ) from None
        return _runtime


def reset_runtime() -> None:
    """Shut the process-wide runtime down (tests, and settings changes in one process)."""
    global _runtime
    with _lock:
        runtime, _runtime = _runtime, None
    if runtime is not None:
        runtime.close()


def __getattr__(name: str) -> Any:
    if name == "InferenceRuntime":  # torch loads only when the runtime class is wanted
        from .runtime import InferenceRuntime

        return InferenceRuntime
    raise AttributeError(name)
