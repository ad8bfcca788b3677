"""Canonical text of a training example: what duplicate, near-duplicate and leakage checks compare.

Two examples are the same training signal when their roles and contents agree, whatever the JSON key order, spacing,
tool-call ids or per-message ``weight``. The canonical text keeps exactly that signal:

* one line per message, ``role: content`` (``role(name): content`` when the message has a ``name``);
* contents are NFC-normalised and every run of whitespace becomes one space (so a newline inside a content cannot be
  confused with the message separator);
* multi-part contents render their text as ``service.chat`` reads it (text and refusal parts run together) and
  other parts as a bracketed marker carrying what identifies them (image URL, file id, or a short hash of inline
  data, which can be megabytes of base64);
* tool calls render as ``call name(arguments)`` with JSON arguments re-serialised with sorted keys;
* tool definitions render by name only: a long JSON schema repeated in every example would otherwise dominate the word
  shingles and make unrelated examples look alike;
* preference examples add ``preferred:`` and ``non_preferred:`` sections; legacy prompt/completion examples render as a
  user and an assistant message, so a dataset converted to chat still matches its source;
* anything else falls back to its sorted-key JSON.

Case is kept (exact duplicates are case-sensitive); pass ``casefold=True`` for the near-duplicate comparison.
``nfc=False`` skips the NFC step (about a third of the cost on non-Latin text) for callers that normalise the whole
text afterwards: the pieces are joined with characters that compose with nothing, so ``NFC(canonical(nfc=False))``
equals ``canonical()`` (duplicate sketching does this, normalising only the rare texts a table lookup flags).

``canonical_words_text`` is a cheaper stand-in for near-duplicate sketching: the same text with the whitespace of
plain contents left as it is. Whitespace only separates words, so it has exactly the words (and, after NFC, the same
normalised words) of ``canonical_example_text``, without a ``split`` and ``join`` per content, which create an object
per word and were the largest cost of sketching.
"""

from __future__ import annotations

import contextlib
import hashlib
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from service import chat

__all__ = ["canonical_example_text", "canonical_words_text", "detect_example_format", "normalize_whitespace"]


def normalize_whitespace(text: str) -> str:
    """NFC-normalise ``text`` and collapse every run of Unicode whitespace to a single space."""
    if text.isascii():  # O(1) in CPython, and ASCII is always NFC
        return " ".join(text.split())
    return " ".join(unicodedata.normalize("NFC", text).split())


def _collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


Normalizer = Callable[[str], str]
_SIMPLE_MESSAGE_KEYS = frozenset({"role", "content", "weight"})


def detect_example_format(obj: Mapping[str, Any]) -> str:
    """Return ``chat``, ``preference``, ``prompt_completion`` or ``other`` from the keys of a parsed example."""
    if "input" in obj and ("preferred_output" in obj or "non_preferred_output" in obj):
        return "preference"
    if "messages" in obj:
        return "chat"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    return "other"


