"""Checks of one parsed example, per format, with its token counts.

Token counts follow OpenAI's data-prep cookbook: per message 3 tokens plus the tokens of each value (+1 for a
``name``), plus 3 for the reply primer per example. The cookbook only has string values; for the rest we count:
``weight`` and null values not at all (they are not text), an array ``content`` as the sum of its text (and refusal)
parts (images are not counted: their cost depends on their size), and any other value (``tool_calls``,
``function_call``) as its compact JSON. Tool definitions (``tools``/``functions``) add the tokens of their compact
JSON to the example. A preference example counts its input messages, tool definitions and both outputs, plus the
primer once; a prompt/completion example the tokens of the two strings.
"""

from __future__ import annotations

from typing import Any

import orjson

from service import chat
from service.chat import type_name
from service.datasets.validation.state import (
    FinalAnswers,
    IssueCollector,
    RangeStats,
    SystemPrompts,
    TokenCounts,
    excerpt,
)
from service.datasets.validation.token_batch import PER_MESSAGE, PER_NAME, PRIMER, Part, TokenBatch
from service.datasets.validation.tool_checks import (
    FUNCTION_NAME_RE,
    MESSAGE_NAME_RE,
    check_function_call,
    check_tool_calls,
    check_tools,
)

_MESSAGE_KEYS = chat.MESSAGE_KEYS  # validation is the contract service.chat writes down
_OUTPUT_KEYS = chat.OUTPUT_KEYS
_CHAT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_PREFERENCE_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
_PREFERENCE_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
_PROMPT_COMPLETION_KEYS = frozenset({"prompt", "completion"})


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class ExampleChecker(TokenBatch):
    """Checks examples of one range and accumulates their statistics (its strings counted by ``TokenBatch``)."""

    def __init__(
        self,
        *,
        counts: TokenCounts,
        issues: IssueCollector,
        stats: RangeStats,
        token_limit: int | None,
        system_prompts: SystemPrompts,
        finals: FinalAnswers,
    ) -> None:
        super().__init__(counts=counts, issues=issues, stats=stats, token_limit=token_limit)
        self.system_prompts = system_prompts
        self.finals = finals

    def _content_parts(self, parts: list, role: str, line: int, where: str, ids: list[int]) -> tuple[bool, bool]:
        """Validate an array content and queue its text for counting; returns whether it has text and images."""
        add = self.issues.add
        allowed = chat.PART_TYPES[role]
        has_text = has_image = False
        if not parts:
            add("empty_content", line, where, "content is an empty array")
            return False, False
        for j, part in enumerate(parts):
            at = f"{where}[{j}]"
            if type(part) is not dict:
                add("invalid_content_part", line, at, f"a content part must be an object, got {type_name(part)}")
                continue
            kind = part.get("type")
            if type(kind) is str and kind in allowed:
                field = chat.PART_TEXT_FIELD.get(kind)
                if field is not None:  # text, or a refusal: text that counts like any other
                    text = part.get(field)
                    if type(text) is not str:
                        add("invalid_content_part", line, f"{at}.{field}", f"a {kind} part needs a string `{field}`")
                        continue
                    ids.append(self._ref(text, line, f"{at}.{field}"))
                    has_text = has_text or bool(text.strip())
                    continue
                image = part.get("image_url")
                url = image.get("url") if type(image) is dict else None
                if type(url) is not str or not url:
                    add("invalid_content_part", line, at + ".image_url", "an image part needs `image_url.url`")
                    continue
                has_image = True
            elif kind in ("input_audio", "file", "image_url"):
                add("unsupported_content", line, at, f"`{kind}` parts are not supported in {role} messages here")
            else:
                add("invalid_content_part", line, at + ".type", f"unknown content part type {excerpt(kind)}")
        return has_text, has_image

    def _tool_part(self, container: dict, line: int, prefix: str) -> Part | None:
        ids = [
            self._ref(_dumps(container[key]), line, prefix + key)
            for key in ("tools", "functions")
            if container.get(key) is not None
        ]
        return ("tools", 0, ids) if ids else None

    def _messages(
        self, messages: list, line: int, prefix: str, tool_names: set[str] | None, *, outputs: bool = False
    ) -> tuple[list[Part], dict[str, Any]]:
        """Check a message list and queue its strings for counting. Returns its token parts and a summary."""
        add = self.issues.add
        ref = self._ref
        parts: list[Part] = []
        roles: list[str | None] = []
        call_ids: set[str] = set()
        assistants = weighted = 0
        system_text: str | None = None
        last_assistant: str | None = None
        images = False
        for i, message in enumerate(messages):
            at = f"{prefix}[{i}]"
            if type(message) is not dict:
                add("not_an_object", line, at, f"a message must be an object, got {type_name(message)}")
                roles.append(None)
                continue
            role = message.get("role")
            allowed = _MESSAGE_KEYS.get(role) if type(role) is str else None
            if allowed is None:
                if role is None:
                    add("missing_key", line, at + ".role", "message has no `role`")
                elif type(role) is not str:
                    add("invalid_type", line, at + ".role", f"`role` must be a string, got {type_name(role)}")
                else:
                    add("unknown_role", line, at + ".role", f"unknown role {excerpt(role)!r}", excerpt(role))
                role = None
            elif outputs:
                allowed = _OUTPUT_KEYS
                if role != "assistant":
                    add("preference_shape", line, at + ".role", f"an output message must be an assistant's, not {role}")
            roles.append(role)
            # Tokens: every value of the message, whatever its validity (the cookbook formula).
            const = PER_MESSAGE
            ids: list[int] = []
            content_text: str | None = None
            has_text = False
            for key, value in message.items():
                if allowed is not None and key not in allowed and (key != "weight" or role == "assistant"):
                    # A weight on a non-assistant message is reported once, as invalid_weight, below.
                    add("unknown_key", line, f"{at}.{key}", f"unknown key `{key}` in a {role} message")
                if value is None or key == "weight":
                    continue
                if type(value) is str:
                    ids.append(ref(value, line, f"{at}.{key}"))
                    if key == "content":
                        content_text = value
                        has_text = not value.isspace() and value != ""
                elif key == "content" and type(value) is list and role is not None:
                    has_text, has_image = self._content_parts(value, role, line, at + ".content", ids)
                    images = images or has_image
                    if has_text and role in chat.SYSTEM_ROLES:
                        content_text = chat.text_of(value)
                else:
                    ids.append(ref(_dumps(value), line, f"{at}.{key}"))
                if key == "name":
                    const += PER_NAME
            parts.append((role, const, ids))
            if role is None:
                continue

            # Role-specific rules.
            content = message.get("content")
            if "name" in message:
                name = message["name"]
                if role == "function":
                    ok = type(name) is str and FUNCTION_NAME_RE.fullmatch(name) is not None
                else:
                    ok = type(name) is str and MESSAGE_NAME_RE.fullmatch(name) is not None
                if not ok:
                    add("invalid_name", line, at + ".name", f"invalid name {excerpt(name)!r}", excerpt(name))
            if role == "assistant":
                assistants += 1
                has_calls = False
                if "tool_calls" in message and message["tool_calls"] is not None:
                    check_tool_calls(message["tool_calls"], line, at + ".tool_calls", tool_names, call_ids, add)
                    has_calls = True
                if "function_call" in message and message["function_call"] is not None:
                    add("legacy_function_call", line, at + ".function_call", "`function_call` is deprecated")
                    check_function_call(message["function_call"], line, at + ".function_call", None, add)
                    has_calls = True
                if "audio" in message and message["audio"] is not None:
                    add("unsupported_content", line, at + ".audio", "assistant audio is not supported for training")
                refusal = message.get("refusal")
                if refusal is not None and type(refusal) is not str:
                    add("invalid_type", line, at + ".refusal", f"`refusal` must be a string, got {type_name(refusal)}")
                if content is None:
                    if not has_calls and not refusal:
                        if "content" in message:
                            add(
                                "empty_content",
                                line,
                                at + ".content",
                                "assistant content is null and has no tool calls",
                            )
                        else:
                            add("missing_key", line, at + ".content", "assistant message has no content or tool calls")
                elif type(content) is str:
                    if not has_text and not has_calls:
                        add("empty_content", line, at + ".content", "assistant content is empty")
                elif type(content) is not list:
                    add("invalid_type", line, at + ".content", f"content must be a string, got {type_name(content)}")
                if "weight" in message:
                    weight = message["weight"]
                    if type(weight) is not int or weight not in (0, 1):
                        add("invalid_weight", line, at + ".weight", f"weight must be 0 or 1, got {excerpt(weight)}")
                        weighted += 1
                    elif weight == 1:
                        weighted += 1
                else:
                    weighted += 1
                last_assistant = chat.answer_of(message)
                continue
            if "weight" in message:
                add("invalid_weight", line, at + ".weight", f"weight is only allowed on assistant messages, not {role}")
            if role == "tool":
                call_id = message.get("tool_call_id")
                if call_id is None:
                    add("missing_key", line, at + ".tool_call_id", "a tool message needs `tool_call_id`")
                elif type(call_id) is not str:
                    add("invalid_type", line, at + ".tool_call_id", "`tool_call_id` must be a string")
                elif call_id not in call_ids:
                    add(
                        "unmatched_tool_call",
                        line,
                        at + ".tool_call_id",
                        f"no earlier assistant tool call has id {excerpt(call_id)!r}",
                    )
            elif role == "function":
                add("legacy_function_call", line, at + ".role", "the `function` role is deprecated; use `tool`")
                if "name" not in message:
                    add("missing_key", line, at + ".name", "a function message needs `name`")
                if content is not None and type(content) is not str:
                    add("invalid_type", line, at + ".content", f"content must be a string, got {type_name(content)}")
                continue
            if "content" not in message:
                add("missing_key", line, at + ".content", f"{role} message has no `content`")
            elif type(content) is str:
                if not has_text:
                    add("empty_content", line, at + ".content", f"{role} content is empty")
            elif type(content) is not list:
                add(
                    "invalid_type",
                    line,
                    at + ".content",
                    f"content must be a string or array, got {type_name(content)}",
                )
            if i == 0 and role in chat.SYSTEM_ROLES and content_text is not None:
                system_text = content_text
        summary = {
            "roles": roles,
            "assistants": assistants,
            "weighted": weighted,
            "system_text": system_text,
            "last_assistant": last_assistant,
            "images": images,
        }
        return parts, summary

    def _unknown_keys(self, obj: dict, allowed: frozenset[str], line: int, prefix: str, kind: str) -> None:
        for key in obj:
            if key not in allowed:
                self.issues.add("unknown_key", line, prefix + key, f"unknown key `{key}` in a {kind}")

    # --- formats ------------------------------------------------------------------------------------------------------

    def chat(self, obj: dict, line: int) -> None:
        add = self.issues.add
        self._unknown_keys(obj, _CHAT_KEYS, line, "", "chat example")
        messages = obj.get("messages")
        if type(messages) is not list:
            if "messages" not in obj:
                add("missing_key", line, "messages", "no `messages` array")
            else:
                add("invalid_type", line, "messages", f"`messages` must be an array, got {type_name(messages)}")
            return
        if not messages:
            add("empty_messages", line, "messages", "`messages` is empty")
            return
        if "parallel_tool_calls" in obj and type(obj["parallel_tool_calls"]) is not bool:
            add("invalid_type", line, "parallel_tool_calls", "`parallel_tool_calls` must be a boolean")
        tool_names = check_tools(obj, line, "", add) if ("tools" in obj or "functions" in obj) else None
        parts, summary = self._messages(messages, line, "messages", tool_names)
        tools = self._tool_part(obj, line, "")
        if tools is not None:
            parts.append(tools)
        parts.append((None, PRIMER, []))
        self._pend(line, parts, len(messages))
        self._example_warnings(summary, line, "messages", chat=True)

    def _example_warnings(self, summary: dict[str, Any], line: int, prefix: str, *, chat: bool) -> None:
        add = self.issues.add
        stats = self.stats
        roles = summary["roles"]
        if "system" not in roles and "developer" not in roles:
            stats.missing_system += 1
            add("missing_system_message", line, prefix, "no system message")
        else:
            text = summary["system_text"]
            if text is not None:
                self.system_prompts.add(text, line)
        if "user" not in roles:
            stats.missing_user += 1
            add("missing_user_message", line, prefix, "no user message")
        if summary["images"]:
            add("image_tokens_not_counted", line, prefix, "image inputs: their tokens are not counted")
        if not chat:
            return
        if summary["assistants"] == 0:
            add("no_assistant_message", line, prefix, "no assistant message to train on")
            return
        if summary["weighted"] == 0:
            add("no_trainable_messages", line, prefix, "every assistant message has weight 0")
        last = next((r for r in reversed(roles) if r is not None), None)
        if last is not None and last != "assistant":
            add("last_message_not_assistant", line, prefix, f"ends with a {last} message, which is not trained on")
        if summary["last_assistant"] is not None:
            self.finals.add(summary["last_assistant"])

    def preference(self, obj: dict, line: int) -> None:
        add = self.issues.add
        self._unknown_keys(obj, _PREFERENCE_KEYS, line, "", "preference example")
        source = obj.get("input")
        if type(source) is not dict:
            if "input" not in obj:
                add("missing_key", line, "input", "no `input` object")
            else:
                add("preference_shape", line, "input", f"`input` must be an object, got {type_name(source)}")
            return
        self._unknown_keys(source, _PREFERENCE_INPUT_KEYS, line, "input.", "preference input")
        messages = source.get("messages")
        if type(messages) is not list:
            if "messages" not in source:
                add("missing_key", line, "input.messages", "no `input.messages` array")
            else:
                add("invalid_type", line, "input.messages", "`input.messages` must be an array")
            return
        if not messages:
            add("empty_messages", line, "input.messages", "`input.messages` is empty")
            return
        if "parallel_tool_calls" in source and type(source["parallel_tool_calls"]) is not bool:
            add("invalid_type", line, "input.parallel_tool_calls", "`parallel_tool_calls` must be a boolean")
        tool_names = check_tools(source, line, "input.", add) if "tools" in source else None
        parts, summary = self._messages(messages, line, "input.messages", tool_names)
        if summary["roles"] and summary["roles"][-1] == "assistant":
            add("preference_shape", line, "input.messages", "the input ends with an assistant message")
        tools = self._tool_part(source, line, "input.")
        if tools is not None:
            parts.append(tools)
        parts.append((None, PRIMER, []))
        n_messages = len(messages)
        outputs = []
        for key in ("preferred_output", "non_preferred_output"):
            value = obj.get(key)
            if key not in obj:
                add("missing_key", line, key, f"no `{key}`")
                continue
            if type(value) is not list or len(value) != 1:
                got = f"{len(value)} messages" if type(value) is list else type_name(value)
                add("preference_shape", line, key, f"`{key}` must be an array of exactly one message, got {got}")
                if type(value) is not list:
                    continue
            if not value:
                continue
            output_parts, _ = self._messages(value, line, key, tool_names, outputs=True)
            parts.extend(output_parts)
            n_messages += len(value)
            outputs.append(value)
        if len(outputs) == 2 and outputs[0] == outputs[1]:
            add("identical_preference_outputs", line, "preferred_output", "preferred and non-preferred are identical")
        self._pend(line, parts, n_messages)
        self._example_warnings(summary, line, "input.messages", chat=False)

    def prompt_completion(self, obj: dict, line: int) -> None:
        add = self.issues.add
        self._unknown_keys(obj, _PROMPT_COMPLETION_KEYS, line, "", "prompt/completion example")
        parts: list[Part] = []
        ok = True
        values: dict[str, str] = {}
        for key in ("prompt", "completion"):
            value = obj.get(key)
            if type(value) is not str:
                ok = False
                if key not in obj:
                    add("missing_key", line, key, f"no `{key}`")
                else:
                    add("invalid_type", line, key, f"`{key}` must be a string, got {type_name(value)}")
                continue
            values[key] = value
            parts.append((key, 0, [self._ref(value, line, key)]))
        completion = values.get("completion")
        if completion is not None and not completion.strip():
            add("empty_content", line, "completion", "completion is empty")
        if not ok and not values:
            return
        self._pend(line, parts, 0)
        if completion is not None:
            self.finals.add(completion)
