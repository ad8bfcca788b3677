"""Scaled out, the API and the workers send local inference to the `finetune inference` role over HTTP; what they get
back (items, completions, errors) is what the in-process runtime gives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from helpers import serve
from service.evaluations.local_inference import generator_for
from service.inference import (
    InferenceError,
    InvalidRequest,
    ModelLoadError,
    ModelRef,
    SamplingParams,
    StreamEvent,
    Usage,
    get_runtime,
    local_runtime,
    reset_runtime,
)
from service.inference.remote import RemoteRuntime
from service.inference.server import create_inference_app
from service.settings import Settings

PROMPT = [{"role": "user", "content": "What colour is the sky?"}]


@pytest.fixture
def role(tmp_path: Path, tiny_base: Path):  # type: ignore[no-untyped-def]
    settings = Settings(
        data_dir=tmp_path,
        secret_key="test-secret-key-0123456789",
        inference_max_batch_size=8,
        local_model_dirs=[tiny_base.parent],
    )
    try:
        with serve(create_inference_app(settings)) as url:
            yield settings, settings.model_copy(update={"inference_url": url})
    finally:
        reset_runtime()


def test_remote_answers_equal_the_runtime_that_serves_them(role, tiny_base: Path, adapters) -> None:  # type: ignore[no-untyped-def]
    here, there = role
    remote = get_runtime(there)
    assert isinstance(remote, RemoteRuntime) and get_runtime(there) is remote
    model = ModelRef(str(tiny_base), adapters[0], name="ft:tiny:team::job_x")
    params = SamplingParams(max_tokens=6, temperature=0, n=2)
    expected = local_runtime(here).generate(model, PROMPT, params)
    assert remote.generate(model, PROMPT, params) == expected
    items = list(remote.stream(model, PROMPT, params))
    assert isinstance(items[-1], Usage) and all(isinstance(i, StreamEvent) for i in items[:-1])
    assert "".join(i.text for i in items[:-1] if i.index == 0) == expected.choices[0].text
    assert asyncio.run(remote.agenerate(model, PROMPT, params)) == expected


def test_errors_cross_the_wire_as_themselves(role, tiny_base: Path) -> None:  # type: ignore[no-untyped-def]
    _, there = role
    remote = get_runtime(there)
    with pytest.raises(InvalidRequest) as bad:
        remote.generate(ModelRef(str(tiny_base)), PROMPT, SamplingParams(max_tokens=0))
    assert bad.value.param == "max_tokens"
    with pytest.raises(ModelLoadError) as missing:
        remote.generate(ModelRef("no-such-model", name="ft:nothing"), PROMPT, SamplingParams(max_tokens=2))
    assert "ft:nothing" in missing.value.message and "/" not in missing.value.message

    async def open_stream() -> None:
        await remote.aopen_stream(ModelRef("no-such-model"), PROMPT, SamplingParams(max_tokens=2))

    with pytest.raises(ModelLoadError):  # before the first item: the API can still answer with an HTTP error
        asyncio.run(open_stream())
    stranger = RemoteRuntime(there.inference_url, "not-the-token", max_batch_size=3, request_timeout_s=30)
    with pytest.raises(InferenceError, match="unauthorized"):
        stranger.generate(ModelRef(str(tiny_base)), PROMPT, SamplingParams(max_tokens=2))
    assert stranger.max_batch_size == 3  # the role does not tell a stranger: its own setting


def test_callers_keep_as_many_requests_in_flight_as_the_role_batches(role) -> None:  # type: ignore[no-untyped-def]
    from service.inference import wire

    _, there = role
    # A CPU process's setting (2) below the role's batch (8; on a GPU, sized from its memory).
    remote = RemoteRuntime(
        there.inference_url, wire.token(there.server_secret()), max_batch_size=2, request_timeout_s=30
    )
    assert remote.max_batch_size == 8
    gone = RemoteRuntime("http://127.0.0.1:9", "t", max_batch_size=2, request_timeout_s=30)
    assert gone.max_batch_size == 2


def test_evaluations_use_the_inference_role_when_it_is_configured(role, tiny_base: Path, adapters) -> None:  # type: ignore[no-untyped-def]
    here, there = role
    generator = generator_for(there, str(tiny_base), adapters[1])
    assert isinstance(generator.runtime, RemoteRuntime)
    answers = generator.generate([PROMPT], max_new_tokens=5)
    direct = local_runtime(here).generate(
        ModelRef(str(tiny_base), adapters[1]), PROMPT, SamplingParams(max_tokens=5, temperature=0)
    )
    assert [a.text for a in answers] == [direct.choices[0].text]
    with pytest.raises(Exception, match="cannot be loaded"):
        generator_for(there, "no-such-model", None)
