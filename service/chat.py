"""One reading of an OpenAI chat message for everything that reads datasets and prompts: dataset validation, the
local trainer and inference, splitting, evaluation examples, judges and duplicate detection.

Dataset validation is the contract. A row it accepts is read through these functions everywhere else, so the trainer,
the splitter and the evaluator cannot see different text, roles, names, weights or tool calls in the same row.

* Roles are ``system``, ``developer`` (the newer name of the system role), ``user``, ``assistant``, ``tool`` and
  the deprecated ``function``; each has its own set of keys (``MESSAGE_KEYS``).
* A content is a string, null (an assistant message that calls tools, calls a function or refuses; a ``function``
  message) or an array of parts. Text parts are ``{"type": "text", "text": ...}``; assistant messages may also have
  ``{"type": "refusal", "refusal": ...}`` parts, whose text is text like any other; user messages may have
  ``image_url`` parts, which are not text (``PART_TYPES``).
* The text of an array content is the text of its text and refusal parts, in order, run together
  (``PART_SEPARATOR`` is empty): validation counts a content's tokens as the sum of its parts' tokens, with no
  separator between them, and the trainer has always rendered the parts so. Readers that show other parts too (a
  judge, duplicate detection) put a marker for each between the runs of text (``text_segments``).
* A message-level ``refusal`` is text the assistant said; a message's text is its content's text then its refusal.
* ``weight`` (0 or 1) only on assistant messages; an assistant message is trained on unless its weight is 0.
* The answer of an assistant message is its text or, when that is blank, its tool calls (or legacy function call)
  as compact JSON with sorted keys, so JSON graders and stratification compare calls, not their key order.

Pure functions and values, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "ASSISTANT",
    "DEVELOPER",
    "FUNCTION",
    "MESSAGE_KEYS",
    "OUTPUT_KEYS",
    "PART_SEPARATOR",
    "PART_TEXT_FIELD",
    "PART_TYPES",
    "ROLES",
    "SYSTEM",
    "SYSTEM_ROLES",
    "TOOL",
    "USER",
    "ChatFormatError",
    "Message",
    "answer_of",
    "canonical_json",
    "function_calls",
    "last_answer",
    "parse_messages",
    "part_text",
    "read_message",
    "text_of",
    "text_parts",
    "text_segments",
]

SYSTEM, DEVELOPER, USER, ASSISTANT, TOOL, FUNCTION = "system", "developer", "user", "assistant", "tool", "function"
ROLES = (SYSTEM, DEVELOPER, USER, ASSISTANT, TOOL, FUNCTION)
SYSTEM_ROLES = frozenset({SYSTEM, DEVELOPER})

MESSAGE_KEYS: dict[str, frozenset[str]] = {
    SYSTEM: frozenset({"role", "content", "name"}),
    DEVELOPER: frozenset({"role", "content", "name"}),
    USER: frozenset({"role", "content", "name"}),
    ASSISTANT: frozenset({"role", "content", "name", "tool_calls", "function_call", "weight", "refusal", "audio"}),
    TOOL: frozenset({"role", "content", "tool_call_id"}),
    FUNCTION: frozenset({"role", "content", "name"}),
}
# A preference output is an assistant message that is not trained on by weight.
OUTPUT_KEYS = MESSAGE_KEYS[ASSISTANT] - {"weight"}

# Part type -> the key holding its text; parts of other types carry no text.
PART_TEXT_FIELD = {"text": "text", "refusal": "refusal"}
# The part types each role may use (others are refused by validation).
PART_TYPES: dict[str, frozenset[str]] = {
    SYSTEM: frozenset({"text"}),
    DEVELOPER: frozenset({"text"}),
    USER: frozenset({"text", "image_url"}),
    ASSISTANT: frozenset({"text", "refusal"}),
    TOOL: frozenset({"text"}),
    FUNCTION: frozenset({"text"}),
}
PART_SEPARATOR = ""


class ChatFormatError(ValueError):
    """A message that validation would not accept; ``field`` is its path (``messages[2].content``)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: the same value always gives the same text."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def part_text(part: Any) -> str | None:
    """The text of a text or refusal part; None for any other part (an image, or something malformed)."""
    if type(part) is not dict:
        return None
    kind = part.get("type")
    key = PART_TEXT_FIELD.get(kind) if type(kind) is str else None
    if key is None:
        return None
    text = part.get(key)
    return text if type(text) is str else None


