"""Resident base models and the LoRA adapters loaded onto them, within one memory budget.

Several fine-tunes of one base share it: each adapter is loaded once into a peft wrapper of the base under its own name,
and a batch mixes them row by row (peft's ``adapter_names``), rows without an adapter using the base alone. Bases and
adapters that no running or waiting request uses are unloaded, least recently used first, when a new one would not fit.
Sizes are the weights' bytes (the KV cache of running requests is not counted).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .types import ModelLoadError, ModelRef

log = logging.getLogger(__name__)

BASE_ROW = "__base__"  # peft's name for "no adapter" in a mixed batch
_NO_TRUNCATION = 1 << 30  # prompts are never truncated; this only bounds the encoder, which truncates training data


def weights_bytes(module: Any) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def adapter_name(path: Path) -> str:
    # peft adapter names become module keys: no dots or slashes.
    return "a" + hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]


def check_adapter_folder(ref: ModelRef) -> None:
    assert ref.adapter_path is not None
    if not (Path(ref.adapter_path) / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"{ref.who} cannot be loaded: its adapter is not a PEFT adapter folder (no adapter_config.json)"
        )


@dataclass
class Adapter:
    name: str
    path: Path
    nbytes: int
    last_used: float = field(default_factory=time.monotonic)


class ResidentBase:
    """One loaded base model, its tokenizer and chat encoder, and the adapters applied to it."""

    def __init__(self, key: str, loaded: Any, device: Any):
        from service.providers.local.chat_data import ChatEncoder

        self.key = key
        self.device = device
        self.model = loaded.model
        self.model.eval()
        self.tokenizer = loaded.tokenizer
        self.tokenizer_lock = threading.Lock()
        try:
            self.encoder: Any = ChatEncoder(self.tokenizer, _NO_TRUNCATION)
        except Exception as exc:  # no chat template: the base still serves raw-text completions
            self.encoder = None
            self.encoder_error = str(exc)
        eos = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos.update(configured if isinstance(configured, list) else [configured])
        self.eos_ids = frozenset(token for token in eos if token is not None)
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        self.nbytes = weights_bytes(self.model)
        # transformers 5 renames the forward argument `past_key_values` to `cache` model by model.
        self.cache_kwarg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.peft: Any = None
        self.adapters: OrderedDict[str, Adapter] = OrderedDict()
        self.last_used = time.monotonic()

    @property
    def total_bytes(self) -> int:
        return self.nbytes + sum(a.nbytes for a in self.adapters.values())

    @property
    def forward(self) -> Any:
        return self.peft if self.peft is not None else self.model

    def load_adapter(self, ref: ModelRef) -> Adapter:
        """Load the adapter of `ref` (the caller made room for it). Runs between decode steps, never during one."""
        assert ref.adapter_path is not None
        name = adapter_name(ref.adapter_path)
        if name in self.adapters:
            adapter = self.adapters[name]
            adapter.last_used = time.monotonic()
            self.adapters.move_to_end(name)
            return adapter
        check_adapter_folder(ref)
        from peft import PeftModel

        before = weights_bytes(self.peft or self.model)
        try:
            with warnings.catch_warnings():
                # peft reads a transformers property that transformers 5 deprecated; nothing for us to change.
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                if self.peft is None:
                    self.peft = PeftModel.from_pretrained(self.model, str(ref.adapter_path), adapter_name=name)
                else:
                    self.peft.load_adapter(str(ref.adapter_path), adapter_name=name)
        except Exception as exc:
            log.warning("adapter %s for %s failed to load: %s", ref.adapter_path, self.key, exc)
            self._forget(name)
            raise ModelLoadError(
                f"{ref.who} cannot be loaded: its adapter cannot be applied to its base model"
            ) from None
        self.peft.eval()
        adapter = Adapter(name=name, path=Path(ref.adapter_path), nbytes=weights_bytes(self.peft) - before)
        self.adapters[name] = adapter
        return adapter

    def unload_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)
        self._forget(name)

    def _forget(self, name: str) -> None:
        if self.peft is None:
            return
        if name in getattr(self.peft, "peft_config", {}):
            with warnings.catch_warnings():
                # "adapter X was active which is now deleted": rows choose their adapter, so nothing is active.
                warnings.filterwarnings("ignore", message=".*which is now deleted.*", category=UserWarning)
                self.peft.delete_adapter(name)
        if not self.peft.peft_config:
            # The last adapter is gone: take the LoRA layers out so the base runs as it was loaded.
            self.model = self.peft.unload()
            self.peft = None


class ModelPool:
    """Bases by key; loads one on first use (callers of the same base share one load)."""

    def __init__(self, *, cache_dir: Path, budget_bytes: int, device: str, precision: str, num_threads: int | None):
        self.cache_dir = Path(cache_dir)
        self.budget_bytes = budget_bytes
        self._device_name = device
        self._precision = precision
        self._num_threads = num_threads
        self._lock = threading.Lock()
        self._bases: OrderedDict[str, ResidentBase] = OrderedDict()
        self._loading: dict[str, Future[ResidentBase]] = {}
        self._device: Any = None
        self._dtype: Any = None

    def resident(self) -> list[ResidentBase]:
        with self._lock:
            return list(self._bases.values())

    def used_bytes(self) -> int:
        with self._lock:
            return sum(base.total_bytes for base in self._bases.values())

    def get(self, ref: ModelRef, in_use: Callable[[str], bool]) -> ResidentBase:
        key = ref.base_key
        with self._lock:
            base = self._bases.get(key)
            if base is not None:
                self._bases.move_to_end(key)
                base.last_used = time.monotonic()
                return base
            future = self._loading.get(key)
            owner = future is None
            if owner:
                future = self._loading[key] = Future()
        assert future is not None
        if not owner:
            return future.result()
        try:
            base = self._load(ref)
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            future.set_exception(exc)
            raise
        with self._lock:
            self._bases[key] = base
            del self._loading[key]
        self.trim(in_use, keep=key)
        future.set_result(base)
        return base

    def reinstate(self, base: ResidentBase) -> None:
        """A base evicted while a request for it was being prepared comes back (its object is still loaded)."""
        with self._lock:
            self._bases.setdefault(base.key, base)
            self._bases.move_to_end(base.key)

    def trim(self, in_use: Callable[[str], bool], keep: str | None = None) -> list[str]:
        """Unload idle bases, least recently used first, while over the budget. Returns the keys unloaded."""
        dropped = []
        with self._lock:
            for key in list(self._bases):
                if sum(b.total_bytes for b in self._bases.values()) <= self.budget_bytes:
                    break
                if key != keep and not in_use(key):
                    del self._bases[key]
                    dropped.append(key)
        if dropped:
            import gc

            gc.collect()
            log.info("inference: unloaded base models %s to stay within the memory budget", dropped)
        return dropped

    def make_room_for_adapter(self, base: ResidentBase, nbytes: int, busy: set[str]) -> None:
        """Unload idle adapters of `base` (least recently used first), then idle other bases, to fit `nbytes` more."""
        for name in list(base.adapters):
            if self.used_bytes() + nbytes <= self.budget_bytes:
                return
            if name not in busy:
                base.unload_adapter(name)
                log.info("inference: unloaded adapter %s of %s to stay within the memory budget", name, base.key)

    def _load(self, ref: ModelRef) -> ResidentBase:
        from service.providers.local.availability import require_available
        from service.providers.local.base_models import load_base_model, resolve_base_model
        from service.providers.local.errors import LocalTrainingError
        from service.providers.local.runtime import configure_threads, select_device, select_precision

        try:
            require_available()
            if self._device is None:
                device = select_device(self._device_name)
                if device.type == "cpu":
                    configure_threads(self._num_threads)
                self._dtype = select_precision(self._precision, device)[1]
                self._device = device
            loaded = load_base_model(
                resolve_base_model(ref.base_model), cache_dir=self.cache_dir, device=self._device, dtype=self._dtype
            )
            base = ResidentBase(ref.base_key, loaded, self._device)
        except LocalTrainingError as exc:
            log.warning("base model %s failed to load: %s", ref.base_key, exc)
            raise ModelLoadError(f"{ref.who} cannot be loaded: its base model failed to load") from None
        if base.nbytes > self.budget_bytes:
            raise ModelLoadError(
                f"{ref.who} cannot be loaded: its base model needs {base.nbytes / 2**20:.0f} MB, more than the inference memory "
                f"budget ({self.budget_bytes / 2**20:.0f} MB)"
            )
        log.info("inference: loaded base model %s in %.1fs", ref.base_key, loaded.load_seconds)
        return base
