"""Local inference for evaluations: batched greedy (or sampled) chat generation with a base model and an optional
LoRA adapter, using the same chat template and tokenization as training."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .availability import require_available
from .errors import BaseModelError, LocalTrainingError

# Prompts are never truncated for inference; this only bounds the encoder, which truncates training examples.
_NO_TRUNCATION = 1 << 30


@dataclass(frozen=True)
class Generation:
    text: str
    input_tokens: int
    output_tokens: int = 0
    latency_s: float = 0.0  # wall time of the batch this prompt was generated in
    finish_reason: Literal["stop", "length"] = "stop"


class LocalGenerator:
    """Loads the model once; `generate` answers many conversations in left-padded batches."""

    def __init__(
        self,
        base_model: str,
        adapter_path: str | Path | None = None,
        cache_dir: str | Path = ".cache/local-models",
        device: str = "auto",
        *,
        batch_size: int = 16,
        num_threads: int | None = None,
        precision: Literal["auto", "fp32", "bf16"] = "auto",
    ):
        require_available()
        import torch

        from .base_models import load_base_model, resolve_base_model
        from .chat_data import ChatEncoder
        from .runtime import configure_threads, select_device, select_precision

        if batch_size < 1:
            raise LocalTrainingError("batch_size must be at least 1")
        self.device = select_device(device)
        self.precision, dtype = select_precision(precision, self.device)
        if self.device.type == "cpu":
            configure_threads(num_threads)
        self.batch_size = batch_size
        loaded = load_base_model(
            resolve_base_model(base_model), cache_dir=Path(cache_dir), device=self.device, dtype=dtype
        )
        model = loaded.model
        if adapter_path is not None:
            model = _apply_adapter(model, Path(adapter_path))
        model.eval()
        self.model = model
        self.tokenizer = loaded.tokenizer
        self.encoder = ChatEncoder(self.tokenizer, _NO_TRUNCATION)
        self.load_seconds = loaded.load_seconds
        eos = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos.update(configured if isinstance(configured, list) else [configured])
        self.eos_token_ids = sorted(token for token in eos if token is not None)
        self._torch = torch

    def generate(
        self,
        conversations: Sequence[Sequence[dict[str, Any]]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        *,
        seed: int | None = None,
    ) -> list[Generation]:
        """One Generation per conversation, in order. Greedy at temperature 0; sampling is seeded when `seed` is set."""
        torch = self._torch
        if max_new_tokens < 1:
            raise LocalTrainingError("max_new_tokens must be at least 1")
        if temperature < 0:
            raise LocalTrainingError("temperature must be >= 0")
        prompts = [self.encoder.encode_prompt(list(messages)) for messages in conversations]
        if seed is not None:
            torch.manual_seed(seed)
        # Similar lengths in one batch keep left padding short; results go back to the caller's order.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for index, generation in zip(
                chunk, self._generate_batch([prompts[i] for i in chunk], max_new_tokens, temperature), strict=True
            ):
                results[index] = generation
        return [generation for generation in results if generation is not None]

    def _generate_batch(self, prompts: list[list[int]], max_new_tokens: int, temperature: float) -> list[Generation]:
        torch = self._torch
        from transformers import GenerationConfig

        pad_id = int(self.tokenizer.pad_token_id)
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor(
            [[pad_id] * (width - len(p)) + p for p in prompts], dtype=torch.long, device=self.device
        )
        attention_mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long, device=self.device
        )
        sampling = temperature > 0
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=1.0 if sampling else None,
            top_k=0 if sampling else None,
            eos_token_id=self.eos_token_ids,
            pad_token_id=pad_id,
        )
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        latency = time.perf_counter() - started
        generations = []
        stops = set(self.eos_token_ids)
        for row, prompt in zip(output[:, width:].tolist(), prompts, strict=True):
            end = next((i for i, token in enumerate(row) if token in stops), None)
            content = row if end is None else row[:end]
            generations.append(
                Generation(
                    text=self.tokenizer.decode(content, skip_special_tokens=True),
                    input_tokens=len(prompt),
                    output_tokens=len(row) if end is None else end + 1,
                    latency_s=latency,
                    finish_reason="length" if end is None else "stop",
                )
            )
        return generations


def _apply_adapter(model: Any, adapter_path: Path) -> Any:
    from peft import PeftModel

    if not (adapter_path / "adapter_config.json").is_file():
        raise BaseModelError(f"{adapter_path} is not a PEFT adapter folder (no adapter_config.json)")
    with warnings.catch_warnings():
        # peft reads a transformers property that transformers 5 deprecated; nothing for us to change.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(model, str(adapter_path))
    # Merged weights make generation as fast as the base model's.
    return peft_model.merge_and_unload()
