"""The `finetune inference` role: this machine's models behind a small internal HTTP endpoint.

Scaled out, the processes that answer the API and run evaluations do not load models themselves: they send each
request (model, prompt, sampling; the model already resolved and checked for the caller's project) here, to the one
process per device that keeps base models resident and batches everyone's requests together. HTTP, not the task
queue: a chat completion is interactive, its tokens stream back as they are made, and a client that goes away must
cancel its request at once, none of which a queue of durable work items does. Only processes holding the
deployment's server secret can call it (a bearer token derived from it).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from . import wire
from .types import InferenceError

log = logging.getLogger(__name__)


def create_inference_app(settings: Any) -> FastAPI:
    from . import local_runtime

    app = FastAPI(title="finetune inference", docs_url=None, redoc_url=None, openapi_url=None)
    expected = f"Bearer {wire.token(settings.server_secret())}"

    def allowed(request: Request) -> bool:
        return hmac.compare_digest(request.headers.get("authorization", ""), expected)

    @app.get(wire.HEALTH_PATH)
    def health(request: Request) -> Response:
        if not allowed(request):
            return JSONResponse({"kind": "error", "message": "unauthorized"}, status_code=401)
        runtime = local_runtime(settings)
        stats = runtime.stats()
        body = {"queued": stats.queued, "running": stats.running, "resident": stats.resident}
        return JSONResponse(body | {"max_batch_size": runtime.max_batch_size})

    @app.post(wire.LOAD_PATH)
    async def load(request: Request) -> Response:
        if not allowed(request):
            return JSONResponse({"kind": "error", "message": "unauthorized"}, status_code=401)
        try:
            model, _prompt, _params, _timeout = wire.decode_request(await request.json())
            runtime = local_runtime(settings)
            await run_in_threadpool(runtime.load, model)
        except InferenceError as exc:
            body, status = wire.encode_error(exc)
            return JSONResponse(body, status_code=status)
        return JSONResponse({"loaded": model.name or "model"})

    @app.post(wire.PATH)
    async def generate(request: Request) -> Response:
        if not allowed(request):
            return JSONResponse({"kind": "error", "message": "unauthorized"}, status_code=401)
        try:
            model, prompt, params, timeout_s = wire.decode_request(await request.json())
            stream = await local_runtime(settings).aopen_stream(model, prompt, params, timeout_s=timeout_s)
        except InferenceError as exc:
            body, status = wire.encode_error(exc)
            return JSONResponse(body, status_code=status)
        except ValueError:
            return JSONResponse({"kind": "invalid_request", "message": "the body is not JSON"}, status_code=400)

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for item in stream:
                    yield (json.dumps(wire.encode_item(item)) + "\n").encode()
            except InferenceError as exc:
                yield (json.dumps({"error": wire.encode_error(exc)[0]}) + "\n").encode()
            finally:
                # The caller went away (or finished): the request leaves its batch now.
                await stream.aclose()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app
