"""One recipe, three places to train it (issue #15's "show"): a job on Azure OpenAI (the OpenAI emulator's Azure mode)
is rerun on Together (the Together emulator) and on this service's own workers (a tiny local model), and one
evaluation compares the three fine-tunes on the same held-out examples with its paired tests against the local one."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for

pytest.importorskip("torch")
pytest.importorskip("peft")

_spec = importlib.util.spec_from_file_location(
    "local_training_models", Path(__file__).parents[1] / "unit" / "local_training" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_models)

AZURE_KEY = "azure-key-0123456789abcdef"
AZURE_BASE = "gpt-4.1-mini-2025-04-14"
TOGETHER_BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
EXAMPLES = _models.memorisable_examples(12)
TERMINAL = {"succeeded", "failed", "cancelled"}


def _question_answer(example: dict[str, Any]) -> tuple[str, str]:
    return example["messages"][1]["content"], example["messages"][2]["content"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    return _models.build_tiny_model_dir(tmp_path_factory.mktemp("tiny-across"))


@pytest.fixture
def emulator() -> Iterator[Any]:  # an Azure OpenAI resource in place of the integration conftest's OpenAI
    from emulator import EmulatorConfig, JobTiming, OpenAIEmulator

    config = EmulatorConfig.azure_resource(
        speed=200.0,
        api_keys=[AZURE_KEY],
        job_timing=JobTiming(validating_seconds=10, queued_seconds=10, step_seconds=2),
        correct_answers=dict(_question_answer(e) for e in EXAMPLES),
        fine_tuned_accuracy=0.95,
        base_accuracy=0.25,
    )
    with OpenAIEmulator(config) as emu:
        yield emu


@pytest.fixture
def together() -> Iterator[Any]:
    from together_emulator import JobTiming, TogetherEmulator

    with TogetherEmulator(speed=200.0, timing=JobTiming()) as emu:
        yield emu


def _post(stack: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = stack.client.post(path, json=body, headers=stack.headers)
    assert r.status_code in (200, 201), r.text
    return r.json()


def _wait(stack: Any, path: str, timeout: float = 240.0) -> dict[str, Any]:
    return wait_for(lambda: (o := stack.get(path)) and o["status"] in TERMINAL and o, timeout=timeout, interval=0.5)


def test_one_recipe_trained_on_azure_together_and_local_then_compared(stack, together, tiny_model_dir):
    import json

    h = stack.headers
    for provider, body in (
        ("azure", {"api_key": AZURE_KEY, "base_url": stack.emulator.endpoint}),
        ("together", {"api_key": together.api_key, "base_url": together.base_url}),
    ):
        r = stack.client.put(f"/v1/providers/{provider}/credentials", json=body, headers=h)
        assert r.status_code == 200, r.text
    content = "".join(json.dumps(e) + "\n" for e in EXAMPLES).encode()
    train = stack.upload(content, "train.jsonl")
    test = stack.upload(content, "test.jsonl")  # the memorised examples: what each fine-tune learnt is measurable

    azure_job = _post(
        stack,
        "/v1/jobs",
        {
            "training_dataset_id": train["id"],
            "provider": "azure",
            "model": AZURE_BASE,
            "suffix": "colours",
            "seed": 3,
            "method": {"type": "supervised", "hyperparameters": {"n_epochs": 4}},
        },
    )
    # The same recipe elsewhere: Together takes OpenAI's hyperparameters as they are; the tiny local model is given
    # its own (its learning rate and sequence length are not OpenAI's to say).
    together_job = _post(stack, f"/v1/jobs/{azure_job['id']}/rerun", {"provider": "together", "model": TOGETHER_BASE})
    local_job = _post(
        stack,
        f"/v1/jobs/{azure_job['id']}/rerun",
        {
            "provider": "local",
            "model": str(tiny_model_dir),
            "hyperparameters": {"n_epochs": 3, "learning_rate": 0.005, "max_seq_length": 64, "eval_every_steps": 0},
        },
    )
    for job in (together_job, local_job):
        assert job["rerun_of_job_id"] == azure_job["id"] and job["training_dataset_id"] == train["id"]
        assert job["suffix"] == "colours" and job["seed"] == 3
    assert together_job["method"]["hyperparameters"]["n_epochs"] == 4

    done = {
        name: _wait(stack, f"/v1/jobs/{j['id']}")
        for name, j in (("azure", azure_job), ("together", together_job), ("local", local_job))
    }
    assert all(j["status"] == "succeeded" for j in done.values()), done
    # Azure serves a fine-tune through a deployment: made on its control plane, then named here.
    stack.emulator.deploy("colours-ft", done["azure"]["fine_tuned_model"])
    r = stack.client.put(f"/v1/jobs/{azure_job['id']}/deployment", json={"name": "colours-ft"}, headers=h)
    assert r.status_code == 200, r.text

    evaluation = _post(
        stack,
        "/v1/evaluations",
        {
            "dataset_id": test["id"],
            "candidates": [{"kind": "job", "name": name, "job_id": j["id"]} for name, j in done.items()],
            "graders": [{"type": "exact_match", "name": "exact"}],
            "baseline": "local",
            "sampling": {"temperature": 0, "max_tokens": 4},
        },
    )
    ev = _wait(stack, f"/v1/evaluations/{evaluation['id']}")
    assert ev["status"] == "succeeded", ev
    results = {c["candidate"]: c for c in ev["results"]["candidates"]}
    assert set(results) == {"azure", "together", "local"}
    assert all(c["n"] == len(EXAMPLES) and c["n_failed"] == 0 for c in results.values()), results
    assert results["azure"]["model"] == "colours-ft"
    # The hosted fine-tunes answer what they were taught (the emulators' models); each figure carries its interval.
    for name in ("azure", "together"):
        rate = results[name]["graders"]["exact"]["metrics"]["pass_rate"]
        assert rate["estimate"] >= 0.75 and rate["low"] <= rate["estimate"] <= rate["high"], (name, rate)

    comparisons = {c["candidate"]: c for c in ev["results"]["comparisons"]}
    assert set(comparisons) == {"azure", "together"} and all(c["baseline"] == "local" for c in comparisons.values())
    local_rate = results["local"]["graders"]["exact"]["metrics"]["pass_rate"]["estimate"]
    for name, comparison in comparisons.items():
        exact = comparison["graders"]["exact"]
        assert exact["n_paired"] == len(EXAMPLES) and exact["n_excluded"] == 0
        diff = exact["metrics"]["pass_rate"]
        own = results[name]["graders"]["exact"]["metrics"]["pass_rate"]["estimate"]
        assert diff["difference"] == pytest.approx(own - local_rate)
        assert diff["low"] <= diff["difference"] <= diff["high"] and 0 <= diff["p_value"] <= 1
        # McNemar's exact test over the examples only one of the two got right.
        flips = exact["mcnemar"]
        assert flips is not None and 0 <= flips["p_value"] <= 1