def text_parts(content: Any) -> list[str]:
    """The strings of a content that are text: the string itself, or the text of each text and refusal part."""
    if type(content) is str:
        return [content]
    if type(content) is list:
        return [text for text in map(part_text, content) if text is not None]
    return []


def text_of(content: Any, *, placeholders: bool = False) -> str:
    """The text of a content (its text parts joined with ``PART_SEPARATOR``). ``placeholders`` also shows each part
    that is not text as ``[its type]`` where it stands, for a reader who should know an image was there (a judge).

    A content validation refuses (a number, an object) reads as its canonical JSON rather than failing: only the
    strict ``read_message`` refuses.
    """
    if type(content) is str:
        return content
    if content is None:
        return ""
    if type(content) is not list:
        return canonical_json(content)
    if placeholders:
        return " ".join(text_segments(content, _placeholder))
    return PART_SEPARATOR.join(text for text in map(part_text, content) if text is not None)


def _placeholder(part: Any) -> str:
    kind = part.get("type") if type(part) is dict else None
    return f"[{kind if type(kind) is str else 'part'}]"


def text_segments(parts: list[Any], marker: Callable[[Any], str]) -> list[str]:
    """An array content as its runs of text (each the run's parts joined with ``PART_SEPARATOR``) with
    ``marker(part)`` for each other part where it stands; empty segments are left out."""
    segments: list[str] = []
    run: list[str] = []
    for part in parts:
        text = part_text(part)
        if text is not None:
            run.append(text)
            continue
        if run:
            segments.append(PART_SEPARATOR.join(run))
            run = []
        segments.append(marker(part))
    if run:
        segments.append(PART_SEPARATOR.join(run))
    return [segment for segment in segments if segment]


def _said(content: Any, refusal: Any) -> str:
    text = text_of(content)
    if type(refusal) is str and refusal:
        return f"{text}{PART_SEPARATOR}{refusal}" if text else refusal
    return text


def _answer(text: str, tool_calls: Any, function_call: Any) -> str:
    if (text and not text.isspace()) or not (tool_calls or function_call):
        return text
    return canonical_json(tool_calls if tool_calls else function_call)


def answer_of(message: Mapping[str, Any]) -> str:
    """The answer an assistant message gives (module rules), read without checking the message."""
    content = message.get("content")
    refusal = message.get("refusal")
    text = content if type(content) is str and refusal is None else _said(content, refusal)
    return _answer(text, message.get("tool_calls"), message.get("function_call"))


