"""Fixtures for the inference runtime: the local trainer's tiny random Llama (built from code, nothing downloaded),
random LoRA adapters for it, and a runtime on CPU that is shut down after each test."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from unit.local_training.conftest import build_tiny_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def second_base(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights in another folder: another base model as far as the runtime is concerned."""
    target = tmp_path_factory.mktemp("tiny-llama-2") / "model"
    shutil.copytree(tiny_base, target)
    return target


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def adapters(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(tiny_base, root / f"ft-{i}", seed=100 + i) for i in range(3)]


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    from service.inference.runtime import InferenceRuntime

    made: list[InferenceRuntime] = []

    def make(**options: Any) -> InferenceRuntime:
        options = {"cache_dir": tmp_path / "cache", "device": "cpu", "num_threads": 1, **options}
        runtime = InferenceRuntime(**options)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()
