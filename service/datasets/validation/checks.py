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

import re
from typing import Any

import orjson

from service import chat
from service.datasets.validation.state import (
    FinalAnswers,
    IssueCollector,
    RangeStats,
    SystemPrompts,
    TokenCounts,
    excerpt,
    hist_add,
)
from service.tokens import SPECIAL_TOKEN_RE

_MESSAGE_KEYS = chat.MESSAGE_KEYS  # validation is the contract service.chat writes down
_OUTPUT_KEYS = chat.OUTPUT_KEYS
_CHAT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_PREFERENCE_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
_PREFERENCE_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
_PROMPT_COMPLETION_KEYS = frozenset({"prompt", "completion"})
_TOOL_KEYS = frozenset({"type", "function"})
_FUNCTION_KEYS = frozenset({"name", "description", "parameters", "strict"})
_TOOL_CALL_KEYS = frozenset({"id", "type", "function"})
_CALL_FUNCTION_KEYS = frozenset({"name", "arguments"})

# OpenAI's patterns: message names may not contain whitespace or < | \ / >; function names are identifiers.
_MESSAGE_NAME_RE = re.compile(r"[^\s<|\\/>]+")
_FUNCTION_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")

_PRIMER = 3
_PER_MESSAGE = 3
_PER_NAME = 1

# Strings are counted in batches, one encoding at a time: alternating two tokenizers string by string evicts their
# vocabularies from the CPU caches and costs about 20%.
FLUSH_CHARS = 2 << 20
FLUSH_EXAMPLES = 2048

# One example's token bookkeeping until its batch is counted: (role or None, constant tokens, ids of counted strings).
Part = tuple[str | None, int, list[int]]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


