"""The official openai SDK pointed at us, with the job trained by the `openai` provider (the emulator plays OpenAI):
the same calls as on the local provider, and chat completions of the fine-tune forwarded to the provider with the
project's credentials."""

from __future__ import annotations

import io
import time

import httpx
import pytest
from openai_contract import Recorder, differences

from helpers import serve

openai = pytest.importorskip("openai")


@pytest.fixture
def hosted(settings, emulator, worker, project, monkeypatch):  # type: ignore[no-untyped-def]
    from service.api.app import create_app
    from service.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("FINETUNE_OPENAI_API_KEY", "sk-test-emulator")
    monkeypatch.setenv("FINETUNE_OPENAI_BASE_URL", emulator.base_url)
    reset_settings_cache()
    recorder = Recorder()
    with serve(create_app(get_settings())) as base_url:
        http = httpx.Client(event_hooks={"response": [recorder]}, timeout=30)
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=project["key"], max_retries=0, http_client=http)
        yield client, recorder


def test_hosted_fine_tune_through_the_sdk(hosted, chat_jsonl):  # type: ignore[no-untyped-def]
    sdk, recorder = hosted
    buf = io.BytesIO(chat_jsonl)
    buf.name = "train.jsonl"
    file = sdk.files.create(file=buf, purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(
        model="gpt-4.1-mini-2025-04-14", training_file=file.id, suffix="tickets", hyperparameters={"n_epochs": 1}
    )
    assert job.provider == "openai"  # type: ignore[attr-defined]  # chosen from the model name
    deadline = time.monotonic() + 120
    while (job := sdk.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job.status == "succeeded", job
    assert job.fine_tuned_model.startswith("ft:gpt-4.1-mini-2025-04-14:")
    assert job.hyperparameters.n_epochs == 1
    assert any(e.type == "metrics" for e in sdk.fine_tuning.jobs.list_events(job.id, limit=100).data)
    assert sdk.fine_tuning.jobs.checkpoints.list(job.id).data

    question = [{"role": "user", "content": "Ticket 3: my invoice number 1003 is wrong"}]
    answer = sdk.chat.completions.create(model=job.fine_tuned_model, messages=question, max_tokens=5)
    assert answer.choices[0].message.content and answer.model.startswith("ft:gpt-4.1-mini")
    chunks = list(sdk.chat.completions.create(model=job.fine_tuned_model, messages=question, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    base = sdk.chat.completions.create(model="gpt-4.1-mini-2025-04-14", messages=question, max_tokens=5)
    assert base.choices[0].message.content
    assert job.fine_tuned_model in {m.id for m in sdk.models.list()}

    from emulator import spec

    if spec.reference_path().exists():
        problems, _ = differences(recorder.seen, {})
        assert not problems, "\n".join(problems)


def _big(rows: list[str]) -> io.BytesIO:
    buf = io.BytesIO(("\n".join(rows) + "\n").encode())
    buf.name = "train.jsonl"
    return buf


def test_job_created_while_its_file_is_validated(hosted, chat_jsonl, monkeypatch):  # type: ignore[no-untyped-def]
    """OpenAI's clients create the job right after the upload; a file the worker still validates is accepted and the
    job waits in validating_files. A file that then fails makes the job fail naming training_file and the lines."""
    import threading

    from service.datasets import service as datasets
    from service.settings import get_settings

    monkeypatch.setattr(get_settings(), "inline_validation_bytes", 16)  # every upload is validated by the worker
    # The worker validates only once both jobs exist (else a fast worker may finish first: then the route itself
    # refuses the bad file, which test_invalid_file_fails_job_creation_with_line_numbers covers).
    jobs_created = threading.Event()
    validate = datasets.validate_task

    def validate_after_jobs(dataset_id, settings):  # type: ignore[no-untyped-def]
        jobs_created.wait(30)
        validate(dataset_id, settings)

    monkeypatch.setattr(datasets, "validate_task", validate_after_jobs)
    sdk, _ = hosted
    good = sdk.files.create(file=_big(chat_jsonl.decode().splitlines()), purpose="fine-tune")
    bad_rows = chat_jsonl.decode().splitlines()
    bad_rows[2] = '{"messages": [{"role": "user", "content": "no answer"}]}'
    bad = sdk.files.create(file=_big(bad_rows), purpose="fine-tune")
    assert good.status == "uploaded" and bad.status == "uploaded"

    ok = sdk.fine_tuning.jobs.create(model="gpt-4.1-mini-2025-04-14", training_file=good.id)
    failing = sdk.fine_tuning.jobs.create(model="gpt-4.1-mini-2025-04-14", training_file=bad.id)
    jobs_created.set()
    assert ok.status == failing.status == "validating_files"
    deadline = time.monotonic() + 120
    while {
        (ok := sdk.fine_tuning.jobs.retrieve(ok.id)).status,
        (failing := sdk.fine_tuning.jobs.retrieve(failing.id)).status,
    } - {"succeeded", "failed", "cancelled"}:
        assert time.monotonic() < deadline, (ok, failing)
        time.sleep(0.1)
    assert ok.status == "succeeded", ok
    assert failing.status == "failed" and failing.error.param == "training_file"
    assert "line 3" in failing.error.message and failing.fine_tuned_model is None
    assert sdk.files.retrieve(bad.id).status == "error"


def test_forwarded_calls_take_the_projects_outbound_slots(hosted, emulator, monkeypatch):  # type: ignore[no-untyped-def]
    """A hosted model's answers hold one of the project's outbound slots while the provider answers: a slow provider
    cannot tie up more than the project's share (429 with retry-after beyond it)."""
    from concurrent.futures import ThreadPoolExecutor

    from service.settings import get_settings

    monkeypatch.setattr(get_settings(), "outbound_per_project", 1)
    emulator.core.config.chat_latency_seconds = 1.0
    sdk, _ = hosted
    question = [{"role": "user", "content": "hello"}]

    def ask() -> str:
        try:
            sdk.chat.completions.create(model="gpt-4.1-mini-2025-04-14", messages=question, max_tokens=3)
            return "ok"
        except openai.RateLimitError as exc:
            assert exc.response.headers.get("retry-after")
            return "limited"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(lambda _: ask(), range(2)))
    assert outcomes == ["limited", "ok"]
    emulator.core.config.chat_latency_seconds = 0.0
    assert ask() == "ok"  # the slot is given back
