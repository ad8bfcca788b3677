"""Device, precision, threads and RNG state: the torch runtime settings shared by training and inference."""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Iterator
from typing import Any

import torch

from .errors import LocalTrainingError


def select_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; explicit names ('cpu', 'cuda', 'cuda:1', 'mps') are checked."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as exc:
        raise LocalTrainingError(f"Unknown device '{device}': use auto, cpu, cuda, cuda:N or mps") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise LocalTrainingError(f"Device '{device}' requested but CUDA is not available on this worker")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise LocalTrainingError(f"Device '{device}' requested but only {torch.cuda.device_count()} GPU(s) exist")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise LocalTrainingError(f"Device '{device}' requested but MPS is not available on this worker")
    return chosen


def select_precision(precision: str, device: torch.device) -> tuple[str, torch.dtype]:
    """(name, dtype of the frozen base weights and autocast). bf16 only where it is fast and exact enough."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16", torch.bfloat16
        return "fp32", torch.float32
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise LocalTrainingError("precision bf16 requested but this GPU does not support bfloat16")
        return "bf16", torch.bfloat16
    return "fp32", torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def idle_cpus() -> int:
    """Cores not already kept busy by other processes (1-minute load average), at least 1.

    Intra-op threads wait for each other at every operator: when another process holds one of their cores, the rest
    stall (measured on 2 busy cores: 2 threads ran a LoRA step 3-4x slower than 1). So take only the idle cores.
    """
    cpus = available_cpus()
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cpus
    return max(1, min(cpus, math.floor(cpus - busy + 0.5)))


def configure_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads: `num_threads`, or the idle cores this process may run on (affinity aware)."""
    threads = num_threads or idle_cpus()
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Run a block without moving the training RNG, so validation cadence cannot change the trained weights."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
