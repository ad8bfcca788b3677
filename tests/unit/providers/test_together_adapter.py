"""The Together provider against the Together emulator: every call it makes, checked against Together's published
description; the crash-safety lookups (files by content hash, jobs by the tag in their suffix); errors classified."""

from __future__ import annotations

import json

import httpx
import pytest

from service.providers.base import JobSpec, ProviderError
from service.providers.together.provider import TogetherProvider, job_tag, tagged_suffix

SHA = "ab" * 32
BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


@pytest.fixture
def emu():
    from together_emulator import JobTiming, TogetherEmulator

    with TogetherEmulator(speed=0, timing=JobTiming()) as e:
        yield e


@pytest.fixture
def recorder(monkeypatch):
    """Every answer the provider receives, kept for the contract check."""
    from together_emulator import contract

    rec = contract.Recorder()
    real = httpx.Client.__init__

    def hooked(self, *args, **kwargs):
        kwargs["event_hooks"] = {"response": [rec]}
        real(self, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "__init__", hooked)
    return rec


@pytest.fixture
def provider(emu, settings, recorder):
    return TogetherProvider(api_key=emu.api_key, base_url=emu.base_url, timeout=10)


def _train_file(tmp_path, rows=None):
    rows = rows or [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(20)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _spec(file_id: str, **kw) -> JobSpec:
    return JobSpec(
        our_job_id="job_01JDTESTTESTTESTTESTTESTTE", model=BASE, method="supervised", training_file=file_id, **kw
    )


def test_lifecycle_matches_the_published_description(emu, provider, recorder, tmp_path):
    from together_emulator import contract

    if not contract.available():
        pytest.skip("Together's OpenAPI description (../shared/reference) is not here")
    assert provider.find_file(sha256=SHA, purpose="fine-tune") is None
    file_id = provider.upload_file(_train_file(tmp_path), sha256=SHA, purpose="fine-tune")
    assert provider.find_file(sha256=SHA, purpose="fine-tune") == file_id
    spec = _spec(file_id, suffix="Support Bot!", hyperparameters={"n_epochs": 2, "n_checkpoints": 2})
    estimate = provider.estimate_price(spec)
    assert estimate["allowed_to_proceed"] is True and estimate["estimated_total_price"] > 0
    assert provider.find_job(spec.our_job_id) is None
    created = provider.create_job(spec)
    assert created.status is not None and created.status.value == "validating_files"
    assert provider.find_job(spec.our_job_id).id == created.id
    emu.advance(10_000)
    done = provider.get_job(created.id)
    assert done.status.value == "succeeded", done
    assert done.fine_tuned_model.startswith("emulated-account/Meta-Llama-3.1-8B-Instruct-Reference-support-bot-")
    assert job_tag(spec.our_job_id) in done.fine_tuned_model and done.trained_tokens > 0
    events = provider.list_events(created.id, after=None)
    assert events[0].type == "job_pending" and events[-1].type == "job_complete"
    assert provider.list_events(created.id, after=events[1].id) == events[2:]
    checkpoints = provider.list_checkpoints(created.id)
    assert [c.step for c in checkpoints] == sorted({c.step for c in checkpoints}) and len(checkpoints) >= 2
    size = provider.download(created.id, tmp_path / "adapter.tar.zst")
    assert size > 0 and b"adapter" in (tmp_path / "adapter.tar.zst").read_bytes()
    provider.download(created.id, tmp_path / "step.tar.zst", step=checkpoints[0].step)
    with pytest.raises(ProviderError) as err:
        provider.download(created.id, tmp_path / "none.tar.zst", step=999_999)
    assert err.value.status_code == 404 and not (tmp_path / "none.tar.zst").exists()
    assert [m.id for m in provider.list_models()]
    # Chat completions of the fine-tune and an error, as any OpenAI-compatible client receives them.
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {emu.api_key}"}) as http:
        chat = http.post(
            "/chat/completions", json={"model": done.fine_tuned_model, "messages": [{"role": "user", "content": "q3"}]}
        )
        assert chat.json()["choices"][0]["message"]["content"] == "a3"
        assert http.get("/fine-tunes/ft-missing").status_code == 404
    problems = contract.differences(recorder.seen)
    assert problems == [], problems
    assert {
        "ChatCompletionResponse",
        "ErrorData",
        "CreateFineTuneRequest",
        "EstimatePriceRequest",
    } <= recorder.schemas()
    assert {
        "FileResponse",
        "FileList",
        "FinetuneResponseTruncated",
        "FinetuneTruncatedList",
        "FinetuneResponse",
        "FinetuneListEvents",
        "FinetuneListCheckpoints",
        "EstimatePriceResponse",
    } <= recorder.schemas()


def test_cancel_and_failure(emu, provider, tmp_path):
    file_id = provider.upload_file(_train_file(tmp_path), sha256=SHA, purpose="fine-tune")
    job = provider.create_job(_spec(file_id))
    emu.advance(25)
    assert provider.get_job(job.id).status.value == "running"
    assert provider.cancel(job.id).raw_status == "cancel_requested"
    assert provider.get_job(job.id).status is None  # cancel_requested: ours stays until Together says cancelled
    emu.advance(5)
    assert provider.get_job(job.id).status.value == "cancelled"

    emu.fail_jobs("doomed", "Training data has no assistant messages")
    failed = provider.create_job(_spec(file_id, suffix="doomed").model_copy(update={"our_job_id": "job_other"}))
    emu.advance(100)
    got = provider.get_job(failed.id)
    assert got.status.value == "failed" and got.error["message"] == "Training data has no assistant messages"


def test_cancel_of_a_job_that_just_finished_answers_its_state(emu, provider, tmp_path):
    file_id = provider.upload_file(_train_file(tmp_path), sha256=SHA, purpose="fine-tune")
    job = provider.create_job(_spec(file_id))
    emu.advance(10_000)
    finished = provider.cancel(job.id)  # Together answers 400: the job is completed
    assert finished.status.value == "succeeded" and finished.fine_tuned_model
    with pytest.raises(ProviderError) as err:
        provider.cancel("ft-missing")
    assert err.value.status_code == 404


def test_dpo_full_body(provider):
    spec = JobSpec(
        our_job_id="job_01ABC",
        model=BASE,
        method="dpo",
        training_file="file-1",
        validation_file="file-2",
        seed=7,
        hyperparameters={"training_type": "full", "dpo_beta": 0.2, "lr_scheduler": "cosine"},
    )
    body = provider.job_body(spec)
    assert body["training_type"] == {"type": "Full"}
    assert body["training_method"] == {"method": "dpo", "dpo_beta": 0.2}
    assert body["lr_scheduler"] == {
        "lr_scheduler_type": "cosine",
        "lr_scheduler_args": {"min_lr_ratio": 0.0, "num_cycles": 0.5},
    }
    assert body["n_evals"] == 1 and body["random_seed"] == 7 and body["suffix"] == "01abc"


def test_suffix_keeps_the_whole_tag():
    tag = job_tag("job_01JDTESTTESTTESTTESTTESTTE")
    assert tagged_suffix("job_01JDTESTTESTTESTTESTTESTTE", "a" * 64).endswith(f"-{tag}")
    assert len(tagged_suffix("job_01JDTESTTESTTESTTESTTESTTE", "a" * 64)) <= 40


@pytest.mark.parametrize(
    ("kind", "transient", "retry_after"), [("429", True, 3.0), ("500", True, None), ("503", True, None)]
)
def test_faults_are_classified(emu, provider, kind, transient, retry_after):
    emu.add_fault(r"GET /v1/fine-tunes$", kind, retry_after_seconds=3)
    with pytest.raises(ProviderError) as err:
        provider.find_job("job_x")
    assert err.value.transient is transient and err.value.status_code == int(kind)
    assert err.value.retry_after == retry_after


def test_client_errors_are_fatal_with_the_message(emu, provider):
    with pytest.raises(ProviderError) as err:
        provider.create_job(_spec("file-missing"))
    assert not err.value.transient and err.value.status_code == 404 and "file-missing" in err.value.message
    bad = TogetherProvider(api_key="tg-wrong"[:2] + "x", base_url=emu.base_url, timeout=5)
    with pytest.raises(ProviderError) as err:
        bad.find_file(sha256=SHA, purpose="fine-tune")
    assert not err.value.transient and err.value.status_code == 401 and err.value.message == "Invalid API key provided"


def test_timeout_is_transient(emu, settings):
    emu.add_fault(r"GET /v1/files$", "timeout", delay_seconds=3)
    slow = TogetherProvider(api_key=emu.api_key, base_url=emu.base_url, timeout=0.5)
    with pytest.raises(ProviderError) as err:
        slow.find_file(sha256=SHA, purpose="fine-tune")
    assert err.value.transient and err.value.code == "provider_unreachable"
