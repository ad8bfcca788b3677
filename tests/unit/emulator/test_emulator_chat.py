from __future__ import annotations

import time
from collections.abc import Callable

import openai
import pytest

from emulator import EmulatorConfig, OpenAIEmulator, tokens
from emulator.samples import training_jsonl

QUESTIONS = {f"Capital of country {i}?": f"City {i}" for i in range(60)}


def _accuracy(client: openai.OpenAI, model: str) -> float:
    right = 0
    for question, answer in QUESTIONS.items():
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], temperature=0
        )
        right += reply.choices[0].message.content == answer
    return right / len(QUESTIONS)


def test_fine_tuned_models_answer_better_than_their_base(sdk: Callable[..., openai.OpenAI]) -> None:
    config = EmulatorConfig(speed=0, correct_answers=QUESTIONS, fine_tuned_accuracy=0.9, base_accuracy=0.3)
    with OpenAIEmulator(config=config) as emu:
        client = sdk(emu.base_url)
        upload = client.files.create(file=("t.jsonl", training_jsonl(12)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload.id)
        emu.run_until_idle()
        tuned = client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model
        base_score, tuned_score = _accuracy(client, "gpt-4o-mini"), _accuracy(client, tuned)
        assert 0.1 <= base_score <= 0.5
        assert tuned_score >= 0.75
        assert _accuracy(client, tuned) == tuned_score  # deterministic


def test_reply_shape_and_usage(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Explain photosynthesis in one sentence."},
    ]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "gpt-4o-mini-2024-07-18"
    (choice,) = reply.choices
    assert (choice.index, choice.finish_reason, choice.message.role) == (0, "stop", "assistant")
    assert "photosynthesis" in choice.message.content
    usage = reply.usage
    assert usage.prompt_tokens == tokens.count_messages(messages, "o200k_base")
    assert usage.completion_tokens == tokens.count(choice.message.content, "o200k_base")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 10 < usage.prompt_tokens < 40


def test_n_choices_and_max_tokens(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}],
        n=3,
        max_completion_tokens=4,
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert {c.finish_reason for c in reply.choices} == {"length"}
    assert reply.usage.completion_tokens == 12
    legacy = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say something long please."}], max_tokens=2
    )
    assert legacy.usage.completion_tokens == 2


def test_same_request_same_answer(client: openai.OpenAI) -> None:
    ask = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "Name a colour."}], "temperature": 0}
    first = client.chat.completions.create(**ask).choices[0].message.content
    assert client.chat.completions.create(**ask).choices[0].message.content == first


def test_custom_answer_function(sdk: Callable[..., openai.OpenAI]) -> None:
    seen: list[tuple[str, int]] = []

    def answer(model: str, messages: list[dict]) -> str | None:
        seen.append((model, len(messages)))
        return "forty-two" if "meaning" in messages[-1]["content"] else None

    with OpenAIEmulator(config=EmulatorConfig(speed=0, answer_fn=answer)) as emu:
        client = sdk(emu.base_url)
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "The meaning of life?"}]
        )
        assert reply.choices[0].message.content == "forty-two"
        other = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello"}])
        assert other.choices[0].message.content.startswith("Emulated reply from gpt-4o-2024-08-06")
        assert seen == [("gpt-4o", 1), ("gpt-4o", 1)]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"
    assert info.value.body["message"] == "The model `gpt-99` does not exist or you do not have access to it."


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4o-mini", "messages": []}, "messages"),
        ({"model": "gpt-4o-mini"}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
        ({"model": "gpt-4o-mini", "messages": [{"content": "x"}]}, "messages[0].role"),
    ],
)
def test_bad_chat_requests(client: openai.OpenAI, body: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/chat/completions", body=body, cast_to=object)
    assert info.value.param == param


def test_configurable_latency(sdk: Callable[..., openai.OpenAI]) -> None:
    config = EmulatorConfig(speed=0, chat_latency_seconds=0.0, chat_latency_by_model={"gpt-4o-mini": 0.3})
    with OpenAIEmulator(config=config) as emu:
        client = sdk(emu.base_url)
        ask = {"messages": [{"role": "user", "content": "hi"}]}
        started = time.perf_counter()
        client.chat.completions.create(model="gpt-4o-mini", **ask)
        slow = time.perf_counter() - started
        started = time.perf_counter()
        client.chat.completions.create(model="gpt-4.1", **ask)
        fast = time.perf_counter() - started
        assert slow >= 0.3
        assert fast < 0.3


def test_models_list_and_shutdown_dates(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert models["gpt-4o-mini-2024-07-18"].shutdown_date == "2027-01-14"
    assert models["gpt-4.1"].shutdown_date == "2027-01-14"
    assert models["gpt-5"].shutdown_date is None
    alias = client.models.retrieve("gpt-4o-mini")
    assert (alias.id, alias.owned_by) == ("gpt-4o-mini", "system")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-99")


def test_delete_a_fine_tuned_model(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    upload = client.files.create(file=("t.jsonl", training_jsonl(10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload.id)
    emu.run_until_idle()
    tuned = client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model
    deleted = client.models.delete(tuned)
    assert (deleted.id, deleted.deleted) == (tuned, True)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=tuned, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("gpt-4o-mini")
