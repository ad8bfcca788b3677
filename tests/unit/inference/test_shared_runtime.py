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
