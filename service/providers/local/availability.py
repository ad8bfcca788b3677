"""Whether the optional `local` extra is installed, checked without importing torch (which takes seconds)."""

from __future__ import annotations

import importlib.util

# Import names of the packages the trainer needs, in the order we report them.
REQUIRED_MODULES: tuple[str, ...] = ("torch", "transformers", "peft", "safetensors")
GGUF_MODULE = "gguf"
INSTALL_HINT = "install the local extra: pip install 'finetune-control-plane[local]'"


def missing_modules(names: tuple[str, ...] = REQUIRED_MODULES) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def is_available() -> tuple[bool, str | None]:
    """(True, None) when local training can run here, else (False, a reason that names the fix)."""
    missing = missing_modules()
    if missing:
        return False, f"The local provider needs {', '.join(missing)}: {INSTALL_HINT}"
    return True, None


def require_available() -> None:
    from .errors import LocalProviderUnavailable

    ok, reason = is_available()
    if not ok:
        raise LocalProviderUnavailable(reason)


def require_gguf() -> None:
    from .errors import LocalProviderUnavailable

    if missing_modules((GGUF_MODULE,)):
        raise LocalProviderUnavailable(f"Loading a GGUF base model needs the 'gguf' package: {INSTALL_HINT}")
