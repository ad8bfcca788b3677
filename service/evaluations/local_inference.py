"""Local models loaded once per worker process: loading a base model (and converting a GGUF file) takes seconds to
minutes, so consecutive candidates and evaluations reuse it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from service.settings import Settings

_MAX_LOADED = 2
_cache: OrderedDict[tuple[str, str | None], Any] = OrderedDict()
_lock = threading.Lock()


def generator_for(settings: Settings, base_model: str, adapter_path: Path | None) -> Any:
    """A ``LocalGenerator`` for the base model with the adapter (least recently used ones are dropped)."""
    from service.errors import Unavailable
    from service.providers.local import is_available

    ok, reason = is_available()
    if not ok:
        raise Unavailable(f"local inference is not available here: {reason}", code="provider_unavailable")
    from service.providers.local.inference import LocalGenerator

    key = (base_model, str(adapter_path) if adapter_path is not None else None)
    with _lock:
        generator = _cache.get(key)
        if generator is not None:
            _cache.move_to_end(key)
            return generator
        generator = LocalGenerator(base_model, adapter_path=adapter_path, cache_dir=settings.data_dir / "cache")
        _cache[key] = generator
        while len(_cache) > _MAX_LOADED:
            _cache.popitem(last=False)
        return generator
