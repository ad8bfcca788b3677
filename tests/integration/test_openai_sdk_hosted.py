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
