"""Prompts and references read from each dataset format; seeded samples; few-shot turns in the right place."""

from __future__ import annotations

import json

import pytest

from service.errors import InvalidInput
from service.evaluations.examples import few_shot_turns, load_examples, to_example, with_few_shot


def test_chat_reference_is_the_last_assistant_message_and_weight_is_dropped():
    obj = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello", "weight": 0},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": [{"type": "text", "text": "4"}]},
        ]
    }
    ex = to_example(obj, "test", 3)
    assert ex.key == "test:3" and ex.reference == "4"
    assert [m["role"] for m in ex.prompt] == ["system", "user", "assistant", "user"]
    assert all("weight" not in m for m in ex.prompt)


def test_tool_call_answer_becomes_canonical_json():
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    ex = to_example(
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": calls}]}, "test", 0
    )
    assert json.loads(ex.reference) == calls


def test_preference_and_prompt_completion():
    pref = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}],
    }
    assert to_example(pref, "test", 0).reference == "good"
    legacy = to_example({"prompt": "Q: 1+1\nA:", "completion": " 2\n"}, "test", 0)
    assert legacy.prompt == [{"role": "user", "content": "Q: 1+1\nA:"}] and legacy.reference == "2"
    with pytest.raises(InvalidInput):
        to_example({"text": "nope"}, "test", 0)


def _write(tmp_path, n):
    path = tmp_path / "d.jsonl"
    rows = [
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return path


def test_seeded_sample_is_stable_and_in_file_order(tmp_path):
    path = _write(tmp_path, 50)
    a = [e.index for e in load_examples(path, "test", limit=10, seed=7)]
    assert a == [e.index for e in load_examples(path, "test", limit=10, seed=7)]
    assert a == sorted(a) and len(set(a)) == 10
    assert a != [e.index for e in load_examples(path, "test", limit=10, seed=8)]
    assert len(load_examples(path, "test")) == 50


def test_few_shot_turns_go_after_the_system_prompt(tmp_path):
    path = _write(tmp_path, 5)
    turns = few_shot_turns(path, 2, seed=0)
    assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant"]
    assert all(m["role"] != "system" for m in turns)
    prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": "real"}]
    merged = with_few_shot(prompt, turns)
    assert merged[0]["role"] == "system" and merged[-1]["content"] == "real" and len(merged) == 6
    assert few_shot_turns(path, 2, seed=0) == turns
    with pytest.raises(InvalidInput):
        few_shot_turns(path, 6, seed=0)
