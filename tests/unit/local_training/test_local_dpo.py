"""Local DPO: the loss, preference pairs on a tiny random Llama, and DPO jobs through both APIs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from service.providers.local import LocalTrainingError, LocalTrainParams, train  # noqa: E402
from service.providers.local.dpo import (  # noqa: E402
    collate_pairs,
    dpo_loss,
    encode_preference,
    load_preference_dataset,
    sequence_logps,
)
from service.providers.local.errors import DatasetFormatError  # noqa: E402
from service.providers.local.packing import MicroBatch  # noqa: E402
from service.providers.local.params import from_openai_hyperparameters, to_openai_hyperparameters  # noqa: E402

COLOURS = ["red", "blue", "green", "amber", "violet", "white", "black", "grey"]
THINGS = ["apple", "sky", "leaf", "lamp", "plum", "snow", "coal", "cloud", "ruby", "sea", "moss", "honey"]


def preference_rows(n: int = 8) -> list[dict[str, Any]]:
    """Questions whose preferred answer is one colour and whose rejected answer is another."""
    return [
        {
            "input": {
                "messages": [
                    {"role": "system", "content": "Answer with one colour."},
                    {"role": "user", "content": f"What colour is the {THINGS[i % len(THINGS)]}?"},
                ]
            },
            "preferred_output": [{"role": "assistant", "content": COLOURS[(i * 5) % len(COLOURS)]}],
            "non_preferred_output": [{"role": "assistant", "content": COLOURS[(i * 5 + 3) % len(COLOURS)]}],
        }
        for i in range(n)
    ]


DPO_PARAMS = dict(
    n_epochs=8,
    batch_size=2,
    max_seq_length=64,
    learning_rate=1e-2,
    lora_r=4,
    lora_dropout=0.0,
    warmup_ratio=0.0,
    eval_every_steps=0,
    checkpoint_every_steps=0,
    beta=0.5,
)


# --- the loss -------------------------------------------------------------------------------------------------------


def test_dpo_loss_value_rewards_and_gradient_sign() -> None:
    policy_chosen = torch.tensor([-1.0], requires_grad=True)
    policy_rejected = torch.tensor([-3.0], requires_grad=True)
    reference_chosen, reference_rejected = torch.tensor([-2.0]), torch.tensor([-2.0])
    losses, chosen, rejected = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, 0.5)
    # rewards 0.5 * (-1 + 2) = 0.5 and 0.5 * (-3 + 2) = -0.5: loss = -log sigmoid(1) = log(1 + e^-1)
    assert chosen.item() == pytest.approx(0.5) and rejected.item() == pytest.approx(-0.5)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    losses.sum().backward()
    # Raising the preferred answer's log-prob lowers the loss; raising the rejected one's raises it.
    assert policy_chosen.grad.item() < 0 < policy_rejected.grad.item()
    assert policy_chosen.grad.item() == pytest.approx(-0.5 * (1 - 1 / (1 + math.exp(-1.0))), rel=1e-6)
    # The policy equal to the reference: the loss is log 2 whatever the log-probs.
    same = dpo_loss(torch.tensor([-4.0]), torch.tensor([-1.0]), torch.tensor([-4.0]), torch.tensor([-1.0]), 0.1)[0]
    assert same.item() == pytest.approx(math.log(2))


# --- data -----------------------------------------------------------------------------------------------------------


def test_pairs_target_only_the_output(tiny_tokenizer: Any) -> None:
    from service.providers.local.chat_data import IGNORE_INDEX, ChatEncoder

    encoder = ChatEncoder(tiny_tokenizer, 64)
    row = preference_rows(1)[0]
    # An assistant turn inside the input is context: only the compared output carries log-probs.
    row["input"]["messages"] += [
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "And the sea?"},
    ]
    pair = encode_preference(row, encoder)
    for side, answer in ((pair.chosen, row["preferred_output"][0]), (pair.rejected, row["non_preferred_output"][0])):
        targets = [token for token in side.labels if token != IGNORE_INDEX]
        assert tiny_tokenizer.decode(targets).strip().startswith(answer["content"])
        assert "red" not in tiny_tokenizer.decode(targets) or answer["content"] == "red"
    batch = collate_pairs(MicroBatch(rows=((0,),), packed=False), [pair], tiny_tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 2  # the chosen side, then the rejected one


def test_supervised_rows_are_refused_for_dpo_with_the_line(tiny_tokenizer: Any, jsonl, memorisable) -> None:
    from service.providers.local.chat_data import ChatEncoder

    path = jsonl("sft.jsonl", memorisable(2))
    with pytest.raises(DatasetFormatError) as info:
        load_preference_dataset(path, ChatEncoder(tiny_tokenizer, 64))
    assert "preferred_output" in str(info.value) and "line 1" in str(info.value)


# --- training on a tiny model ---------------------------------------------------------------------------------------


def preference_margin(model_dir: Path, adapter: Path, data: Path) -> tuple[float, float]:
    """Mean of log p(preferred) - log p(rejected) over the pairs: (with the adapter, with it disabled = reference)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.providers.local.chat_data import ChatEncoder

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    pairs, _ = load_preference_dataset(data, ChatEncoder(tokenizer, 64))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(adapter)).eval()
    batch = collate_pairs(MicroBatch(rows=tuple((i,) for i in range(len(pairs))), packed=False), pairs, 0)
    n = len(pairs)
    with torch.no_grad():
        policy = sequence_logps(model, batch, keep_logits=False)
        with model.disable_adapter():
            reference = sequence_logps(model, batch, keep_logits=False)
    return float((policy[:n] - policy[n:]).mean()), float((reference[:n] - reference[n:]).mean())


