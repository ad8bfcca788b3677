"""LoRA adapters on a resident base: requests for different fine-tunes of one base share a batch and each gets its own
adapter's answer (the answer of that adapter merged into the base); bases and adapters stay within the memory budget."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from service.inference import Completion, ModelLoadError, ModelRef, SamplingParams

PROMPT = [{"role": "user", "content": "What colour is the sky?"}]
PARAMS = SamplingParams(max_tokens=12, temperature=0)


def merged_answer(base: Path, adapter: Path | None, runtime) -> str:  # type: ignore[no-untyped-def]
    """transformers' own generate on the adapter merged into a fresh copy of the base: the reference."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base))
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    ids = runtime.encode(ModelRef(str(base)), PROMPT)
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=PARAMS.max_tokens, do_sample=False)
    new = out[0, len(ids) :].tolist()
    if tokenizer.eos_token_id in new:
        new = new[: new.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new, skip_special_tokens=True)


def test_two_adapters_and_the_base_in_one_batch_each_get_their_own_answer(make_runtime, tiny_base, adapters):
    runtime = make_runtime()
    refs = [ModelRef(str(tiny_base)), ModelRef(str(tiny_base), adapters[0]), ModelRef(str(tiny_base), adapters[1])]
    expected = [merged_answer(tiny_base, ref.adapter_path, runtime) for ref in refs]
    assert len(set(expected)) == 3, expected  # the adapters change the answer, so mixing them up would show

    results: list[Completion | None] = [None] * 3
    start = threading.Barrier(3)

    def one(i: int) -> None:
        start.wait()
        results[i] = runtime.generate(refs[i], PROMPT, PARAMS)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.choices[0].text for r in results if r] == expected
    assert 3 in runtime.stats().batch_sizes
    assert sorted(runtime.stats().resident[str(tiny_base)]) == ["ft-0", "ft-1"]


def test_adapters_are_unloaded_least_recently_used_first_within_the_budget(make_runtime, tiny_base, adapters):
    probe = make_runtime()
    probe.generate(ModelRef(str(tiny_base), adapters[0]), PROMPT, PARAMS)
    base_mb = probe.pool.resident()[0].nbytes / 2**20
    adapter_mb = probe.stats().used_mb - base_mb
    assert adapter_mb > 0
    budget = base_mb + adapter_mb * 2.5  # room for the base and two adapters, not three
    runtime = make_runtime(memory_budget_mb=budget)
    answers: dict[str, list[str]] = {}
    for adapter in [adapters[0], adapters[1], adapters[2], adapters[0]]:
        answers.setdefault(adapter.name, []).append(
            runtime.generate(ModelRef(str(tiny_base), adapter), PROMPT, PARAMS).choices[0].text
        )
        stats = runtime.stats()
        assert stats.used_mb <= budget
        assert stats.resident[str(tiny_base)][-1] == adapter.name
    # ft-2 made ft-0 leave; ft-0 coming back made ft-1 (then the least recently used) leave.
    assert runtime.stats().resident[str(tiny_base)] == ["ft-2", "ft-0"]
    # ft-0, loaded again after it was unloaded, answers as before.
    assert answers["ft-0"][0] == answers["ft-0"][1]


def test_idle_bases_are_unloaded_least_recently_used_first(make_runtime, tiny_base, second_base):
    probe = make_runtime()
    probe.generate(ModelRef(str(tiny_base)), PROMPT, PARAMS)
    base_mb = probe.stats().used_mb
    runtime = make_runtime(memory_budget_mb=base_mb * 1.5)
    first = runtime.generate(ModelRef(str(tiny_base)), PROMPT, PARAMS)
    runtime.generate(ModelRef(str(second_base)), PROMPT, PARAMS)
    assert list(runtime.stats().resident) == [str(second_base)]
    assert runtime.generate(ModelRef(str(tiny_base)), PROMPT, PARAMS) == first
    assert list(runtime.stats().resident) == [str(tiny_base)]


def test_a_base_larger_than_the_budget_is_refused(make_runtime, tiny_base):
    runtime = make_runtime(memory_budget_mb=0.01)
    with pytest.raises(ModelLoadError, match="more than the inference memory budget") as caught:
        runtime.generate(ModelRef(str(tiny_base), name="ft:tiny"), PROMPT, PARAMS)
    assert str(tiny_base) not in caught.value.message


def test_load_errors_name_the_model_not_the_server_paths(make_runtime, tiny_base, tmp_path: Path):
    runtime = make_runtime()
    missing = tmp_path / "secret-location" / "model"
    with pytest.raises(ModelLoadError) as caught:
        runtime.generate(ModelRef(str(missing), name="ft:gone:p:x:1"), PROMPT, PARAMS)
    assert "ft:gone:p:x:1" in caught.value.message and "secret-location" not in caught.value.message
    with pytest.raises(ModelLoadError, match="not a PEFT adapter folder") as caught:
        runtime.generate(ModelRef(str(tiny_base), tmp_path / "secret-location", name="ft:a"), PROMPT, PARAMS)
    assert "secret-location" not in caught.value.message
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "target_modules": ["nope"]}')
    with pytest.raises(ModelLoadError, match="cannot be applied") as caught:
        runtime.generate(ModelRef(str(tiny_base), broken, name="ft:b"), PROMPT, PARAMS)
    assert str(broken) not in caught.value.message
    # The runtime still serves after the failures.
    assert runtime.generate(ModelRef(str(tiny_base)), PROMPT, PARAMS).choices
