"""Training checkpoints: written whole into a temporary folder, then renamed into place, so a kill at any moment
leaves either the previous checkpoint or the new one, never half of one.

Layout: output_dir/checkpoints/step-N/{adapter_model.safetensors, adapter_config.json, optimizer.pt, rng.pt,
trainer_state.json} and output_dir/checkpoints/latest (a text file naming the newest step folder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: the API lists a run's checkpoints (artifacts) without the `local` extra loaded.
CHECKPOINTS_DIR = "checkpoints"
LATEST_POINTER = "latest"
STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoints_root(output_dir: Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(
    output_dir: Path,
    step: int,
    *,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rng_state: dict[str, Any],
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    import torch

    root = checkpoints_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}-{uuid.uuid4().hex[:8]}"
    try:
        # A PeftModel writes only the adapter (safetensors + config). LoRA never trains the embeddings here, so peft
        # need not look for the base model's config to decide whether to save them (and warn when it cannot).
        model.save_pretrained(str(tmp), save_embedding_layers=False)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        torch.save(rng_state, tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps({**trainer_state, "step": step}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(root / LATEST_POINTER, final.name)
    _prune(root, keep=keep, protect=final)
    return final


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / STATE_FILE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def _prune(root: Path, *, keep: int, protect: Path) -> None:
    dirs = _step_dirs(root)
    for _, path in dirs[: max(0, len(dirs) - keep)]:
        if path != protect:
            shutil.rmtree(path, ignore_errors=True)
    for child in root.iterdir():
        if child.name.startswith(".tmp-"):  # left by a kill during a save
            shutil.rmtree(child, ignore_errors=True)


def find_latest_checkpoint(output_dir: Path) -> Path | None:
    root = checkpoints_root(output_dir)
    pointer = root / LATEST_POINTER
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if _STEP_DIR.match(candidate.name) and (candidate / STATE_FILE).is_file():
            return candidate
    dirs = _step_dirs(root)
    return dirs[-1][1] if dirs else None


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())


def load_checkpoint(
    checkpoint: Path, *, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore adapter weights, optimizer and scheduler in place; return (trainer_state, rng_state)."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(checkpoint / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"checkpoint {checkpoint} has adapter weights this model lacks: {unexpected[:5]}")
    states = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    rng_state = torch.load(checkpoint / "rng.pt", map_location="cpu", weights_only=True)
    return read_trainer_state(checkpoint), rng_state


def remove_checkpoints(output_dir: Path) -> None:
    shutil.rmtree(checkpoints_root(output_dir), ignore_errors=True)