def test_dpo_raises_preferred_over_rejected_and_lowers_the_loss(tiny_model_dir: Path, jsonl, tmp_path: Path) -> None:
    data = jsonl("prefs.jsonl", preference_rows(8))
    events: list = []
    result = train(
        LocalTrainParams(**DPO_PARAMS),
        method="dpo",
        base_model=str(tiny_model_dir),
        train_path=data,
        validation_path=data,
        output_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        device="cpu",
        num_threads=1,
        on_event=events.append,
    )
    assert result.status == "succeeded" and result.steps == 32  # 8 pairs, 2 per step, 8 epochs
    steps = [e for e in events if e.type == "step"]
    # A fresh adapter is the reference (LoRA B starts at zero): the first loss is log 2, no pair ahead yet.
    assert steps[0].train_loss == pytest.approx(math.log(2), abs=1e-4)
    assert sum(step.train_loss for step in steps[-4:]) / 4 < 0.25 * steps[0].train_loss
    assert all(step.reward_accuracy == 1.0 and step.reward_margin > 0 for step in steps[-4:])
    validation = [e for e in events if e.type == "validation"]
    assert validation and validation[-1].validation_loss < math.log(2)
    trained, reference = preference_margin(tiny_model_dir, result.adapter_path, data)
    assert trained > reference + 1.0, (trained, reference)


def test_method_and_its_hyperparameters_are_checked(tiny_model_dir: Path, jsonl, tmp_path: Path) -> None:
    data = jsonl("prefs.jsonl", preference_rows(2))
    with pytest.raises(LocalTrainingError, match="beta is a DPO hyperparameter"):
        train(
            LocalTrainParams(beta=0.2),
            base_model=str(tiny_model_dir),
            train_path=data,
            output_dir=tmp_path / "a",
            cache_dir=tmp_path / "cache",
        )
    with pytest.raises(LocalTrainingError, match="not 'reinforcement'"):
        train(
            LocalTrainParams(),
            method="reinforcement",
            base_model=str(tiny_model_dir),
            train_path=data,
            output_dir=tmp_path / "b",
            cache_dir=tmp_path / "cache",
        )
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="beta is a DPO hyperparameter"):
        LocalTrainParams.model_validate({"beta": 0.2}, context={"method": "supervised"})
    with pytest.raises(ValidationError):
        LocalTrainParams.model_validate({"beta": 3.0}, context={"method": "dpo"})
    assert LocalTrainParams.model_validate({}, context={"method": "dpo"}).beta == 0.1
    # Runs recorded before beta existed keep their fingerprint (the default params' one then), so they still resume.
    assert LocalTrainParams().trajectory_fingerprint() == (
        "ed0fccc3da939048911a14b1ceedb3354f70004d50754371a6f78e8f659180aa"
    )
    assert LocalTrainParams().trajectory_fingerprint() != LocalTrainParams(beta=0.1).trajectory_fingerprint()


