from __future__ import annotations

import pytest

from service.datasets.canonical import canonical_example_text, detect_example_format


def test_chat_text_ignores_formatting_ids_and_weights() -> None:
    a = {
        "messages": [
            {"role": "system", "content": "Be   brief."},
            {"role": "user", "content": "What's\n the weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"a": 1, "b": 2}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "assistant", "content": "Sunny.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    }
    b = {
        "tools": [{"function": {"parameters": {}, "name": "weather"}, "type": "function"}],
        "messages": [
            {"content": "Be brief. ", "role": "system"},
            {"role": "user", "content": "What's the weather?"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "other", "function": {"arguments": '{"b":2,"a":1}', "name": "weather"}}],
            },
            {"role": "tool", "tool_call_id": "other", "content": "sunny"},
            {"role": "assistant", "content": "Sunny.", "weight": 0},
        ],
    }
    assert canonical_example_text(a) == canonical_example_text(b)
    assert canonical_example_text(a) == (
        "system: Be brief.\n"
        "user: What's the weather?\n"
        'assistant: call weather({"a":1,"b":2})\n'
        "tool: sunny\n"
        "assistant: Sunny.\n"
        "tools: weather"
    )


def test_content_changes_and_case_matter_unless_folded() -> None:
    a = {"messages": [{"role": "user", "content": "Hello"}]}
    b = {"messages": [{"role": "user", "content": "hello"}]}
    assert canonical_example_text(a) != canonical_example_text(b)
    assert canonical_example_text(a, casefold=True) == canonical_example_text(b, casefold=True)
    assert canonical_example_text(a) != canonical_example_text(
        {"messages": [{"role": "assistant", "content": "Hello"}]}
    )


def test_multipart_contents_and_inline_data() -> None:
    data_url = "data:image/png;base64," + "A" * 5000
    obj = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": data_url}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
                "name": "ada",
            }
        ]
    }
    text = canonical_example_text(obj)
    assert text.startswith("user(ada): Describe [image sha256:")
    assert text.endswith("[image https://example.com/cat.png]")
    assert len(text) < 200  # the base64 payload is hashed, not copied
    other = {"messages": [{**obj["messages"][0], "content": [*obj["messages"][0]["content"][:1]]}]}
    assert canonical_example_text(other) != text


def test_preference_and_legacy_formats() -> None:
    preference = {
        "input": {"messages": [{"role": "user", "content": "Pick"}]},
        "preferred_output": [{"role": "assistant", "content": "A"}],
        "non_preferred_output": [{"role": "assistant", "content": "B"}],
    }
    assert detect_example_format(preference) == "preference"
    assert canonical_example_text(preference) == "user: Pick\npreferred:\nassistant: A\nnon_preferred:\nassistant: B"
    legacy = {"prompt": "Say hi", "completion": " hi"}
    converted = {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]}
    assert detect_example_format(legacy) == "prompt_completion"
    # A legacy row and its chat conversion compare equal, so leakage across formats is still found.
    assert canonical_example_text(legacy) == canonical_example_text(converted)


def test_unknown_shapes_fall_back_to_sorted_json() -> None:
    assert canonical_example_text({"b": 1, "a": [1, "x  y"]}) == canonical_example_text({"a": [1, "x  y"], "b": 1})
    assert detect_example_format({"text": "x"}) == "other"
    # Malformed messages are rendered, not rejected: validation is someone else's job.
    assert canonical_example_text({"messages": ["oops", {"role": 3, "content": {"k": 1}}]}) == '"oops"\n3: {"k":1}'
    with pytest.raises(TypeError):
        canonical_example_text(["not", "a", "dict"])  # type: ignore[arg-type]
