"""Many conversations answered by one local model (a base and an optional LoRA adapter): the batch interface that
evaluations and the demo's measurement use, on top of the inference runtime (``service.inference``), which does the
generation (continuous batching, adapters applied per request, the training chat template)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import BaseModelError, LocalTrainingError

if TYPE_CHECKING:
    from service.inference.calls import Runtime

    from .base_models import BaseModelSource


@dataclass(frozen=True)
class Generation:
    text: str
    input_tokens: int
    output_tokens: int = 0
    latency_s: float = 0.0  # from submitting this conversation to its last token
    finish_reason: Literal["stop", "length"] = "stop"


# Conversations one CPU batch holds when the caller names no batch size (a CPU gains little from wider batches and each
# answer waits longer); on a GPU the cap below which free memory sizes the batch (service.inference.capacity).
CPU_BATCH_SIZE = 16
GPU_BATCH_CAP = 256


def default_batch_size(device: str = "auto") -> int:
    import torch

    name = (device or "auto").strip().lower()
    on_gpu = (name == "auto" or name.startswith("cuda")) and torch.cuda.is_available()
    return GPU_BATCH_CAP if on_gpu else CPU_BATCH_SIZE


class LocalGenerator:
    """Loads the model when built; `generate` keeps up to `batch_size` conversations in the runtime's running batch
    (default: 16 on CPU; on a GPU as many as free memory holds, up to 256).

    Without `runtime` it makes a private one of `backend` (closed with the generator: vLLM when installed on a GPU,
    else transformers); evaluations pass the process-wide runtime so they share resident models and batches with the
    API's requests.
    """

    def __init__(
        self,
        base_model: str | BaseModelSource,
        adapter_path: str | Path | None = None,
        cache_dir: str | Path = ".cache/local-models",
        device: str = "auto",
        *,
        batch_size: int | None = None,
        num_threads: int | None = None,
        precision: Literal["auto", "fp32", "bf16"] = "auto",
        runtime: Runtime | None = None,
        backend: Literal["auto", "transformers", "vllm"] = "auto",
    ):
        from service.inference import ModelLoadError, ModelRef
        from service.inference.backends import make_runtime

        if batch_size is not None and batch_size < 1:
            raise LocalTrainingError("batch_size must be at least 1")
        self._owns_runtime = runtime is None
        if runtime is None:
            try:
                runtime = make_runtime(
                    backend,
                    cache_dir=Path(cache_dir),
                    max_batch_size=batch_size or default_batch_size(device),
                    device=device,
                    precision=precision,
                    num_threads=num_threads,
                    request_timeout_s=24 * 3600,
                )
            except ValueError as exc:  # backend vllm where it cannot run
                raise LocalTrainingError(str(exc)) from None
        self.runtime = runtime
        self.batch_size = min(batch_size or runtime.max_batch_size, runtime.max_batch_size)
        self.model = ModelRef(base_model, Path(adapter_path) if adapter_path is not None else None)
        started = time.perf_counter()
        try:
            base = runtime.load(self.model)
        except ModelLoadError as exc:
            self.close()
            raise BaseModelError(exc.message) from None
        self.load_seconds = time.perf_counter() - started
        self.tokenizer = base.tokenizer
        self.encoder = base.encoder
        self.eos_token_ids = sorted(base.eos_ids)

    def generate(
        self,
        conversations: Sequence[Sequence[dict[str, Any]]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        *,
        seed: int | None = None,
    ) -> list[Generation]:
        """One Generation per conversation, in order. Greedy at temperature 0; sampling is seeded when `seed` is set."""
        from service.inference import SamplingParams

        if max_new_tokens < 1:
            raise LocalTrainingError("max_new_tokens must be at least 1")
        if temperature < 0:
            raise LocalTrainingError("temperature must be >= 0")
        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed)
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=min(self.batch_size, len(conversations))) as pool:
            return list(pool.map(lambda messages: self._one(list(messages), params), conversations))

    def _one(self, messages: list[dict[str, Any]], params: Any) -> Generation:
        from service.inference import InvalidRequest, Overloaded

        started = time.perf_counter()
        while True:
            try:
                completion = self.runtime.generate(self.model, messages, params)
                break
            except Overloaded as exc:  # the shared runtime is busy with API requests: wait for room, lose nothing
                time.sleep(min(exc.retry_after_s, 5.0))
            except InvalidRequest as exc:
                raise LocalTrainingError(exc.message) from None
        choice = completion.choices[0]
        return Generation(
            text=choice.text,
            input_tokens=completion.prompt_tokens,
            output_tokens=completion.completion_tokens,
            latency_s=time.perf_counter() - started,
            finish_reason=choice.finish_reason,
        )

    def close(self) -> None:
        if self._owns_runtime:
            self.runtime.close()

    def __del__(self) -> None:
        if getattr(self, "_owns_runtime", False):
            self.runtime.close()
