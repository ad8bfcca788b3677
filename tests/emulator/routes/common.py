"""Small helpers every route module shares: the core, JSON bodies, list parameters."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from .. import params
from ..core import EmulatorCore
from ..errors import invalid

BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library "
    "correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)


def core_of(request: Request) -> EmulatorCore:
    return request.app.state.core


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid(BAD_JSON) from None
    if not isinstance(body, dict):
        raise invalid(BAD_JSON)
    return body


def limit_param(request: Request, *, default: int, maximum: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise params.wrong_type("limit", "an integer", raw) from None
    return params.int_in_range("limit", value, low=1, high=maximum)


def page(items: list[dict[str, Any]], has_more: bool, *, ids: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"object": "list", "data": items, "has_more": has_more}
    if ids:
        body["first_id"] = items[0]["id"] if items else None
        body["last_id"] = items[-1]["id"] if items else None
    return body


def respond(content: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status)