class ExampleChecker:
    """Checks examples of one range and accumulates their statistics."""

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
        self.counts = counts
        self.issues = issues
        self.stats = stats
        self.token_limit = token_limit
        self.system_prompts = system_prompts
        self.finals = finals
        self._ids: dict[str, int] = {}
        self._texts: list[str] = []
        self._chars = 0
        self._pending: list[tuple[int, list[Part], int]] = []  # (line, parts, messages)

    # --- shared pieces ------------------------------------------------------------------------------------------------

    def _special(self, text: str, line: int, where: str) -> None:
        match = SPECIAL_TOKEN_RE.search(text)
        if match is not None:
            self.issues.add(
                "special_token_text",
                line,
                where,
                f"contains the special-token text {match.group()}; OpenAI fails the whole job on it",
                excerpt(text[max(0, match.start() - 20) : match.end() + 20]),
            )

    def _ref(self, text: str, line: int, where: str) -> int:
        """Check ``text`` for special tokens and queue it for counting; returns its id in the batch."""
        if "<|" in text:
            self._special(text, line, where)
        i = self._ids.get(text)
        if i is None:
            i = self._ids[text] = len(self._texts)
            self._texts.append(text)
            self._chars += len(text)
        return i

    def _pend(self, line: int, parts: list[Part], n_messages: int) -> None:
        self._pending.append((line, parts, n_messages))
        if self._chars >= FLUSH_CHARS or len(self._pending) >= FLUSH_EXAMPLES:
            self.flush()

    def flush(self) -> None:
        """Count the queued strings and record the queued examples (in line order)."""
        if self._pending:
            primary, other = self.counts.count_many(self._texts)
            role_hists = self.stats.tokens_per_role
            for line, parts, n_messages in self._pending:
                p = o = 0
                for role, const, ids in parts:
                    mp = const
                    for i in ids:
                        mp += primary[i]
                    p += mp
                    if other is not None:
                        o += const
                        for i in ids:
                            o += other[i]
                    if role is not None:
                        hist = role_hists.get(role)
                        if hist is None:
                            hist = role_hists[role] = {}
                        hist[mp] = hist.get(mp, 0) + 1
                self._record(line, p, o if other is not None else None, n_messages)
        self._ids = {}
        self._texts = []
        self._chars = 0
        self._pending = []

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
                add("invalid_content_part", line, at, f"a content part must be an object, got {_type_name(part)}")
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

    def _tools(self, container: dict, line: int, prefix: str) -> set[str] | None:
        """Validate ``tools`` / ``functions`` of an example; returns the defined function names (None: no tools)."""
        add = self.issues.add
        names: set[str] | None = None
        for key in ("tools", "functions"):
            if key not in container:
                continue
            defs = container[key]
            where = prefix + key
            if key == "functions":
                add("legacy_function_call", line, where, "`functions` is deprecated; use `tools`")
            if type(defs) is not list:
                add("invalid_tools", line, where, f"`{key}` must be an array, got {_type_name(defs)}")
                continue
            if names is None:
                names = set()
            for i, item in enumerate(defs):
                at = f"{where}[{i}]"
                if type(item) is not dict:
                    add("invalid_tools", line, at, f"a tool must be an object, got {_type_name(item)}")
                    continue
                if key == "tools":
                    for k in item:
                        if k not in _TOOL_KEYS:
                            add("invalid_tools", line, f"{at}.{k}", f"unknown key `{k}` in a tool definition")
                    if item.get("type") != "function":
                        add("invalid_tools", line, at + ".type", "a tool needs `type: function`")
                    function = item.get("function")
                    at = at + ".function"
                else:
                    function = item
                if type(function) is not dict:
                    add("invalid_tools", line, at, "a tool needs a `function` object")
                    continue
                for k in function:
                    if k not in _FUNCTION_KEYS:
                        add("invalid_tools", line, f"{at}.{k}", f"unknown key `{k}` in a function definition")
                name = function.get("name")
                if type(name) is not str or _FUNCTION_NAME_RE.fullmatch(name) is None:
                    add("invalid_tools", line, at + ".name", "a function name must match ^[a-zA-Z0-9_-]{1,64}$")
                elif name in names:
                    add("invalid_tools", line, at + ".name", f"function `{name}` is defined twice")
                else:
                    names.add(name)
                if "parameters" in function and type(function["parameters"]) is not dict:
                    add("invalid_tools", line, at + ".parameters", "`parameters` must be a JSON schema object")
                if "description" in function and type(function["description"]) is not str:
                    add("invalid_tools", line, at + ".description", "`description` must be a string")
                if "strict" in function and type(function["strict"]) is not bool and function["strict"] is not None:
                    add("invalid_tools", line, at + ".strict", "`strict` must be a boolean")
        return names

    def _tool_part(self, container: dict, line: int, prefix: str) -> Part | None:
        ids = [
            self._ref(_dumps(container[key]), line, prefix + key)
            for key in ("tools", "functions")
            if container.get(key) is not None
        ]
        return ("tools", 0, ids) if ids else None

    def _tool_calls(self, calls: Any, line: int, where: str, tool_names: set[str] | None, ids: set[str]) -> None:
        add = self.issues.add
        if type(calls) is not list or not calls:
            add("malformed_tool_call", line, where, "`tool_calls` must be a non-empty array")
            return
        for i, call in enumerate(calls):
            at = f"{where}[{i}]"
            if type(call) is not dict:
                add("malformed_tool_call", line, at, f"a tool call must be an object, got {_type_name(call)}")
                continue
            for k in call:
                if k not in _TOOL_CALL_KEYS:
                    add("malformed_tool_call", line, f"{at}.{k}", f"unknown key `{k}` in a tool call")
            call_id = call.get("id")
            if type(call_id) is not str or not call_id:
                add("malformed_tool_call", line, at + ".id", "a tool call needs a non-empty string `id`")
            else:
                ids.add(call_id)
            if call.get("type") != "function":
                add("malformed_tool_call", line, at + ".type", "a tool call needs `type: function`")
            self._function_call(call.get("function"), line, at + ".function", tool_names)

    def _function_call(self, function: Any, line: int, at: str, tool_names: set[str] | None) -> None:
        add = self.issues.add
        if type(function) is not dict:
            add("malformed_tool_call", line, at, "needs a `function` object with `name` and `arguments`")
            return
        for k in function:
            if k not in _CALL_FUNCTION_KEYS:
                add("malformed_tool_call", line, f"{at}.{k}", f"unknown key `{k}` in a function call")
        name = function.get("name")
        if type(name) is not str or not name:
            add("malformed_tool_call", line, at + ".name", "needs a non-empty string `name`")
        elif tool_names is not None and name not in tool_names:
            add("undefined_tool", line, at + ".name", f"calls `{excerpt(name)}`, which is not in the example's tools")
        arguments = function.get("arguments")
        if type(arguments) is not str:
            add(
                "malformed_tool_call",
                line,
                at + ".arguments",
                f"`arguments` must be a string holding JSON, got {_type_name(arguments)}",
                excerpt(arguments),
            )
            return
        try:
            orjson.loads(arguments)
        except orjson.JSONDecodeError as exc:
            add(
                "malformed_tool_call",
                line,
                at + ".arguments",
                f"`arguments` is not valid JSON ({exc.msg} at character {exc.pos + 1})",
                excerpt(arguments),
            )

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
                add("not_an_object", line, at, f"a message must be an object, got {_type_name(message)}")
                roles.append(None)
                continue
            role = message.get("role")
            allowed = _MESSAGE_KEYS.get(role) if type(role) is str else None
            if allowed is None:
                if role is None:
                    add("missing_key", line, at + ".role", "message has no `role`")
                elif type(role) is not str:
                    add("invalid_type", line, at + ".role", f"`role` must be a string, got {_type_name(role)}")
                else:
                    add("unknown_role", line, at + ".role", f"unknown role {excerpt(role)!r}", excerpt(role))
                role = None
            elif outputs:
                allowed = _OUTPUT_KEYS
                if role != "assistant":
                    add("preference_shape", line, at + ".role", f"an output message must be an assistant's, not {role}")
            roles.append(role)
            # Tokens: every value of the message, whatever its validity (the cookbook formula).
            const = _PER_MESSAGE
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
                    const += _PER_NAME
            parts.append((role, const, ids))
            if role is None:
                continue

            # Role-specific rules.
            content = message.get("content")
            if "name" in message:
                name = message["name"]
                if role == "function":
                    ok = type(name) is str and _FUNCTION_NAME_RE.fullmatch(name) is not None
                else:
                    ok = type(name) is str and _MESSAGE_NAME_RE.fullmatch(name) is not None
                if not ok:
                    add("invalid_name", line, at + ".name", f"invalid name {excerpt(name)!r}", excerpt(name))
            if role == "assistant":
                assistants += 1
                has_calls = False
                if "tool_calls" in message and message["tool_calls"] is not None:
                    self._tool_calls(message["tool_calls"], line, at + ".tool_calls", tool_names, call_ids)
                    has_calls = True
                if "function_call" in message and message["function_call"] is not None:
                    add("legacy_function_call", line, at + ".function_call", "`function_call` is deprecated")
                    self._function_call(message["function_call"], line, at + ".function_call", None)
                    has_calls = True
                if "audio" in message and message["audio"] is not None:
                    add("unsupported_content", line, at + ".audio", "assistant audio is not supported for training")
                refusal = message.get("refusal")
                if refusal is not None and type(refusal) is not str:
                    add("invalid_type", line, at + ".refusal", f"`refusal` must be a string, got {_type_name(refusal)}")
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
                    add("invalid_type", line, at + ".content", f"content must be a string, got {_type_name(content)}")
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
                    add("invalid_type", line, at + ".content", f"content must be a string, got {_type_name(content)}")
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
                    f"content must be a string or array, got {_type_name(content)}",
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

    def _record(self, line: int, p: int, o: int | None, n_messages: int) -> None:
        stats = self.stats
        stats.counted_examples += 1
        stats.messages += n_messages
        hist_add(stats.messages_per_example, n_messages)
        hist_add(stats.tokens_per_example, p)
        if o is not None:
            hist_add(stats.other_tokens_per_example, o)
        limit = self.token_limit
        if limit is not None:
            if p > limit:
                stats.over_limit += 1
                self.issues.add(
                    "over_token_limit",
                    line,
                    None,
                    f"{p} tokens, over the per-example limit of {limit}: the last {p - limit} tokens are truncated",
                )
            if o is not None and o > limit:
                stats.other_over_limit += 1

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
                add("invalid_type", line, "messages", f"`messages` must be an array, got {_type_name(messages)}")
            return
        if not messages:
            add("empty_messages", line, "messages", "`messages` is empty")
            return
        if "parallel_tool_calls" in obj and type(obj["parallel_tool_calls"]) is not bool:
            add("invalid_type", line, "parallel_tool_calls", "`parallel_tool_calls` must be a boolean")
        tool_names = self._tools(obj, line, "") if ("tools" in obj or "functions" in obj) else None
        parts, summary = self._messages(messages, line, "messages", tool_names)
        tools = self._tool_part(obj, line, "")
        if tools is not None:
            parts.append(tools)
        parts.append((None, _PRIMER, []))
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
                add("preference_shape", line, "input", f"`input` must be an object, got {_type_name(source)}")
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
        tool_names = self._tools(source, line, "input.") if "tools" in source else None
        parts, summary = self._messages(messages, line, "input.messages", tool_names)
        if summary["roles"] and summary["roles"][-1] == "assistant":
            add("preference_shape", line, "input.messages", "the input ends with an assistant message")
        tools = self._tool_part(source, line, "input.")
        if tools is not None:
            parts.append(tools)
        parts.append((None, _PRIMER, []))
        n_messages = len(messages)
        outputs = []
        for key in ("preferred_output", "non_preferred_output"):
            value = obj.get(key)
            if key not in obj:
                add("missing_key", line, key, f"no `{key}`")
                continue
            if type(value) is not list or len(value) != 1:
                got = f"{len(value)} messages" if type(value) is list else _type_name(value)
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
                    add("invalid_type", line, key, f"`{key}` must be a string, got {_type_name(value)}")
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
