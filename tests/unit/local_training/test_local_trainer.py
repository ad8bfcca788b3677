"""The training loop on a tiny random Llama: learning, determinism, checkpoints, resume after a kill, cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from service.providers.local import (  # noqa: E402
    CheckpointMismatchError,
    LocalTrainParams,
    TrainResult,
    train,
    train_event_adapter,
)
from service.providers.local.schedule import warmup_linear_decay  # noqa: E402


class Killed(Exception):
    """Stands in for a worker dying mid-training."""


# 12 examples of ~27 tokens, 2 per 64-token row: 6 rows = 3 micro-batches of 2 rows per epoch, accumulated by 2 into
# steps of 2 + 1 micro-batches; 4 epochs = 8 steps. Dropout is on so that resume must restore the RNG too.
RESUME_PARAMS = dict(
    n_epochs=4,
    batch_size=2,
    max_seq_length=64,
    gradient_accumulation_steps=2,
    learning_rate=2e-2,
    lora_r=4,
    lora_dropout=0.1,
    warmup_ratio=0.2,
    weight_decay=0.01,
    eval_every_steps=4,
    checkpoint_every_steps=3,
)


def run(tiny_model_dir: Path, data: Path, out: Path, events: list | None = None, **kwargs: Any) -> TrainResult:
    params = kwargs.pop("params", None) or LocalTrainParams(**RESUME_PARAMS)
    return train(
        params,
        base_model=str(tiny_model_dir),
        train_path=data,
        validation_path=kwargs.pop("validation_path", data),
        output_dir=out,
        cache_dir=out.parent / "cache",
        device="cpu",
        num_threads=1,  # tiny matrices: more threads only add synchronisation, badly so on a busy machine
        on_event=kwargs.pop("on_event", None) or (events.append if events is not None else None),
        **kwargs,
    )


def adapter_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


def assert_same_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    left, right = adapter_weights(a), adapter_weights(b)
    assert left.keys() == right.keys() and left
    for key in left:
        assert torch.allclose(left[key], right[key], atol=atol), key


@pytest.fixture
def data(jsonl, memorisable) -> Path:
    return jsonl("train.jsonl", memorisable(12))


@pytest.fixture
def reference(tiny_model_dir: Path, data: Path, tmp_path: Path) -> tuple[TrainResult, list]:
    events: list = []
    return run(tiny_model_dir, data, tmp_path / "reference", events), events


def test_loss_decreases_on_a_memorisable_set(tiny_model_dir: Path, data: Path, tmp_path: Path) -> None:
    params = LocalTrainParams(
        n_epochs=40, batch_size=4, learning_rate=3e-2, lora_r=8, lora_dropout=0.0, eval_every_steps=0
    )
    events: list = []
    result = run(tiny_model_dir, data, tmp_path / "out", events, params=params)
    losses = [e.train_loss for e in events if e.type == "step"]
    assert result.status == "succeeded" and result.steps == len(losses) == result.total_steps
    assert losses[-1] < 0.25 * losses[0]
    assert result.final_validation_loss is not None and result.final_validation_loss < 0.25 * losses[0]
    assert result.padding_share == 0.0  # 3 examples of equal length fill each row exactly
    assert result.target_modules == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    config = json.loads((result.adapter_path / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["base_model_name_or_path"] == str(tiny_model_dir)
    assert sorted(config["target_modules"]) == result.target_modules


def test_events_metrics_file_and_schedule(reference: tuple[TrainResult, list]) -> None:
    result, events = reference
    steps = [e for e in events if e.type == "step"]
    assert [e.step for e in steps] == list(range(1, 9))
    assert [e.step for e in events if e.type == "validation"] == [4, 8]
    assert [e.step for e in events if e.type == "checkpoint"] == [3, 6]
    assert steps[-1].epoch == pytest.approx(4.0) and steps[0].epoch == pytest.approx(0.5)
    assert all(e.tokens_per_second > 0 and e.grad_norm > 0 for e in steps)
    factor = warmup_linear_decay(8, 2)
    assert [e.learning_rate for e in steps] == pytest.approx([2e-2 * factor(s) for s in range(8)])
    assert steps[-1].tokens == result.trained_tokens == 4 * steps[1].tokens  # 4 epochs of 2 steps
    lines = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    assert [train_event_adapter.validate_python(line) for line in lines] == events
    # A finished run keeps its adapter and result, not its resume points.
    assert result.checkpoint_path is None and not (result.metrics_path.parent / "checkpoints").exists()


def test_same_seed_same_adapter_other_seed_differs(tiny_model_dir, data, tmp_path, reference) -> None:
    again = run(tiny_model_dir, data, tmp_path / "again")
    assert_same_weights(reference[0].adapter_path, again.adapter_path, atol=0)
    other = run(tiny_model_dir, data, tmp_path / "other", params=LocalTrainParams(**{**RESUME_PARAMS, "seed": 1}))
    assert not torch.allclose(
        adapter_weights(reference[0].adapter_path)["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"],
        adapter_weights(other.adapter_path)["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"],
    )


def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_model_dir, data, tmp_path, reference) -> None:
    out = tmp_path / "killed"

    def die_at_step_5(event: Any) -> None:
        if event.type == "step" and event.step == 5:
            raise Killed

    with pytest.raises(Killed):
        run(tiny_model_dir, data, out, on_event=die_at_step_5)
    assert (out / "checkpoints" / "latest").read_text() == "step-3"
    assert not (out / "adapter").exists()

    events: list = []
    resumed = run(tiny_model_dir, data, out, events)
    expected, expected_events = reference
    assert resumed.status == "succeeded" and resumed.resumed_from_step == 3
    assert [e.step for e in events if e.type == "step"] == [4, 5, 6, 7, 8]
    assert_same_weights(expected.adapter_path, resumed.adapter_path)
    assert resumed.final_train_loss == pytest.approx(expected.final_train_loss, rel=1e-5)
    assert resumed.final_validation_loss == pytest.approx(expected.final_validation_loss, rel=1e-5)
    assert resumed.trained_tokens == expected.trained_tokens
    # The metrics file reads like one run: steps 4 and 5 of the killed attempt were cut, not doubled.
    logged = [json.loads(line) for line in resumed.metrics_path.read_text().splitlines()]
    assert [line["step"] for line in logged if line["type"] == "step"] == list(range(1, 9))
    expected_losses = [e.train_loss for e in expected_events if e.type == "step"]
    assert [line["train_loss"] for line in logged if line["type"] == "step"] == pytest.approx(expected_losses, rel=1e-5)


def test_cancel_stops_within_a_micro_batch_keeps_a_checkpoint_and_can_resume(
    tiny_model_dir, data, tmp_path, reference
) -> None:
    out = tmp_path / "cancelled"
    polls = 0

    def stop_on_eighth_poll() -> bool:
        nonlocal polls
        polls += 1
        return polls >= 8  # steps take 2, 1, 2, 1, 2 micro-batches: poll 8 comes inside step 5

    cancelled = run(tiny_model_dir, data, out, should_stop=stop_on_eighth_poll)
    assert polls == 8
    assert cancelled.status == "cancelled" and cancelled.steps == 4
    assert cancelled.adapter_path is None
    assert cancelled.checkpoint_path == out / "checkpoints" / "step-4"
    assert (cancelled.checkpoint_path / "adapter_model.safetensors").is_file()

    resumed = run(tiny_model_dir, data, out)
    assert resumed.resumed_from_step == 4
    assert_same_weights(reference[0].adapter_path, resumed.adapter_path)


def test_cancel_before_the_first_step_leaves_no_checkpoint(tiny_model_dir, data, tmp_path) -> None:
    result = run(tiny_model_dir, data, tmp_path / "out", should_stop=lambda: True)
    assert result.status == "cancelled" and result.steps == 0 and result.checkpoint_path is None


def test_finished_run_is_returned_not_retrained_and_other_params_are_refused(
    tiny_model_dir, data, tmp_path, reference
) -> None:
    result, _ = reference
    out = result.adapter_path.parent
    events: list = []
    again = run(tiny_model_dir, data, out, events)
    assert events == []
    assert again.adapter_path == result.adapter_path and again.final_train_loss == result.final_train_loss
    with pytest.raises(CheckpointMismatchError, match="finished run"):
        run(tiny_model_dir, data, out, params=LocalTrainParams(**{**RESUME_PARAMS, "learning_rate": 1e-3}))


def test_checkpoint_of_other_params_is_refused(tiny_model_dir, data, tmp_path) -> None:
    out = tmp_path / "out"
    run(tiny_model_dir, data, out, should_stop=iter([False] * 7 + [True]).__next__)
    with pytest.raises(CheckpointMismatchError, match="different run"):
        run(tiny_model_dir, data, out, params=LocalTrainParams(**{**RESUME_PARAMS, "lora_r": 8}))
    # Observation-only settings may change across a resume.
    resumed = run(tiny_model_dir, data, out, params=LocalTrainParams(**{**RESUME_PARAMS, "eval_every_steps": 1}))
    assert resumed.status == "succeeded"


def test_unpacked_training_and_merged_output(tiny_model_dir, data, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    params = LocalTrainParams(
        **{**RESUME_PARAMS, "packing": False, "merge_adapter": True, "n_epochs": 1, "lora_dropout": 0.0}
    )
    result = run(tiny_model_dir, data, tmp_path / "out", params=params, validation_path=None)
    assert result.final_validation_loss is None
    assert result.merged_path is not None
    merged = AutoModelForCausalLM.from_pretrained(str(result.merged_path))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(base, str(result.adapter_path))
    tokens = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(merged(tokens).logits, adapted(tokens).logits, atol=1e-4)


def test_bad_inputs_fail_before_training(tiny_model_dir, tmp_path) -> None:
    from service.providers.local import BaseModelError, LocalTrainingError

    with pytest.raises(LocalTrainingError, match="Dataset file not found"):
        run(tiny_model_dir, tmp_path / "missing.jsonl", tmp_path / "out")
    with pytest.raises(LocalTrainingError, match="target_modules \\['nope'\\] match no linear layer"):
        data = tmp_path / "d.jsonl"
        data.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n')
        run(tiny_model_dir, data, tmp_path / "out", params=LocalTrainParams(target_modules=["nope"]))
    with pytest.raises(BaseModelError, match="neither a known alias"):
        train(
            LocalTrainParams(),
            base_model="./not/here",
            train_path=data,
            validation_path=None,
            output_dir=tmp_path / "out2",
            cache_dir=tmp_path / "cache",
        )


def test_params_validation() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="lora_r"):
        LocalTrainParams(lora_r=0)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        LocalTrainParams.model_validate({"learning_rate_multiplier": 2})
    with pytest.raises(ValidationError, match="non-empty list"):
        LocalTrainParams(target_modules=[])
    base = LocalTrainParams()
    assert base.trajectory_fingerprint() == LocalTrainParams(eval_every_steps=3).trajectory_fingerprint()
    assert base.trajectory_fingerprint() != LocalTrainParams(seed=3).trajectory_fingerprint()
