"""Values no route can store, refused for every JSON body before any route sees it.

JSON (as Python reads it) carries things neither the database nor a JSON response can hold: lone surrogates
(``"\\ud800"``: not UTF-8, so the row saves on SQLite but every later listing fails to encode it), NUL characters
(PostgreSQL refuses them in text and JSON), ``NaN`` / ``Infinity`` and numbers beyond a double (``1e400`` reads as
infinity), integers beyond 64 bits, and nesting deep enough to exhaust the recursion of whatever walks it next. Each is a
422 problem naming the field, checked once here rather than by each model, so no create can commit such a value.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_DEPTH = 64
INT_LIMIT = 2**63 - 1

_JSON_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _is_json(scope: Scope) -> bool:
    content_type = Headers(scope=scope).get("content-type", "").split(";", 1)[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


def _field(path: tuple[str | int, ...]) -> str | None:
    return ".".join(str(p) for p in path) or None


def _string_problem(text: str) -> tuple[str, str] | None:
    if text.isascii():
        return ("nul_character", "contains a NUL character (U+0000)") if "\x00" in text else None
    if "\x00" in text:
        return "nul_character", "contains a NUL character (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "lone_surrogate", "contains a lone surrogate (e.g. \\ud800), which is not a character"
    return None


def unstorable_values(value: Any, limit: int = 5) -> list[dict[str, Any]]:
    """Problems (``code``, ``message``, ``field``) in a parsed JSON document, at most ``limit`` of them."""
    found: list[dict[str, Any]] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack and len(found) < limit:
        node, path = stack.pop()
        if len(path) > MAX_DEPTH:
            found.append(
                {"code": "too_deep", "message": f"nested more than {MAX_DEPTH} levels deep", "field": _field(path)}
            )
            continue
        if isinstance(node, dict):
            for key, child in node.items():
                problem = _string_problem(key)
                if problem is not None:
                    found.append({"code": problem[0], "message": f"a key {problem[1]}", "field": _field(path)})
                    continue
                stack.append((child, (*path, key)))
        elif isinstance(node, list):
            stack.extend((child, (*path, i)) for i, child in enumerate(node))
        elif isinstance(node, str):
            problem = _string_problem(node)
            if problem is not None:
                found.append({"code": problem[0], "message": problem[1], "field": _field(path)})
        elif isinstance(node, float) and not math.isfinite(node):
            found.append(
                {
                    "code": "non_finite_number",
                    "message": "is not a finite number (NaN, Infinity, or beyond a double, e.g. 1e400)",
                    "field": _field(path),
                }
            )
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > INT_LIMIT:
            found.append(
                {"code": "number_out_of_range", "message": "is an integer beyond 64 bits", "field": _field(path)}
            )
    return found


def check_body(body: bytes) -> list[dict[str, Any]]:
    """The problems of a JSON request body; an unparsable body is left to the route's own parsing (its 422)."""
    try:
        value = json.loads(body)
    except RecursionError:
        return [{"code": "too_deep", "message": f"nested more than {MAX_DEPTH} levels deep", "field": None}]
    except ValueError:  # not JSON (or not UTF-8): the route answers that
        return []
    return unstorable_values(value)


class JsonBodyMiddleware:
    """Reads a JSON body once (the body limit, outside this, has bounded it), checks it, and replays it to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _JSON_METHODS or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        errors = check_body(body) if body else []
        if errors:
            from service.api.problems import problem

            detail = "A value in the request cannot be stored: " + "; ".join(
                f"{e['field'] or 'the body'} {e['message']}" for e in errors
            )
            await problem(422, "unstorable_value", detail, Request(scope), errors=errors)(scope, receive, send)
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
