"""Checks of tool definitions (``tools``, legacy ``functions``) and of the calls assistant messages make to them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from service.chat import type_name
from service.datasets.validation.state import excerpt

# issues.add(code, line, field, message[, example])
Add = Callable[..., None]

_TOOL_KEYS = frozenset({"type", "function"})
_FUNCTION_KEYS = frozenset({"name", "description", "parameters", "strict"})
_TOOL_CALL_KEYS = frozenset({"id", "type", "function"})
_CALL_FUNCTION_KEYS = frozenset({"name", "arguments"})

# OpenAI's patterns: message names may not contain whitespace or < | \ / >; function names are identifiers.
MESSAGE_NAME_RE = re.compile(r"[^\s<|\\/>]+")
FUNCTION_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def check_tools(container: dict, line: int, prefix: str, add: Add) -> set[str] | None:
    """Validate ``tools`` / ``functions`` of an example; returns the defined function names (None: no tools)."""
    names: set[str] | None = None
    for key in ("tools", "functions"):
        if key not in container:
            continue
        defs = container[key]
        where = prefix + key
        if key == "functions":
            add("legacy_function_call", line, where, "`functions` is deprecated; use `tools`")
        if type(defs) is not list:
            add("invalid_tools", line, where, f"`{key}` must be an array, got {type_name(defs)}")
            continue
        if names is None:
            names = set()
        for i, item in enumerate(defs):
            at = f"{where}[{i}]"
            if type(item) is not dict:
                add("invalid_tools", line, at, f"a tool must be an object, got {type_name(item)}")
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
            if type(name) is not str or FUNCTION_NAME_RE.fullmatch(name) is None:
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

def check_tool_calls(
    calls: Any, line: int, where: str, tool_names: set[str] | None, ids: set[str], add: Add
) -> None:
    if type(calls) is not list or not calls:
        add("malformed_tool_call", line, where, "`tool_calls` must be a non-empty array")
        return
    for i, call in enumerate(calls):
        at = f"{where}[{i}]"
        if type(call) is not dict:
            add("malformed_tool_call", line, at, f"a tool call must be an object, got {type_name(call)}")
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
        check_function_call(call.get("function"), line, at + ".function", tool_names, add)

def check_function_call(function: Any, line: int, at: str, tool_names: set[str] | None, add: Add) -> None:
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
            f"`arguments` must be a string holding JSON, got {type_name(arguments)}",
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
