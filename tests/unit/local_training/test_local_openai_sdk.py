"""The official openai SDK against our OpenAI-shaped routes, on the local provider with a tiny model: upload, train,
follow, list events and checkpoints, list and delete models. No hand-made HTTP: only the SDK, over a real socket."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
from openai_contract import Recorder, differences

from helpers import serve

openai = pytest.importorskip("openai")
pytest.importorskip("torch")
pytest.importorskip("peft")


# What our answers may differ in from OpenAI's description, each with why (the check fails on any other difference).
ALLOWED: dict[tuple[str, str], str] = {}


@pytest.fixture
def recorder():  # type: ignore[no-untyped-def]
    return Recorder()


@pytest.fixture
def sdk(app, project, worker, recorder):  # type: ignore[no-untyped-def]
    with serve(app) as base_url:
        http = httpx.Client(event_hooks={"response": [recorder]}, timeout=30)
        yield openai.OpenAI(base_url=f"{base_url}/v1", api_key=project["key"], max_retries=0, http_client=http)


@pytest.fixture
def conforms(recorder):  # type: ignore[no-untyped-def]
    """After the test: every answer the SDK got matches OpenAI's description, but for ALLOWED (when it is present)."""
    yield
    try:
        from emulator import spec
    except ImportError:  # pragma: no cover - jsonschema / pyyaml missing
        return
    if not spec.reference_path().exists():
        return
    assert recorder.seen, "the recorder saw no answer"
    problems, _used = differences(recorder.seen, ALLOWED)
    assert not problems, "\n".join(problems)


def _jsonl(rows) -> io.BytesIO:  # type: ignore[no-untyped-def]
    buf = io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())
    buf.name = "train.jsonl"
    return buf


def _wait(sdk, job_id: str, timeout: float = 180):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        job = sdk.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def test_fine_tune_through_the_sdk(sdk, tiny_model_dir, memorisable, conforms):  # type: ignore[no-untyped-def]
    uploaded = sdk.files.create(file=_jsonl(memorisable(12)), purpose="fine-tune")
    assert uploaded.object == "file" and uploaded.purpose == "fine-tune" and uploaded.status == "processed"
    assert sdk.files.retrieve(uploaded.id).bytes == uploaded.bytes
    assert [f.id for f in sdk.files.list()] == [uploaded.id]
    assert sdk.files.content(uploaded.id).content.decode().count("\n") == 12

    job = sdk.fine_tuning.jobs.create(
        model=str(tiny_model_dir),
        training_file=uploaded.id,
        suffix="colours",
        seed=7,
        metadata={"team": "search"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 2}}},
    )
    assert job.object == "fine_tuning.job" and job.status == "validating_files"
    assert job.provider == "local"  # type: ignore[attr-defined]
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 2
    assert job.hyperparameters.learning_rate_multiplier == 1.0

    done = _wait(sdk, job.id)
    assert done.status == "succeeded", done
    assert done.fine_tuned_model.startswith("ft:") and done.fine_tuned_model.endswith(f":colours:{job.id}")
    assert done.trained_tokens and done.trained_tokens > 0 and done.finished_at

    events = sdk.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert any(e.type == "metrics" and "train_loss" in (e.data or {}) for e in events)
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)

    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and all(c.fine_tuned_model_checkpoint.startswith(done.fine_tuned_model) for c in checkpoints)
    assert all(c.fine_tuning_job_id == job.id and c.step_number > 0 for c in checkpoints)

    listed = sdk.fine_tuning.jobs.list(metadata={"team": "search"}).data
    assert [j.id for j in listed] == [job.id]
    assert sdk.fine_tuning.jobs.list(metadata={"team": "other"}).data == []

    question = [
        {"role": "system", "content": "Answer with one colour."},
        {"role": "user", "content": "What colour is the sky?"},
    ]
    answer = sdk.chat.completions.create(model=done.fine_tuned_model, messages=question, max_tokens=4, temperature=0)
    assert answer.object == "chat.completion" and answer.model == done.fine_tuned_model
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 4
    streamed = sdk.chat.completions.create(
        model=done.fine_tuned_model,
        messages=question,
        max_tokens=4,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    two = sdk.chat.completions.create(model=done.fine_tuned_model, messages=question, max_tokens=3, n=2, seed=1)
    assert [c.index for c in two.choices] == [0, 1]
    legacy = sdk.completions.create(model=done.fine_tuned_model, prompt="What colour is the sky?", max_tokens=3)
    assert legacy.object == "text_completion" and legacy.usage.completion_tokens <= 3
    checkpoint = sdk.chat.completions.create(
        model=checkpoints[-1].fine_tuned_model_checkpoint, messages=question, max_tokens=2, temperature=0
    )
    assert checkpoint.choices[0].message.content is not None
    base = sdk.chat.completions.create(model=str(tiny_model_dir), messages=question, max_tokens=2, temperature=0)
    assert base.model == str(tiny_model_dir)
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model=f"{done.fine_tuned_model}x", messages=question)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=done.fine_tuned_model, messages=question, frequency_penalty=1.0)
    assert caught.value.body["param"] == "frequency_penalty"

    models = {m.id: m for m in sdk.models.list()}
    assert done.fine_tuned_model in models and models[done.fine_tuned_model].owned_by == done.organization_id
    assert sdk.models.retrieve(done.fine_tuned_model).id == done.fine_tuned_model
    deleted = sdk.models.delete(done.fine_tuned_model)
    assert deleted.deleted and deleted.id == done.fine_tuned_model
    assert done.fine_tuned_model not in {m.id for m in sdk.models.list()}
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve(done.fine_tuned_model)