def canonical_example_text(obj: Mapping[str, Any], *, casefold: bool = False, nfc: bool = True) -> str:
    """The text compared for duplicates: roles and contents of ``obj`` (any supported format), whitespace-normalised.

    Raises ``TypeError`` when ``obj`` is not a mapping. Malformed parts (a message that is not an object, a content of
    an unexpected type) are rendered by their JSON rather than rejected: validating the example is the validator's job,
    and two equally malformed lines are still duplicates.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"an example must be a JSON object, got {type(obj).__name__}")
    ws = normalize_whitespace if nfc else _collapse_whitespace
    kind = detect_example_format(obj)
    if kind == "chat":
        lines = _render_messages(obj.get("messages"), ws)
        lines.extend(_render_tools(obj, ws))
    elif kind == "preference":
        source = obj.get("input")
        lines = _render_messages(source.get("messages") if isinstance(source, Mapping) else source, ws)
        if isinstance(source, Mapping):
            lines.extend(_render_tools(source, ws))
        lines.append("preferred:")
        lines.extend(_render_messages(obj.get("preferred_output"), ws))
        lines.append("non_preferred:")
        lines.extend(_render_messages(obj.get("non_preferred_output"), ws))
    elif kind == "prompt_completion":
        lines = [
            f"user: {_render_content(obj.get('prompt'), ws)}",
            f"assistant: {_render_content(obj.get('completion'), ws)}",
        ]
    else:
        lines = [ws(_json(obj))]
    text = "\n".join(lines)
    return text.casefold() if casefold else text


def canonical_words_text(obj: Mapping[str, Any]) -> str:
    """A text with the words of ``canonical_example_text(obj, nfc=False)`` in the same order: plain chat messages
    (a string role and content) keep their content's whitespace, everything else is rendered as there.

    Whitespace is never part of a word, and the collapse only shortens runs between two non-space characters or
    drops them next to the ": " and newline separators, so no two characters become adjacent that were not; NFC
    composes only adjacent characters and never turns a non-space into a space or back. Hence the words, raw or
    after NFC, are those of the canonical text. (Word hashing cuts texts longer than its chunk at spaces, so a
    caller comparing word hashes must use the canonical text for those.)
    """
    if type(obj) is not dict or detect_example_format(obj) != "chat" or type(obj.get("messages")) is not list:
        return canonical_example_text(obj, nfc=False)
    lines = []
    for message in obj["messages"]:
        if type(message) is dict:
            role = message.get("role")
            content = message.get("content")
            # With a string role and content, keys within role, content and weight (as _render_message checks).
            if (
                type(role) is str
                and type(content) is str
                and (len(message) == 2 or (len(message) == 3 and "weight" in message))
            ):
                lines.append(f"{role}: {content}")
                continue
        lines.append(_render_message(message, _collapse_whitespace))
    lines.extend(_render_tools(obj, _collapse_whitespace))
    return "\n".join(lines)


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # Values that are not JSON at all (only possible when called with hand-built objects): repr is still stable.
        return repr(value)


def _render_messages(messages: Any, ws: Normalizer) -> list[str]:
    if messages is None:
        return []
    if isinstance(messages, Mapping):
        # A single message given where a list is expected (seen in hand-written preference outputs).
        messages = [messages]
    if not isinstance(messages, list):
        return [ws(_json(messages))]
    return [_render_message(message, ws) for message in messages]


def _render_message(message: Any, ws: Normalizer) -> str:
    if type(message) is dict and message.keys() <= _SIMPLE_MESSAGE_KEYS:
        # The common shape (a role and a text, maybe a weight): the general path below gives the same text.
        role = message.get("role")
        content = message.get("content")
        if type(role) is str and type(content) is str:
            return f"{role}: {ws(content)}"
    if not isinstance(message, Mapping):
        return ws(_json(message))
    role = message.get("role")
    label = role if isinstance(role, str) else _json(role)
    name = message.get("name")
    if isinstance(name, str) and name:
        label = f"{label}({ws(name)})"
    parts = [_render_content(message.get("content"), ws)]
    parts.extend(_render_tool_calls(message.get("tool_calls"), ws))
    function_call = message.get("function_call")
    if function_call is not None:
        parts.extend(_render_tool_calls([{"function": function_call}], ws))
    body = " ".join(part for part in parts if part)
    return f"{label}: {body}"


def _render_content(content: Any, ws: Normalizer) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return ws(content)
    if isinstance(content, list):
        # Runs of text parts read as service.chat reads them; every other part as a marker between them.
        segments = chat.text_segments(content, lambda part: _render_part(part, ws))
        return " ".join(text for text in (ws(segment) for segment in segments) if text)
    return ws(_json(content))


def _render_part(part: Any, ws: Normalizer) -> str:
    """A part that is not text (service.chat.part_text is None for it)."""
    if not isinstance(part, Mapping):
        return ws(_json(part))
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        return f"[image {_identify(url, ws)}]"
    if kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, Mapping) else audio
        return f"[audio {_identify(data, ws)}]"
    if kind == "file":
        file = part.get("file")
        if isinstance(file, Mapping):
            ident = file.get("file_id") or file.get("file_data") or file.get("filename")
        else:
            ident = file
        return f"[file {_identify(ident, ws)}]"
    return ws(_json(part))


def _identify(value: Any, ws: Normalizer) -> str:
    """A short stable identity for a URL, id or inline payload (data URLs and base64 hash to 16 hex digits)."""
    if not isinstance(value, str):
        value = _json(value)
    if len(value) <= 200 and not value.startswith("data:"):
        return ws(value)
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _render_tool_calls(calls: Any, ws: Normalizer) -> Iterable[str]:
    if not isinstance(calls, list):
        return [] if calls is None else [ws(_json(calls))]
    rendered = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            rendered.append(ws(_json(call)))
            continue
        name = function.get("name")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            # Arguments are a JSON document inside a string; re-serialising makes key order and spacing irrelevant.
            with contextlib.suppress(orjson.JSONDecodeError):
                arguments = _json(orjson.loads(arguments))
        else:
            arguments = _json(arguments)
        rendered.append(f"call {ws(str(name))}({ws(arguments)})")
    return rendered


def _render_tools(obj: Mapping[str, Any], ws: Normalizer) -> list[str]:
    names: list[str] = []
    for key in ("tools", "functions"):
        definitions = obj.get(key)
        if not isinstance(definitions, list):
            continue
        for definition in definitions:
            if not isinstance(definition, Mapping):
                names.append(ws(_json(definition)))
                continue
            function = definition.get("function", definition)
            name = function.get("name") if isinstance(function, Mapping) else None
            names.append(ws(name) if isinstance(name, str) else ws(_json(function)))
    return [f"tools: {', '.join(names)}"] if names else []
