from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from emulator import EmulatorConfig, OpenAIEmulator
from emulator.samples import training_jsonl


def test_upload_list_retrieve_content_delete(client: openai.OpenAI) -> None:
    content = training_jsonl(10)
    created = client.files.create(file=("train.jsonl", content), purpose="fine-tune")
    assert created.id.startswith("file-")
    assert (created.bytes, created.filename, created.purpose, created.status) == (
        len(content),
        "train.jsonl",
        "fine-tune",
        "processed",
    )
    assert client.files.retrieve(created.id).model_dump() == created.model_dump()
    assert client.files.content(created.id).content == content

    batch_file = client.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
    assert [f.id for f in client.files.list()] == [batch_file.id, created.id]  # newest first
    assert [f.id for f in client.files.list(purpose="fine-tune")] == [created.id]
    assert [f.id for f in client.files.list(order="asc")] == [created.id, batch_file.id]

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError) as info:
        client.files.retrieve(created.id)
    assert info.value.body["message"] == f"No such File object: {created.id}"


def test_list_paginates_with_after(client: openai.OpenAI) -> None:
    ids = [client.files.create(file=(f"f{i}.jsonl", b"{}\n"), purpose="batch").id for i in range(5)]
    first = client.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2]
    assert first.has_more is True
    assert [f.id for f in first] == ids[::-1]  # the SDK follows `after` through every page


def test_fine_tune_files_must_be_jsonl(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("train.csv", b"a,b\n"), purpose="fine-tune")
    assert info.value.body["message"] == "Invalid file format for Fine-Tuning API. Must be .jsonl"
    assert info.value.body["param"] == "file"


def test_unknown_purpose_is_rejected(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="training")  # type: ignore[arg-type]
    assert info.value.code == "invalid_value"
    assert info.value.param == "purpose"


def test_evals_purpose_is_accepted(client: openai.OpenAI) -> None:
    assert client.files.create(file=("e.jsonl", b"{}\n"), purpose="evals").purpose == "evals"


def test_size_limit_message(sdk: Callable[..., openai.OpenAI]) -> None:
    with OpenAIEmulator(config=EmulatorConfig(speed=0, max_file_bytes=1024)) as emu:
        client = sdk(emu.base_url)
        with pytest.raises(openai.BadRequestError) as info:
            client.files.create(file=("big.jsonl", b"x" * 2048), purpose="fine-tune")
        assert info.value.code == "file_too_large"
        assert "2048 bytes" in info.value.message
        assert emu.state()["files"] == []