def function_calls(message: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(function name, arguments) of each tool call of a message, then of its legacy ``function_call``; arguments
    are the JSON text as given (a value that is not text reads as its canonical JSON)."""
    calls = message.get("tool_calls")
    functions = [call.get("function") for call in calls if type(call) is dict] if type(calls) is list else []
    functions.append(message.get("function_call"))
    out = []
    for function in functions:
        if type(function) is not dict:
            continue
        arguments = function.get("arguments")
        out.append((str(function.get("name")), arguments if type(arguments) is str else canonical_json(arguments)))
    return out


@dataclass(frozen=True)
class Message:
    """One message as every reader sees it. ``source`` is the message as given (for readers that pass it on)."""

    role: str
    text: str
    content: Any = None
    name: str | None = None
    weight: int | None = None
    tool_calls: list[Any] | None = None
    function_call: Mapping[str, Any] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    images: int = 0
    source: Mapping[str, Any] | None = None

    @property
    def is_system(self) -> bool:
        return self.role in SYSTEM_ROLES

    @property
    def trained(self) -> bool:
        """Whether fine-tuning learns this message (an assistant message without ``weight: 0``)."""
        return self.role == ASSISTANT and self.weight != 0

    @property
    def answer(self) -> str:
        return _answer(self.text, self.tool_calls, self.function_call)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def read_message(obj: Any, where: str = "message", *, output: bool = False, prompt: bool = False) -> Message:
    """Read one message, raising ``ChatFormatError`` for what validation refuses in its shape: not an object, an
    unknown role, a key the role does not have, a weight other than 0 or 1 or not on an assistant message, a content
    of the wrong type or a part the role may not use, assistant audio, and a message with nothing in it. ``output``
    reads a preference output (an assistant message, no weight). ``prompt`` reads a conversation an API client sends
    for inference, as chat servers do: other keys are ignored and a blank content is allowed.

    Rules about the conversation (tool call ids, names' patterns, tool definitions) are validation's alone.
    """
    if type(obj) is not dict:
        raise ChatFormatError(f"a message must be an object, got {type_name(obj)}", where)
    role = obj.get("role")
    if role not in MESSAGE_KEYS:
        raise ChatFormatError(f"role must be one of {', '.join(ROLES)}, got {role!r}", f"{where}.role")
    if output and role != ASSISTANT:
        raise ChatFormatError(f"an output message must be an assistant's, not {role}", f"{where}.role")
    if not prompt:
        allowed = OUTPUT_KEYS if output else MESSAGE_KEYS[role]
        # A weight where it does not belong is reported as a misplaced weight, below (as validation does).
        unknown = sorted(key for key in obj if key not in allowed and key != "weight")
        if unknown:
            raise ChatFormatError(f"unrecognised keys {unknown} in a {role} message", f"{where}.{unknown[0]}")
    weight = obj.get("weight")
    if weight is not None and (role != ASSISTANT or type(weight) is not int or weight not in (0, 1)):
        problem = "weight must be 0 or 1" if role == ASSISTANT else "weight is only allowed on assistant messages"
        raise ChatFormatError(problem, f"{where}.weight")
    content = obj.get("content")
    images = 0
    if type(content) is list:
        if not content:
            raise ChatFormatError("content is an empty array", f"{where}.content")
        allowed_parts = PART_TYPES[role]
        for j, part in enumerate(content):
            kind = part.get("type") if type(part) is dict else None
            if type(kind) is not str or kind not in allowed_parts:
                raise ChatFormatError(f"a {role} message cannot have a {kind!r} part", f"{where}.content[{j}]")
            if kind == "image_url":
                images += 1
            elif part_text(part) is None:
                field = PART_TEXT_FIELD[kind]
                raise ChatFormatError(f"a {kind} part needs a string `{field}`", f"{where}.content[{j}].{field}")
    elif content is not None and type(content) is not str:
        raise ChatFormatError(f"content must be a string or an array, got {type_name(content)}", f"{where}.content")
    tool_calls = obj.get("tool_calls")
    function_call = obj.get("function_call")
    refusal = obj.get("refusal")
    if refusal is not None and type(refusal) is not str:
        raise ChatFormatError(f"`refusal` must be a string, got {type_name(refusal)}", f"{where}.refusal")
    if obj.get("audio") is not None:
        raise ChatFormatError("assistant audio is not supported", f"{where}.audio")
    calls = role == ASSISTANT and bool(tool_calls or function_call)
    if content is None and not (calls or role == FUNCTION or (role == ASSISTANT and refusal)):
        raise ChatFormatError("message has no content", f"{where}.content")
    if type(content) is str and not (prompt or calls or role == FUNCTION) and (not content or content.isspace()):
        raise ChatFormatError(f"{role} content is empty", f"{where}.content")
    name = obj.get("name")
    call_id = obj.get("tool_call_id")
    return Message(
        role=role,
        text=_said(content, refusal),
        content=content,
        name=name if type(name) is str else None,
        weight=weight,
        tool_calls=tool_calls if type(tool_calls) is list else None,
        function_call=function_call if type(function_call) is dict else None,
        tool_call_id=call_id if type(call_id) is str else None,
        refusal=refusal,
        images=images,
        source=obj,
    )


def parse_messages(messages: Any, where: str = "messages", *, output: bool = False, prompt: bool = False) -> list[Message]:
    """Read a message list (``read_message`` for each); raises ``ChatFormatError`` for a list that is not one."""
    if type(messages) is not list:
        raise ChatFormatError(f"messages must be an array, got {type_name(messages)}", where)
    return [
        read_message(message, f"{where}[{i}]", output=output, prompt=prompt)
        for i, message in enumerate(messages)
    ]


def last_answer(messages: Sequence[Message]) -> int | None:
    """Index of the last assistant message, if any."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == ASSISTANT:
            return i
    return None
