"""One runtime per process: the API and evaluations get the same one (so they share resident models and batches)."""

from __future__ import annotations

from pathlib import Path

from service.evaluations.local_inference import generator_for
from service.inference import ModelRef, SamplingParams, get_runtime, reset_runtime
from service.settings import Settings


def test_evaluations_and_callers_share_the_process_runtime(tmp_path: Path, tiny_base: Path, adapters) -> None:
    settings = Settings(data_dir=tmp_path, inference_max_batch_size=8)
    try:
        runtime = get_runtime(settings)
        assert get_runtime(settings) is runtime
        generator = generator_for(settings, str(tiny_base), adapters[0])
        assert generator.runtime is runtime and generator.batch_size == 8
        prompts = [[{"role": "user", "content": f"What colour is the {thing}?"}] for thing in ("sky", "sea", "moss")]
        answers = generator.generate(prompts, max_new_tokens=6)
        direct = [
            runtime.generate(ModelRef(str(tiny_base), adapters[0]), p, SamplingParams(max_tokens=6, temperature=0))
            for p in prompts
        ]
        assert [a.text for a in answers] == [d.choices[0].text for d in direct]
        assert [a.output_tokens for a in answers] == [d.completion_tokens for d in direct]
        assert runtime.stats().resident[str(tiny_base)] == ["ft-0"]
        # Other inference settings make another runtime (tests run several configurations in one process).
        assert get_runtime(Settings(data_dir=tmp_path, inference_max_batch_size=4)) is not runtime
    finally:
        reset_runtime()


def test_settings_choose_the_backend_and_a_gpu_gets_its_own_batch_cap(tmp_path: Path, monkeypatch) -> None:
    import pytest
    import torch

    from service.errors import Unavailable
    from service.inference import local_runtime
    from service.inference.backends import runtime_from_settings
    from service.providers.local.inference import default_batch_size

    settings = Settings(data_dir=tmp_path, inference_max_batch_size=8, inference_gpu_max_batch_size=96)
    runtime = runtime_from_settings(settings)
    assert (type(runtime).__name__, runtime.max_batch_size) == ("InferenceRuntime", 8)
    runtime.close()
    assert default_batch_size("auto") == default_batch_size("cpu") == 16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # A GPU without vllm: transformers, with the GPU cap (free memory sizes the batch below it).
    if __import__("importlib").util.find_spec("vllm") is None:
        runtime = runtime_from_settings(settings.model_copy(update={"inference_backend": "transformers"}))
        assert runtime.max_batch_size == 96
        runtime.close()
    assert default_batch_size("auto") == 256 and default_batch_size("cpu") == 16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    try:
        with pytest.raises(Unavailable, match="vllm cannot run here"):
            local_runtime(settings.model_copy(update={"inference_backend": "vllm"}))
    finally:
        reset_runtime()
