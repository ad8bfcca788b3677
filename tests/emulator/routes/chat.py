"""/v1/chat/completions: rate-limited per model, with configurable latency."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from .. import chat
from .common import core_of, json_body, respond

router = APIRouter()


@router.post("/v1/chat/completions")
async def create(request: Request) -> Response:
    core = core_of(request)
    body = await json_body(request)
    with core.store.lock:
        completion, used = chat.build(core, body)
        model = completion["model"]
        requested = body["model"]
    request.state.ratelimit_headers = core.limiter.take(model, aliases=(requested,), tokens=used)
    delay = chat.latency(core, model, requested)
    if delay > 0:
        await asyncio.sleep(delay)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        lines = [f"data: {json.dumps(c)}\n\n" for c in chat.stream_chunks(completion, include_usage=include_usage)]
        return StreamingResponse(iter([*lines, "data: [DONE]\n\n"]), media_type="text/event-stream")
    return respond(completion)
