"""POST /v1/jobs/{id}/rerun moves a recipe to another provider: datasets, method, suffix, seed and metadata as they
were, hyperparameters mapped into the new provider's own (through OpenAI's vocabulary), values with no counterpart there
refused naming them, Idempotency-Key honoured, the new job linked to the old. No worker runs: the recipe is what is
checked here (the providers' own tests run jobs to the end)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def api(settings, project, tmp_path, monkeypatch) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.providers import local
    from service.settings import get_settings, reset_settings_cache

    allowed = tmp_path / "models"
    (allowed / "tiny").mkdir(parents=True)
    (allowed / "tiny" / "config.json").write_text("{}")
    monkeypatch.setenv("FINETUNE_LOCAL_MODEL_DIRS", str(allowed))
    monkeypatch.setattr(local, "is_available", lambda: (True, None))
    reset_settings_cache()
    with TestClient(create_app(get_settings()), raise_server_exceptions=False, headers=project["headers"]) as client:
        yield client


def _dataset(api, chat_jsonl: bytes) -> str:
    r = api.post("/v1/datasets", files={"file": ("train.jsonl", chat_jsonl)})
    assert r.status_code in (200, 201) and r.json()["status"] == "ready", r.text
    return r.json()["id"]


def _local_job(settings, project_id: str, dataset_id: str, **hyperparameters: Any) -> str:
    """A local job as the local provider stores one (all its typed hyperparameters), without training."""
    from service.db import session_scope
    from service.jobs.models import Job
    from service.providers.local.params import LocalTrainParams

    hp = LocalTrainParams(**hyperparameters).model_dump(exclude_none=True)
    with session_scope(settings) as s:
        job = Job(
            project_id=project_id,
            provider="local",
            base_model="tiny",
            method={"type": "supervised", "hyperparameters": hp},
            training_dataset_id=dataset_id,
            suffix="tickets",
            seed=11,
            metadata_={"team": "support"},
            status="succeeded",
        )
        s.add(job)
        s.flush()
        return job.id


def test_openai_to_local(api, chat_jsonl):
    from service.providers.local.params import LocalTrainParams

    ds = _dataset(api, chat_jsonl)
    body = {
        "training_dataset_id": ds,
        "provider": "openai",
        "model": "gpt-4.1-mini-2025-04-14",
        "suffix": "tickets",
        "seed": 42,
        "metadata": {"team": "support"},
        "method": {"type": "supervised", "hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 2.0}},
    }
    r = api.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    first = r.json()

    r = api.post(
        f"/v1/jobs/{first['id']}/rerun", json={"provider": "local", "model": "tiny"}, headers={"Idempotency-Key": "k1"}
    )
    assert r.status_code == 201, r.text
    moved = r.json()
    assert moved["provider"] == "local" and moved["model"] == "tiny" and moved["rerun_of_job_id"] == first["id"]
    assert moved["training_dataset_id"] == ds and moved["seed"] == 42 and moved["suffix"] == "tickets"
    assert moved["metadata"]["team"] == "support"
    hp = moved["method"]["hyperparameters"]
    default_lr = LocalTrainParams.model_fields["learning_rate"].default
    assert hp["n_epochs"] == 3 and hp["learning_rate"] == pytest.approx(2.0 * default_lr)
    assert "learning_rate_multiplier" not in hp
    warning = next(w for w in moved["warnings"] if w["code"] == "hyperparameters_dropped")
    assert "learning_rate_multiplier" in warning["message"]

    again = api.post(
        f"/v1/jobs/{first['id']}/rerun", json={"provider": "local", "model": "tiny"}, headers={"Idempotency-Key": "k1"}
    )
    assert again.status_code == 201 and again.json()["id"] == moved["id"], "the same key answers the same job"
    other = api.post(
        f"/v1/jobs/{first['id']}/rerun", json={"provider": "local", "model": "other"}, headers={"Idempotency-Key": "k1"}
    )
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"  # same key, other body


def test_local_to_azure(api, settings, project, chat_jsonl):
    ds = _dataset(api, chat_jsonl)
    tuned = _local_job(settings, project["id"], ds, learning_rate=0.002, n_epochs=2)
    r = api.post(f"/v1/jobs/{tuned}/rerun", json={"provider": "azure", "model": "gpt-4.1-mini"})
    assert r.status_code == 201, r.text
    moved = r.json()
    assert moved["provider"] == "azure" and moved["model"] == "gpt-4.1-mini" and moved["rerun_of_job_id"] == tuned
    assert moved["seed"] == 11 and moved["suffix"] == "tickets" and moved["metadata"]["team"] == "support"
    assert moved["estimated_cost_usd"] is not None and moved["price_table_version"] == "2026-12-01"
    hp = moved["method"]["hyperparameters"]
    assert hp["n_epochs"] == 2 and hp["learning_rate_multiplier"] == pytest.approx(2.0)
    assert "learning_rate" not in hp and "lora_r" not in hp

    # A LoRA rank set away from its default has no counterpart at Azure: refused, naming it.
    ranked = _local_job(settings, project["id"], ds, lora_r=64)
    r = api.post(f"/v1/jobs/{ranked}/rerun", json={"provider": "azure", "model": "gpt-4.1-mini"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_hyperparameters" and "lora_r" in r.json()["detail"]
    # The caller names Azure's own instead; unknown ones are refused, naming them.
    r = api.post(
        f"/v1/jobs/{ranked}/rerun",
        json={"provider": "azure", "model": "gpt-4.1-mini", "hyperparameters": {"n_epochs": 2, "lora_r": 8}},
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_hyperparameters" and "lora_r" in r.json()["detail"]
    r = api.post(
        f"/v1/jobs/{ranked}/rerun",
        json={
            "provider": "azure",
            "model": "gpt-4.1-mini",
            "hyperparameters": {"n_epochs": 2, "training_type": "developer"},
        },
    )
    assert r.status_code == 201, r.text
    hp = r.json()["method"]["hyperparameters"]
    assert hp["n_epochs"] == 2 and hp["training_type"] == "developer"

    # And back: Azure's training tier says where to train, so it is left behind, not refused.
    r = api.post(f"/v1/jobs/{r.json()['id']}/rerun", json={"provider": "openai", "model": "gpt-4.1-mini"})
    assert r.status_code == 201, r.text
    assert "training_type" not in r.json()["method"]["hyperparameters"]


def test_rerun_errors_name_the_problem(api, other_project, chat_jsonl):
    ds = _dataset(api, chat_jsonl)
    r = api.post("/v1/jobs", json={"training_dataset_id": ds, "provider": "openai", "model": "gpt-4.1-mini"})
    job = r.json()["id"]
    r = api.post(f"/v1/jobs/{job}/rerun", json={"provider": "nowhere"})
    assert r.status_code == 422 and r.json()["code"] == "unknown_provider"
    r = api.post(f"/v1/jobs/{job}/rerun", json={"provider": "azure", "model": "gpt-4o-mini"}, headers={})
    assert r.status_code == 201, r.text  # supervised on gpt-4o-mini is fine at Azure
    assert api.post(f"/v1/jobs/{job}/rerun", json={}, headers=other_project["headers"]).status_code == 404
