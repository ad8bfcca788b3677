"""Local inference: batched left-padded greedy generation equals one-at-a-time, and a trained adapter is applied."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from service.providers.local import LocalGenerator, LocalTrainingError, LocalTrainParams, train  # noqa: E402


def prompts(rows: list[dict]) -> list[list[dict]]:
    return [row["messages"][:-1] for row in rows]


def test_batched_generation_equals_one_at_a_time(tiny_model_dir: Path, tmp_path: Path) -> None:
    generator = LocalGenerator(str(tiny_model_dir), None, tmp_path / "cache", "cpu", batch_size=4, num_threads=1)
    conversations = [
        [{"role": "user", "content": "sky?"}],
        [{"role": "system", "content": "Answer with one colour."}, {"role": "user", "content": "What colour is it?"}],
        [{"role": "user", "content": "hello world " * 5}],
        [{"role": "user", "content": "leaf"}],
        [{"role": "user", "content": "What colour is the honey?"}],
    ]
    batched = generator.generate(conversations, max_new_tokens=6)
    single = [generator.generate([conversation], max_new_tokens=6)[0] for conversation in conversations]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.output_tokens for g in batched] == [g.output_tokens for g in single]
    assert [g.input_tokens for g in batched] == [len(generator.encoder.encode_prompt(c)) for c in conversations]
    assert all(0 < g.output_tokens <= 6 and g.latency_s > 0 for g in batched)
    assert all(g.output_tokens == 6 for g in batched if g.finish_reason == "length")


def test_sampling_is_seeded_and_arguments_are_checked(tiny_model_dir: Path, tmp_path: Path) -> None:
    generator = LocalGenerator(str(tiny_model_dir), None, tmp_path / "cache", "cpu", num_threads=1)
    conversation = [[{"role": "user", "content": "sky?"}]] * 3
    first = generator.generate(conversation, max_new_tokens=8, temperature=1.5, seed=3)
    again = generator.generate(conversation, max_new_tokens=8, temperature=1.5, seed=3)
    assert [g.text for g in first] == [g.text for g in again]
    with pytest.raises(LocalTrainingError, match="max_new_tokens"):
        generator.generate(conversation, max_new_tokens=0)
    with pytest.raises(LocalTrainingError, match="temperature"):
        generator.generate(conversation, temperature=-1)


def test_trained_adapter_answers_the_memorised_set(tiny_model_dir: Path, tmp_path: Path, jsonl, memorisable) -> None:
    rows = memorisable(12)
    data = jsonl("train.jsonl", rows)
    params = LocalTrainParams(
        n_epochs=100, batch_size=4, learning_rate=2e-2, lora_r=8, lora_dropout=0.0, eval_every_steps=0
    )
    result = train(
        params,
        base_model=str(tiny_model_dir),
        train_path=data,
        validation_path=None,
        output_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        device="cpu",
        num_threads=1,
    )
    expected = [row["messages"][-1]["content"] for row in rows]
    tuned = LocalGenerator(str(tiny_model_dir), result.adapter_path, tmp_path / "cache", "cpu", num_threads=1)
    base = LocalGenerator(str(tiny_model_dir), None, tmp_path / "cache", "cpu", num_threads=1)
    tuned_answers = [g.text for g in tuned.generate(prompts(rows), max_new_tokens=4)]
    base_answers = [g.text for g in base.generate(prompts(rows), max_new_tokens=4)]
    tuned_correct = sum(a == e for a, e in zip(tuned_answers, expected, strict=True))
    base_correct = sum(a == e for a, e in zip(base_answers, expected, strict=True))
    assert tuned_correct >= 11, tuned_answers
    assert base_correct <= 2, base_answers


def test_adapter_folder_is_checked(tiny_model_dir: Path, tmp_path: Path) -> None:
    from service.providers.local import BaseModelError

    with pytest.raises(BaseModelError, match="not a PEFT adapter folder"):
        LocalGenerator(str(tiny_model_dir), tmp_path, tmp_path / "cache", "cpu", num_threads=1)
