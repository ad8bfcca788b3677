"""Cross-cutting behaviour of every request: request ids, auth, call counters, faults, default rate limits.

Pure ASGI rather than BaseHTTPMiddleware, because "act then drop the connection" needs to start a response and
then abort it, which only the raw protocol allows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.routing import Match

from .core import EmulatorCore
from .errors import ApiError, AzureError, server_error, unavailable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
    "(i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from https://platform.openai.com/account/api-keys."
)
AZURE_PREFIX = "/openai"
AZURE_NO_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
# Routes that rate-limit themselves per model once they know the model from the body.
SELF_LIMITED = ("/v1/chat/completions",)


class DroppedConnection(Exception):
    """Raised on purpose after a response has started, so the server cuts the connection mid-body."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


def _masked(key: str) -> str:
    return key if len(key) <= 8 else f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


class EmulatorMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]], core: EmulatorCore, routes: list[Any]) -> None:
        self.app = app
        self.core = core
        self.routes = routes

    def _route_key(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return f"{scope['method']} {route.path}"
        return f"{scope['method']} {scope['path']}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        core = self.core
        method, path = scope["method"], scope["path"]
        if core.config.azure is not None:
            # An Azure resource serves the v1 API under /openai/v1; the rest of the emulator knows it as /v1.
            if not path.startswith(AZURE_PREFIX + "/v1/"):
                if path.startswith("/v1/"):
                    await _send_plain(send, AzureError(404, "404", "Resource not found"))
                    return
            else:
                path = path[len(AZURE_PREFIX) :]
                scope = {**scope, "path": path, "raw_path": path.encode()}
        started = time.perf_counter()
        request_id = core.ids.new("request")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = {
                    "x-request-id": request_id,
                    "openai-organization": core.config.organization_id,
                    "openai-version": "2020-10-01",
                    "openai-processing-ms": str(int((time.perf_counter() - started) * 1000)),
                }
                if path.startswith("/v1/"):
                    extra.update(state.get("ratelimit_headers") or core.limiter.peek("*"))
                for name, value in extra.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        async def send_json(status: int, payload: Any) -> None:
            await send_json_bytes(status, json.dumps(payload).encode())

        async def send_json_bytes(status: int, body: bytes) -> None:
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send_with_headers({"type": "http.response.start", "status": status, "headers": headers})
            await send_with_headers({"type": "http.response.body", "body": body})

        async def send_error(error: ApiError) -> None:
            body = json.dumps(error.body()).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            headers += [(k.encode(), v.encode()) for k, v in error.headers.items()]
            await send_with_headers({"type": "http.response.start", "status": error.status, "headers": headers})
            await send_with_headers({"type": "http.response.body", "body": body})

        if not path.startswith("/v1/"):
            await self.app(scope, receive, send_with_headers)
            return

        with core.store.lock:
            core.store.calls[self._route_key(scope)] += 1
        problem = self._auth_problem(scope)
        if problem is not None:
            await send_error(problem)
            return
        core.tick()

        fault = core.faults.pick(method, path)
        if fault is not None and fault.kind == "empty_list":
            await send_json(200, {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None})
            return
        if fault is not None and fault.kind in ("429", "500", "503"):
            await send_error(self._fault_error(fault.kind, fault.retry_after_seconds))
            return
        if fault is not None and fault.kind == "timeout":
            await self._hold(fault.delay_seconds)
            await send_error(ApiError(504, "Gateway timeout.", type="server_error"))
            return

        if not path.startswith(SELF_LIMITED):
            try:
                state["ratelimit_headers"] = core.limiter.take("*")
            except ApiError as exc:
                await send_error(exc)
                return

        if fault is None:
            await self.app(scope, receive, send_with_headers)
            return

        # act_then_*: perform the request fully, then misbehave in how the answer reaches the client.
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)

        if fault.kind == "repeat_page":
            # Whatever page was asked for, the first one is answered.
            query = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode()) if k != "after"]
            scope = {**scope, "query_string": urlencode(query).encode()}
        await self.app(scope, receive, capture)
        start = next(m for m in captured if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in captured if m["type"] == "http.response.body")
        if fault.kind == "repeat_page":
            page = json.loads(body)
            if isinstance(page, dict) and isinstance(page.get("data"), list):
                page["data"] = page["data"] + page["data"][:1]
                page["has_more"] = True
            await send_json(start["status"], page)
            return
        if fault.kind == "act_then_truncate":
            await send_json_bytes(start["status"], body[: len(body) // 2])
            return
        if fault.kind == "act_then_500":
            await send_error(server_error())
            return
        if fault.kind == "act_then_timeout":
            await self._hold(fault.delay_seconds)
            for message in captured:
                await send_with_headers(message)
            return
        # act_then_drop: announce the full length, send part of the body, then abort the connection.
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body) + 1).encode()))
        await send_with_headers({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise DroppedConnection(f"emulated connection drop after {method} {path}")

    async def _hold(self, seconds: float) -> None:
        # Short naps so that stopping the emulator never waits for a held request.
        deadline = time.monotonic() + seconds
        while not self.core.stopping.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _auth_problem(self, scope: Scope) -> ApiError | None:
        if self.core.config.azure is not None:
            return self._azure_auth_problem(scope)
        header = ""
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                header = value.decode("latin-1")
                break
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return ApiError(401, NO_KEY, type="invalid_request_error")
        allowed = self.core.config.api_keys
        if allowed is not None and key not in allowed:
            return ApiError(
                401,
                f"Incorrect API key provided: {_masked(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                type="invalid_request_error",
                code="invalid_api_key",
            )
        return None

    def _azure_auth_problem(self, scope: Scope) -> ApiError | None:
        """Azure reads the resource key from an ``api-key`` header (a bearer would have to be an Entra token, which
        the emulator does not issue) and answers 401 in its own shape, without OpenAI's type or param."""
        key = next((v.decode("latin-1").strip() for n, v in scope.get("headers", []) if n.lower() == b"api-key"), "")
        allowed = self.core.config.api_keys
        if not key or (allowed is not None and key not in allowed):
            return AzureError(401, "401", AZURE_NO_KEY)
        return None

    def _fault_error(self, kind: str, retry_after: float | None) -> ApiError:
        if kind == "500":
            return server_error()
        if kind == "503":
            return unavailable()
        headers = {}
        if retry_after is not None:
            headers = {"retry-after": str(max(1, round(retry_after))), "retry-after-ms": str(int(retry_after * 1000))}
        return ApiError(
            429,
            "Rate limit reached (injected by the OpenAI emulator). Please try again later.",
            type="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )


async def _send_plain(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
