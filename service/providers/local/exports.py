"""Exports of a finished local fine-tune in the forms other servers load, each an immutable folder beside the run.

- ``vllm``: the PEFT adapter as vLLM (``--lora-modules NAME=PATH``) and SGLang (``--lora-paths NAME=PATH``) load it,
  under ``adapter/``; a base that is not a Hugging Face id (a local folder, or a GGUF file dequantised for training)
  comes along as ``base/`` (safetensors), because LoRA weights only mean something on the exact weights they were
  trained on.
- ``ollama``: a ``Modelfile`` (``FROM`` the base, ``ADAPTER`` the safetensors adapter), the adapter, and the base:
  the GGUF file itself when training started from one (the dequantised weights it trained on are that file's), else
  the base's safetensors folder. ``ollama create NAME -f Modelfile`` reads it as it is.
- ``merged``: the base with the adapter merged in, a full model folder transformers and vLLM load. The trainer writes
  it when asked (``merge_adapter``); otherwise it is computed here from base + adapter, which loads the whole model, so
  it is built outside the request that asks for it (``start_export``) and the artifact appears when it is complete.

- ``gguf``: for a fine-tune of a GGUF base (the default alias is one), that file with the adapter merged into the
  tensors it touches (written as F16; every other tensor and all metadata, tokenizer included, copied as they are),
  plus a Modelfile: llama.cpp (``llama-server -m``) and Ollama load it. Built with the ``gguf`` package (ggml-org's
  own reader, writer, quantisation and tensor-name map), the way its ``gguf_new_metadata`` script rewrites a file.
  Other bases have no GGUF export: making one from safetensors needs llama.cpp's per-architecture converter
  (``convert_hf_to_gguf.py`` / ``convert_lora_to_gguf.py``: tokenizer vocabularies, hyperparameter keys, tensor
  layouts), which ships only as scripts in the llama.cpp repository, in no maintained package; the Ollama bundle needs
  none (Ollama converts the safetensors adapter itself at ``ollama create``).

Names: vLLM and SGLang take any string, so the fine-tune keeps its OpenAI-format name (``ft:...``) there; Ollama's
names allow no ``:`` inside the model part, so it gets ``ollama_name``. Nothing here imports torch at module level: the
API lists exports without the ``local`` extra; building ``merged`` (and dequantising a GGUF base) needs it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from .base_models import BaseModelSource, converted_gguf_dir, resolve_base_model
from .checkpoints import atomic_write_text
from .errors import LocalTrainingError

ExportFormat = Literal["vllm", "ollama", "merged", "gguf"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
ExportState = Literal["not_started", "building", "ready", "failed"]

ADAPTER_DIR = "adapter"  # the trainer's output/adapter, and the adapter inside a bundle
MERGED_DIR = "merged"  # the same folder the trainer writes with merge_adapter
EXPORTS_DIR = "exports"  # output/exports/<format> for the bundles, with their locks and error reports
MODELFILE = "Modelfile"
GGUF_FILE = "model.gguf"
# GGUF architectures whose tensor layout we reproduce, and verify against transformers' reader: llama.cpp's converter
# stores llama's q/k projections with the rotary halves interleaved per head, so a delta is permuted the same way.
GGUF_PERMUTED_QK = {"llama": True}
USAGE_FILE = "USAGE.md"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# A base folder carries weights in several formats at times; a bundle needs the safetensors and what describes them.
_BASE_SKIP_SUFFIXES = (".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".ckpt", ".onnx")
_OLLAMA_UNSAFE = re.compile(r"[^a-z0-9_.-]+")
# vLLM serves adapters up to --max-lora-rank (default 16) and refuses larger ones unless told.
VLLM_DEFAULT_MAX_LORA_RANK = 16
_LOCK_WAIT_S = 1.0


class ExportError(LocalTrainingError):
    """An export cannot be built (no adapter yet, base weights not here); the message says what to do."""


@dataclass(frozen=True)
class ExportTarget:
    """What an export is of: the run's output folder, the fine-tune's name and where base models are converted."""

    output_dir: Path
    model_name: str  # OpenAI-format name, ``ft:...``
    cache_dir: Path
    # Run by the builder once the export is in place, still under its lock (the API computes the download's checksum
    # there, so the first request for a large export does not).
    on_ready: Callable[[], object] | None = None

    @property
    def adapter_dir(self) -> Path:
        return self.output_dir / ADAPTER_DIR

    def adapter_config(self) -> dict:
        path = self.adapter_dir / "adapter_config.json"
        if not path.is_file():
            raise ExportError("This job has no adapter yet: exports exist once the job has succeeded")
        return json.loads(path.read_text())

    def base_spec(self) -> str:
        # The trainer records the base exactly as the job named it (alias, file, folder or Hub id).
        spec = self.adapter_config().get("base_model_name_or_path")
        if not spec:
            raise ExportError(f"{self.adapter_dir}/adapter_config.json names no base model")
        return str(spec)


@dataclass(frozen=True)
class ExportStatus:
    format: ExportFormat
    state: ExportState
    path: Path | None = None  # the folder, when ready
    error: str | None = None
    failed_at: datetime | None = None


def export_path(output_dir: Path, fmt: ExportFormat) -> Path:
    return output_dir / MERGED_DIR if fmt == "merged" else output_dir / EXPORTS_DIR / fmt


# The file whose presence says an export's folder is one (folders are renamed into place whole).
_READY_MARKERS: dict[ExportFormat, str] = {
    "vllm": f"{ADAPTER_DIR}/adapter_config.json",
    "ollama": MODELFILE,
    "merged": "config.json",
    "gguf": GGUF_FILE,
}


def ready_marker(fmt: ExportFormat) -> str:
    return _READY_MARKERS[fmt]


def ollama_name(model_name: str) -> str:
    """The fine-tune's name as Ollama accepts one (``model:tag``, lowercase, no ``:`` inside the model part): the
    fields of the ``ft:`` name joined by ``-``, tagged with the job id, e.g. ``ft-smollm2-acme-demo:job_01h...``."""
    fields = [f for f in model_name.lower().split(":") if f]
    tag = _OLLAMA_UNSAFE.sub("-", fields.pop()) if len(fields) > 1 else "latest"
    model = _OLLAMA_UNSAFE.sub("-", "-".join(fields)).strip("-.") or "fine-tune"
    return f"{model[:80].rstrip('-.')}:{tag[:80]}"


# ----- commands a user runs with each export (also written into the bundle's USAGE.md) -----


def usage_commands(fmt: ExportFormat, *, model_name: str, base: str, archive: str, lora_rank: int | None) -> list[str]:
    """Shell commands, run where the archive was downloaded. `base` is what the server loads (a Hub id or a path)."""
    unpack = f"tar xf {shlex.quote(archive)}"
    if fmt == "vllm":
        lora = shlex.quote(f"{model_name}=vllm/{ADAPTER_DIR}")
        rank = f" --max-lora-rank {lora_rank}" if lora_rank and lora_rank > VLLM_DEFAULT_MAX_LORA_RANK else ""
        return [
            unpack,
            f"vllm serve {shlex.quote(base)} --enable-lora --lora-modules {lora}{rank}",
            f"python -m sglang.launch_server --model-path {shlex.quote(base)} --enable-lora --lora-paths {lora}"
            + (f" --max-lora-rank {lora_rank}" if lora_rank else ""),
        ]
    if fmt == "ollama":
        name = ollama_name(model_name)
        return [unpack, f"cd ollama && ollama create {name} -f {MODELFILE}", f"ollama run {name}"]
    if fmt == "gguf":
        name = ollama_name(model_name)
        return [unpack, f"llama-server -m gguf/{GGUF_FILE}", f"cd gguf && ollama create {name} -f {MODELFILE}"]
    return [
        unpack,
        'python -c "from transformers import pipeline; '
        "print(pipeline('text-generation', model='merged')([{'role': 'user', 'content': 'Hello'}]))\"",
        f"vllm serve merged --served-model-name {shlex.quote(model_name)}",
    ]


def export_commands(output_dir: Path, fmt: ExportFormat, *, model_name: str, archive: str) -> list[str]:
    """The commands for a ready export, read from what was built (the base a vLLM bundle names, the adapter's rank)."""
    if fmt != "vllm":
        return usage_commands(fmt, model_name=model_name, base="merged", archive=archive, lora_rank=None)
    config = json.loads((export_path(output_dir, "vllm") / ADAPTER_DIR / "adapter_config.json").read_text())
    return usage_commands(
        "vllm", model_name=model_name, base=config["base_model_name_or_path"], archive=archive, lora_rank=config.get("r")
    )


# ----- building -----


def _place(final: Path, write: Callable[[Path], None]) -> Path:
    """Write a folder whole under a temporary name, then rename it into place: a listed export is always complete."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _link_or_copy(source: Path, target: Path) -> None:
    # Base weights are gigabytes: a hard link costs nothing and the source is never rewritten in place.
    try:
        os.link(source.resolve(), target)
    except OSError:
        shutil.copy2(source.resolve(), target)


def _copy_adapter(adapter_dir: Path, target: Path, *, base_model_name_or_path: str) -> None:
    target.mkdir()
    for child in sorted(adapter_dir.iterdir()):
        if child.is_file() and child.name != "adapter_config.json":
            _link_or_copy(child, target / child.name)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_model_name_or_path
    (target / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    missing = [name for name in ADAPTER_FILES if not (target / name).is_file()]
    if missing:
        raise ExportError(f"The adapter in {adapter_dir} lacks {', '.join(missing)}")


def _copy_base_folder(folder: Path, target: Path) -> None:
    target.mkdir()
    for child in sorted(folder.iterdir()):
        if child.is_file() and not child.name.endswith(_BASE_SKIP_SUFFIXES) and child.name != "manifest.json":
            _link_or_copy(child, target / child.name)
    if not any(p.suffix == ".safetensors" for p in target.iterdir()):
        raise ExportError(f"Base model folder {folder} has no safetensors weights to bundle")


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as exc:  # not in this machine's Hugging Face cache
        raise ExportError(f"Base model {repo_id} is not in this machine's Hugging Face cache: {exc}") from exc


def _dequantised_base(source: BaseModelSource, cache_dir: Path) -> Path:
    """The safetensors folder the trainer loaded for a GGUF base (converted on first use, cached)."""
    folder = converted_gguf_dir(Path(source.location), cache_dir)
    if not (folder / "manifest.json").is_file():
        from .base_models import convert_gguf

        folder = convert_gguf(Path(source.location), cache_dir)[0]
    return folder


def _usage_text(title: str, commands: list[str], notes: list[str]) -> str:
    body = "\n".join(commands)
    return f"# {title}\n\n" + "".join(f"{n}\n\n" for n in notes) + f"```sh\n{body}\n```\n"


def build_vllm(target: ExportTarget, archive: str) -> Path:
    source = resolve_base_model(target.base_spec())
    rank = target.adapter_config().get("r")

    def write(tmp: Path) -> None:
        if source.kind == "hub":
            base = source.location
        else:
            folder = Path(source.location) if source.kind == "folder" else _dequantised_base(source, target.cache_dir)
            _copy_base_folder(folder, tmp / "base")
            base = "vllm/base"
        _copy_adapter(target.adapter_dir, tmp / ADAPTER_DIR, base_model_name_or_path=base)
        commands = usage_commands("vllm", model_name=target.model_name, base=base, archive=archive, lora_rank=rank)
        notes = [f"LoRA adapter of `{target.model_name}`, trained on `{source.spec}`."]
        if source.kind != "hub":
            notes.append("`base/` holds the exact weights it was trained on; serve the adapter on those.")
        (tmp / USAGE_FILE).write_text(_usage_text(f"Serving {target.model_name} with vLLM or SGLang", commands, notes))

    return _place(export_path(target.output_dir, "vllm"), write)


def modelfile_text(*, from_: str, adapter: str | None, chat_template: str | None, model_name: str) -> str:
    """A Modelfile per Ollama's reference: instructions (case-insensitive) with their arguments; multi-line values in
    triple quotes. A ChatML chat template becomes Ollama's TEMPLATE and stop words; other templates are left to
    Ollama, which reads the base's own template when it imports the base."""
    lines = [f"# {model_name}", f"FROM {from_}", *([f"ADAPTER {adapter}"] if adapter else [])]
    if chat_template and "<|im_start|>" in chat_template and "<|im_end|>" in chat_template:
        lines += [
            # Ollama gives the system prompt as .System and may list it among .Messages too: it is written once.
            'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
            '{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
            '{{ end }}{{ end }}<|im_start|>assistant\n"""',
            'PARAMETER stop "<|im_end|>"',
            'PARAMETER stop "<|im_start|>"',
        ]
    return "\n".join(lines) + "\n"


def _chat_template(adapter_dir: Path) -> str | None:
    for name in ("chat_template.jinja", "tokenizer_config.json"):
        path = adapter_dir / name
        if path.is_file():
            text = path.read_text()
            if name.endswith(".json"):
                template = json.loads(text).get("chat_template")
                return template if isinstance(template, str) else None
            return text
    return None


def build_ollama(target: ExportTarget, archive: str) -> Path:
    source = resolve_base_model(target.base_spec())

    def write(tmp: Path) -> None:
        if source.kind == "gguf":
            base = "./base.gguf"
            _link_or_copy(Path(source.location), tmp / "base.gguf")
        else:
            folder = Path(source.location) if source.kind == "folder" else _hub_snapshot(source.location)
            base = "./base"
            _copy_base_folder(folder, tmp / "base")
        _copy_adapter(target.adapter_dir, tmp / ADAPTER_DIR, base_model_name_or_path=base)
        modelfile = modelfile_text(
            from_=base,
            adapter=f"./{ADAPTER_DIR}",
            chat_template=_chat_template(target.adapter_dir),
            model_name=target.model_name,
        )
        (tmp / MODELFILE).write_text(modelfile)
        commands = usage_commands("ollama", model_name=target.model_name, base=base, archive=archive, lora_rank=None)
        notes = [
            f"`{target.model_name}` for Ollama: the base it was trained on (`{source.spec}`) and its LoRA adapter.",
            "Ollama imports safetensors adapters for Llama, Mistral and Gemma architectures.",
        ]
        (tmp / USAGE_FILE).write_text(_usage_text(f"Running {target.model_name} with Ollama", commands, notes))

    return _place(export_path(target.output_dir, "ollama"), write)


def build_merged(target: ExportTarget, archive: str) -> Path:
    """The base with the adapter merged in, in the base's own precision (merged in float32 for exactness)."""
    import torch
    from peft import PeftModel

    from .base_models import load_base_model

    source = resolve_base_model(target.base_spec())
    loaded = load_base_model(source, cache_dir=target.cache_dir, device=torch.device("cpu"), dtype=torch.float32)
    with torch.no_grad():
        merged = PeftModel.from_pretrained(loaded.model, str(target.adapter_dir)).merge_and_unload()
    saved_dtype = getattr(merged.config, "dtype", None) or getattr(merged.config, "torch_dtype", None)
    if saved_dtype in (torch.float16, torch.bfloat16, "float16", "bfloat16"):
        merged = merged.to(getattr(torch, str(saved_dtype).removeprefix("torch.")))

    def write(tmp: Path) -> None:
        merged.save_pretrained(str(tmp))
        # The adapter folder holds the tokenizer the run trained with (chat template included).
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(target.adapter_dir)).save_pretrained(str(tmp))
        commands = usage_commands("merged", model_name=target.model_name, base="merged", archive=archive, lora_rank=None)
        notes = [f"`{target.model_name}` merged into its base `{source.spec}`: a complete model folder."]
        (tmp / USAGE_FILE).write_text(_usage_text(f"Loading {target.model_name}", commands, notes))

    return _place(export_path(target.output_dir, "merged"), write)


