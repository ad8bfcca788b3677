"""Chat JSONL -> tokens and labels: assistant-only loss, `weight`, truncation, and clear errors for bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from service.providers.local.chat_data import (
    IGNORE_INDEX,
    ChatEncoder,
    load_chat_dataset,
    parse_chat_example,
)
from service.providers.local.errors import ChatTemplateError, DatasetFormatError


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_labels_are_exactly_the_weighted_assistant_tokens(tiny_tokenizer) -> None:
    example = {
        "messages": [
            {"role": "developer", "content": "Answer with one colour."},
            {"role": "user", "content": "What colour is the sky?"},
            {"role": "assistant", "content": "blue"},
            {"role": "user", "content": "And the leaf?"},
            {"role": "assistant", "content": "green", "weight": 0},
            {"role": "user", "content": "Snow?"},
            {"role": "assistant", "content": [{"type": "text", "text": "wh"}, {"type": "text", "text": "ite"}]},
        ]
    }
    encoded = ChatEncoder(tiny_tokenizer, 512).encode(parse_chat_example(example))

    prompt_1 = (
        "<|im_start|>system\nAnswer with one colour.<|im_end|>\n<|im_start|>user\nWhat colour is the sky?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    answer_1 = "blue<|im_end|>\n"
    prompt_2 = "<|im_start|>user\nAnd the leaf?<|im_end|>\n<|im_start|>assistant\n"
    answer_2 = "green<|im_end|>\n"
    prompt_3 = "<|im_start|>user\nSnow?<|im_end|>\n<|im_start|>assistant\n"
    answer_3 = "white<|im_end|>\n"
    pieces = [prompt_1, answer_1, prompt_2, answer_2, prompt_3, answer_3]
    trained = {answer_1, answer_3}
    expected_ids: list[int] = []
    expected_labels: list[int] = []
    for index, piece in enumerate(pieces):
        piece_ids = ids(tiny_tokenizer, piece)
        expected_ids += piece_ids
        is_target = piece in trained and index % 2 == 1
        expected_labels += piece_ids if is_target else [IGNORE_INDEX] * len(piece_ids)

    assert encoded.input_ids == expected_ids
    assert encoded.labels == expected_labels
    assert encoded.n_targets == len(ids(tiny_tokenizer, answer_1)) + len(ids(tiny_tokenizer, answer_3))
    assert not encoded.truncated


def test_truncation_keeps_the_start_and_drops_examples_left_without_targets(tiny_tokenizer, jsonl) -> None:
    long_user = "hello world " * 40
    rows = [
        {"messages": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"}]},
        {"messages": [{"role": "user", "content": long_user}, {"role": "assistant", "content": "blue"}]},
        {"messages": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue", "weight": 0}]},
    ]
    examples, stats = load_chat_dataset(jsonl("d.jsonl", rows), ChatEncoder(tiny_tokenizer, 32))
    assert stats.examples == 1
    assert stats.skipped_no_target == 2
    assert stats.skipped_lines == [2, 3]
    assert stats.truncated == 0  # the truncated example was skipped, not kept
    assert len(examples[0]) < 32


def test_truncated_example_with_targets_left_is_kept(tiny_tokenizer, jsonl) -> None:
    rows = [{"messages": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue " * 40}]}]
    examples, stats = load_chat_dataset(jsonl("d.jsonl", rows), ChatEncoder(tiny_tokenizer, 24))
    assert stats.truncated == 1
    assert len(examples[0]) == 24
    assert examples[0].labels[-1] != IGNORE_INDEX


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []},
            "preference (DPO) examples are not supported",
        ),
        ({"prompt": "a", "completion": "b"}, "legacy prompt/completion"),
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant message"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "role must be one of"),
        ({"messages": [{"role": "user", "content": "hi", "weight": 1}]}, "only allowed on assistant"),
        ({"messages": [{"role": "assistant", "content": "hi", "weight": 2}]}, "must be 0 or 1"),
        ({"messages": [{"role": "assistant", "content": "hi", "colour": "red"}]}, "unrecognised keys"),
        ({"messages": [{"role": "assistant"}]}, "no content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "only text content parts",
        ),
    ],
)
def test_bad_examples_are_refused_with_line_and_reason(tmp_path: Path, tiny_tokenizer, row, message) -> None:
    path = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"}]}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(DatasetFormatError) as caught:
        load_chat_dataset(path, ChatEncoder(tiny_tokenizer, 64))
    assert caught.value.line == 3
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_invalid_json_names_the_line(tmp_path: Path, tiny_tokenizer) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [}\n')
    with pytest.raises(DatasetFormatError, match="line 1: invalid JSON"):
        load_chat_dataset(path, ChatEncoder(tiny_tokenizer, 64))


def test_special_token_text_in_content_is_refused(tiny_tokenizer) -> None:
    example = parse_chat_example(
        {"messages": [{"role": "user", "content": "hi<|im_end|>"}, {"role": "assistant", "content": "blue"}]}
    )
    with pytest.raises(DatasetFormatError, match="special token text '<\\|im_end\\|>'") as caught:
        ChatEncoder(tiny_tokenizer, 64).encode(example, line=7)
    assert caught.value.field == "messages[0].content"


def test_tokenizer_without_chat_template_is_refused(tiny_tokenizer) -> None:
    import copy

    bare = copy.deepcopy(tiny_tokenizer)
    bare.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ChatEncoder(bare, 64)


def test_prompt_encoding_matches_the_training_prefix(tiny_tokenizer) -> None:
    encoder = ChatEncoder(tiny_tokenizer, 512)
    messages = [{"role": "user", "content": "What colour is the sky?"}]
    prompt = encoder.encode_prompt(messages)
    full = encoder.encode(parse_chat_example({"messages": [*messages, {"role": "assistant", "content": "blue"}]}))
    first_target = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    assert prompt == full.input_ids[:first_target]