def test_invalid_file_fails_job_creation_with_line_numbers(sdk, tiny_model_dir, memorisable, conforms):  # type: ignore[no-untyped-def]
    rows = memorisable(12)
    rows[4] = {"messages": [{"role": "user", "content": "no answer"}]}
    bad = sdk.files.create(file=_jsonl(rows), purpose="fine-tune")
    assert bad.status == "error" and "line 5" in (bad.status_details or "")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=bad.id)
    error = caught.value.body
    assert caught.value.status_code == 400 and error["param"] == "training_file"
    assert "line 5" in error["message"] and error["type"] == "invalid_request_error"


def test_sdk_errors_have_openai_shape(sdk, app, project, conforms):  # type: ignore[no-untyped-def]
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.fine_tuning.jobs.retrieve("job_doesnotexist")
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file="x", seed=-1)
    assert caught.value.body["param"] == "seed"
    for hyperparameters in ({"n_epochs": "3"}, {"learning_rate_multiplier": 1e300}, {"batch_size": True}):
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.fine_tuning.jobs.create(
                model="smollm2-135m-instruct", training_file="x", hyperparameters=hyperparameters
            )
        assert caught.value.body["param"].startswith("hyperparameters."), caught.value.body
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.files.create(file=_jsonl([{"a": 1}]), purpose="assistants")
    assert caught.value.body["param"] == "purpose"
    wrong = openai.OpenAI(base_url=str(sdk.base_url), api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_a_client_that_goes_away_cancels_its_generation(app, project, worker, tiny_model_dir, settings, monkeypatch):  # type: ignore[no-untyped-def]
    """Closing a streamed chat completion mid-way frees its batch slot: the runtime stops generating for it (each
    decode step is slowed down here, so the 400 tokens asked for would take many seconds if it went on)."""
    import time as clock

    from helpers import wait_for
    from service.inference import get_runtime
    from service.inference.runtime import InferenceRuntime

    step = InferenceRuntime._step

    def slow_step(self, lane):  # type: ignore[no-untyped-def]
        clock.sleep(0.05)
        return step(self, lane)

    monkeypatch.setattr(InferenceRuntime, "_step", slow_step)

    body = {
        "model": str(tiny_model_dir),
        "messages": [{"role": "user", "content": "What colour is the sky?"}],
        "max_tokens": 400,
        "temperature": 1.0,
        "seed": 3,
        "stream": True,
    }
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as http:
        headers = {"Authorization": f"Bearer {project['key']}"}
        with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            runtime = get_runtime(settings)
            for line in response.iter_lines():  # until tokens flow (the first chunk only opens the choice)
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break
            assert runtime.stats().running == 1
        wait_for(lambda: runtime.stats().running == 0 and runtime.stats().queued == 0, timeout=3)
        assert len(runtime.stats().batch_sizes) < 100  # decode steps run: far from the 400 asked for