def _gguf_base(target: ExportTarget) -> BaseModelSource:
    source = resolve_base_model(target.base_spec())
    if source.kind != "gguf":
        raise ExportError(
            f"A GGUF export is made from a GGUF base model; this fine-tune's base '{source.spec}' is a {source.kind} "
            "model, and converting safetensors to GGUF needs llama.cpp's convert_hf_to_gguf.py (no maintained package "
            "ships it): run it on the merged export"
        )
    return source


def _lora_deltas(adapter_dir: Path, config: dict) -> dict[str, Any]:
    """{transformers weight name: scale * B @ A} (float32 numpy) for every LoRA pair of a plain LoRA adapter."""
    import numpy as np
    from safetensors.numpy import load_file

    if config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern") or config.get("modules_to_save"):
        raise ExportError("A GGUF export merges plain LoRA adapters only (no DoRA, per-module ranks or saved modules)")
    rank = int(config["r"])
    scale = float(config["lora_alpha"]) / (rank**0.5 if config.get("use_rslora") else rank)
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    deltas: dict[str, Any] = {}
    for key, a in weights.items():
        if not key.endswith(".lora_A.weight"):
            if not key.endswith(".lora_B.weight"):
                raise ExportError(f"A GGUF export merges LoRA weights only; the adapter also has {key}")
            continue
        module = key.removesuffix(".lora_A.weight").removeprefix("base_model.model.")
        b = weights[key.replace(".lora_A.", ".lora_B.")]
        deltas[f"{module}.weight"] = scale * (b.astype(np.float32) @ a.astype(np.float32))
    return deltas


