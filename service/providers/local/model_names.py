"""Which model names the local provider trains, for requests that name only a model (the OpenAI-shaped routes)."""

from __future__ import annotations


def claims_local_model(name: str) -> bool:
    """Packaged aliases, Hugging Face ids (``org/name``) and folders; hosted providers' names never contain '/'."""
    from .base_models import PACKAGED_GGUF_ALIASES

    return name in PACKAGED_GGUF_ALIASES or "/" in name


def packaged_base_models() -> list[tuple[str, int]]:
    """(alias, created) of the packaged base models that are installed; created is the weights file's date."""
    from .base_models import PACKAGED_GGUF_ALIASES, packaged_gguf_path
    from .errors import BaseModelError

    out = []
    for alias in sorted(PACKAGED_GGUF_ALIASES):
        try:
            out.append((alias, int(packaged_gguf_path(alias).stat().st_mtime)))
        except (BaseModelError, OSError):
            continue
    return out
