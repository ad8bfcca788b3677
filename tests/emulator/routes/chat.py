"""/v1/chat/completions: rate-limited per model, with configurable latency."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

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
    return respond(completion)