def _permute_rows(weights: Any, n_head: int) -> Any:
    # llama.cpp's LlamaModel.permute: within each head, the two rotary halves are interleaved.
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape
    )


def merge_into_gguf(base_gguf: Path, deltas: dict[str, Any], out: Path) -> list[str]:
    """Write `base_gguf` to `out` with each delta (keyed by transformers weight name) added to its tensor, which is
    written as F16; returns the GGUF names changed. One tensor is in memory at a time."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(base_gguf))
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    if arch not in GGUF_PERMUTED_QK:
        raise ExportError(f"A GGUF export supports the {', '.join(GGUF_PERMUTED_QK)} architecture; {base_gguf} is {arch}")
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)

    def field(key: str, default: Any = None) -> Any:
        found = reader.fields.get(key.format(arch=arch))
        return found.contents() if found is not None else default

    n_head = int(field(gguf.Keys.Attention.HEAD_COUNT))
    n_head_kv = int(field(gguf.Keys.Attention.HEAD_COUNT_KV, n_head))
    names = gguf.get_tensor_name_map(arch_id, int(field(gguf.Keys.LLM.BLOCK_COUNT)))
    by_gguf: dict[str, Any] = {}
    for hf_name, delta in deltas.items():
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        if name is None:
            raise ExportError(f"{base_gguf} has no tensor for the adapted weight {hf_name}")
        if GGUF_PERMUTED_QK[arch] and name.endswith(("attn_q.weight", "attn_k.weight")):
            delta = _permute_rows(delta, n_head if name.endswith("attn_q.weight") else n_head_kv)
        by_gguf[name] = delta
    tensors = {t.name: t for t in reader.tensors}
    if missing := sorted(set(by_gguf) - set(tensors)):
        raise ExportError(f"{base_gguf} lacks the tensors {', '.join(missing[:5])}")

    writer = gguf.GGUFWriter(str(out), arch)
    for f in reader.fields.values():
        # As gguf_new_metadata does: the writer adds the architecture and the GGUF.* header fields itself.
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue
        kind = f.types[0]
        writer.add_key_value(f.name, f.contents(), kind, sub_type=f.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    for t in reader.tensors:
        if t.name in by_gguf:
            shape = by_gguf[t.name].shape
            writer.add_tensor_info(t.name, shape, np.dtype(np.float16), int(np.prod(shape)) * 2)
        else:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        if t.name in by_gguf:
            merged = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32) + by_gguf[t.name]
            writer.write_tensor_data(merged.astype(np.float16))
        else:
            writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    return sorted(by_gguf)


def build_gguf(target: ExportTarget, archive: str) -> Path:
    source = _gguf_base(target)
    deltas = _lora_deltas(target.adapter_dir, target.adapter_config())

    def write(tmp: Path) -> None:
        merge_into_gguf(Path(source.location), deltas, tmp / GGUF_FILE)
        modelfile = modelfile_text(
            from_=f"./{GGUF_FILE}",
            adapter=None,
            chat_template=_chat_template(target.adapter_dir),
            model_name=target.model_name,
        )
        (tmp / MODELFILE).write_text(modelfile)
        commands = usage_commands("gguf", model_name=target.model_name, base="", archive=archive, lora_rank=None)
        notes = [f"`{target.model_name}` merged into its GGUF base `{source.spec}` (adapted tensors in F16)."]
        (tmp / USAGE_FILE).write_text(_usage_text(f"Running {target.model_name} with llama.cpp or Ollama", commands, notes))

    return _place(export_path(target.output_dir, "gguf"), write)


BUILDERS: dict[ExportFormat, Callable[[ExportTarget, str], Path]] = {
    "vllm": build_vllm,
    "ollama": build_ollama,
    "merged": build_merged,
    "gguf": build_gguf,
}
# Checks cheap enough to answer in the request that asks for an export.
PREFLIGHT: dict[ExportFormat, Callable[[ExportTarget], object]] = {"gguf": _gguf_base}


# ----- state: ready (the folder), building (a held lock), failed (an error report), else not started -----


def _lock_path(output_dir: Path, fmt: ExportFormat) -> Path:
    return output_dir / EXPORTS_DIR / f".{fmt}.lock"


def _error_path(output_dir: Path, fmt: ExportFormat) -> Path:
    return output_dir / EXPORTS_DIR / f"{fmt}.error.json"


def _is_building(output_dir: Path, fmt: ExportFormat) -> bool:
    path = _lock_path(output_dir, fmt)
    if not path.exists():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def export_status(output_dir: Path, fmt: ExportFormat) -> ExportStatus:
    output_dir = Path(output_dir)
    folder = export_path(output_dir, fmt)
    if _is_building(output_dir, fmt):  # first: a folder in place may still be getting its checksum
        return ExportStatus(fmt, "building")
    if (folder / ready_marker(fmt)).is_file():
        return ExportStatus(fmt, "ready", path=folder)
    try:
        report = json.loads(_error_path(output_dir, fmt).read_text())
        return ExportStatus(
            fmt, "failed", error=str(report.get("message")), failed_at=datetime.fromisoformat(report["at"])
        )
    except (FileNotFoundError, json.JSONDecodeError, KeyError, ValueError):
        return ExportStatus(fmt, "not_started")


_starting = threading.Lock()


def start_export(target: ExportTarget, fmt: ExportFormat, *, archive: str, wait: bool = False) -> ExportStatus:
    """Build `fmt` unless it is ready or being built (by any thread or process sharing the data directory): a thread
    holds the export's file lock while it builds, so a crash leaves no stale lock and the next request starts over.
    A failure is kept as an error report until the next start. `wait` builds in the calling thread (CLI, tests)."""
    target.adapter_config()  # no adapter, no export: say so now rather than from a thread
    if fmt in PREFLIGHT:
        PREFLIGHT[fmt](target)
    status = export_status(target.output_dir, fmt)
    if status.state in ("ready", "building"):
        return status
    lock_path = _lock_path(target.output_dir, fmt)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with _starting:
        handle = lock_path.open("a")
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A status check holds a shared lock for an instant; a builder holds it for the whole build.
                if time.monotonic() > deadline:
                    handle.close()
                    return export_status(target.output_dir, fmt)
                time.sleep(0.02)
        if (export_path(target.output_dir, fmt) / ready_marker(fmt)).is_file():  # finished while we waited
            handle.close()
            return export_status(target.output_dir, fmt)
        _error_path(target.output_dir, fmt).unlink(missing_ok=True)
        final = export_path(target.output_dir, fmt)
        for leftover in final.parent.glob(f".{final.name}.tmp-*"):  # of a build whose process died
            shutil.rmtree(leftover, ignore_errors=True)

    def build() -> None:
        try:
            BUILDERS[fmt](target, archive)
            if target.on_ready is not None:
                target.on_ready()
        except Exception as exc:  # reported on the export; the next start tries again
            report = {"message": f"{type(exc).__name__}: {exc}" if not isinstance(exc, ExportError) else str(exc)}
            report["at"] = datetime.now(UTC).isoformat()
            atomic_write_text(_error_path(target.output_dir, fmt), json.dumps(report))
        finally:
            handle.close()  # releases the lock

    if wait:
        build()
    else:
        threading.Thread(target=build, name=f"export-{fmt}", daemon=True).start()
    return export_status(target.output_dir, fmt)