def test_openai_hyperparameters_carry_beta() -> None:
    assert from_openai_hyperparameters({"beta": 0.2, "n_epochs": 2}) == {"beta": 0.2, "n_epochs": 2}
    assert "beta" not in from_openai_hyperparameters({"beta": "auto"})
    assert to_openai_hyperparameters({"beta": 0.2})["beta"] == 0.2
    assert "beta" not in to_openai_hyperparameters({})


# --- through the API ------------------------------------------------------------------------------------------------


def _upload(client, headers, rows):  # type: ignore[no-untyped-def]
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    r = client.post("/v1/datasets", files={"file": ("prefs.jsonl", content)}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_local_dpo_job_trains_to_succeeded(client, project, worker, tiny_model_dir):  # type: ignore[no-untyped-def]
    h = project["headers"]
    ds = _upload(client, h, preference_rows(10))  # validation wants 10 examples at least
    assert ds["status"] == "ready" and ds["format"] == "preference", json.dumps(ds)[:3000]
    hyperparameters = {k: v for k, v in DPO_PARAMS.items() if k != "n_epochs"} | {"n_epochs": 4}
    body = {
        "training_dataset_id": ds["id"],
        "provider": "local",
        "model": str(tiny_model_dir),
        "method": {"type": "dpo", "hyperparameters": hyperparameters},
    }
    r = client.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 201, r.text
    job = wait_for(
        lambda: (
            (j := client.get(f"/v1/jobs/{r.json()['id']}", headers=h).json())["status"]
            in {"succeeded", "failed", "cancelled"}
            and j
        ),
        timeout=120,
    )
    assert job["status"] == "succeeded", job
    assert job["method"] == {"type": "dpo", "hyperparameters": job["method"]["hyperparameters"]}
    assert job["method"]["hyperparameters"]["beta"] == 0.5
    points = client.get(f"/v1/jobs/{job['id']}/metrics", headers=h).json()["points"]
    assert points and points[-1]["train_loss"] < points[0]["train_loss"]


def test_beta_is_refused_for_a_supervised_job(client, project, memorisable):  # type: ignore[no-untyped-def]
    ds = _upload(client, project["headers"], memorisable(4))
    body = {
        "training_dataset_id": ds["id"],
        "provider": "local",
        "model": "smollm2-135m-instruct",
        "method": {"type": "supervised", "hyperparameters": {"beta": 0.2}},
    }
    r = client.post("/v1/jobs", json=body, headers=project["headers"])
    assert r.status_code == 422 and r.json()["code"] == "invalid_hyperparameters", r.text
    assert "beta is a DPO hyperparameter" in r.json()["detail"]


def test_method_and_dataset_format_must_match(client, project, tiny_model_dir, memorisable):  # type: ignore[no-untyped-def]
    h = project["headers"]
    chat, prefs = _upload(client, h, memorisable(12)), _upload(client, h, preference_rows(10))
    for method, ds in (("dpo", chat), ("supervised", prefs)):
        body = {
            "training_dataset_id": ds["id"],
            "provider": "local",
            "model": str(tiny_model_dir),
            "method": {"type": method, "hyperparameters": {}},
        }
        r = client.post("/v1/jobs", json=body, headers=h)
        assert r.status_code == 422 and r.json()["code"] == "dataset_method_mismatch", r.text


def test_openai_route_maps_dpo_beta(client, project, tiny_model_dir):  # type: ignore[no-untyped-def]
    h = project["headers"]
    ds = _upload(client, h, preference_rows(10))
    body = {
        "model": str(tiny_model_dir),
        "training_file": ds["id"],
        "provider": "local",
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}},
    }
    r = client.post("/v1/fine_tuning/jobs", json=body, headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["method"]["type"] == "dpo" and out["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    assert out["hyperparameters"]["n_epochs"] == 1
    native = client.get(f"/v1/jobs/{out['id']}", headers=h).json()
    assert native["method"]["type"] == "dpo" and native["method"]["hyperparameters"]["beta"] == 0.2
