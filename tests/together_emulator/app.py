"""Together's routes over ``TogetherState``, with Together's error shape and faults on demand (``emulator.faults``
rules: "429" with Retry-After, "500", "503", "timeout" (hold, then 504), "act_then_500" (act, then answer 500: the
caller cannot tell whether it happened))."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from typing import Any

from fastapi import FastAPI, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from emulator.faults import FaultInjector

from .state import ApiError, TogetherState

KEY_PREFIX = "tg-"


def create_app(state: TogetherState, faults: FaultInjector, calls: Counter[str]) -> FastAPI:
    app = FastAPI(title="Together API emulator", docs_url=None, redoc_url=None, openapi_url=None)

    def error(exc: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        route = next((r for r in app.routes if r.matches(request.scope)[0].name == "FULL"), None)  # type: ignore[attr-defined]
        name = f"{request.method} {getattr(route, 'path', request.url.path)}"
        calls[name] += 1
        auth = request.headers.get("authorization", "")
        if not auth.startswith(f"Bearer {KEY_PREFIX}"):
            return error(ApiError(401, "Invalid API key provided", type_="invalid_api_key"))
        fault = faults.pick(request.method, request.url.path)
        if fault is not None and fault.kind == "429":
            retry = {"retry-after": f"{fault.retry_after_seconds:g}"} if fault.retry_after_seconds is not None else {}
            return error(ApiError(429, "Rate limit exceeded", type_="rate_limit_exceeded"), retry)
        if fault is not None and fault.kind in ("500", "503"):
            return error(ApiError(int(fault.kind), "Internal server error", type_="server_error"))
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(fault.delay_seconds)
            return error(ApiError(504, "Gateway timeout", type_="timeout"))
        response = await call_next(request)
        if fault is not None and fault.kind == "act_then_500":
            return error(ApiError(500, "Internal server error", type_="server_error"))
        return response

    @app.post("/v1/files/upload")
    async def upload(
        file: UploadFile, purpose: str = Form(...), file_name: str = Form(...), file_type: str = Form("jsonl")
    ) -> dict[str, Any]:
        if file_type not in ("jsonl", "csv", "parquet"):
            raise ApiError(400, f"Invalid file_type: {file_type}", param="file_type")
        return state.add_file(filename=file_name, purpose=purpose, content=await file.read())

    @app.get("/v1/files")
    def list_files() -> dict[str, Any]:
        with state.lock:
            return {"data": [f.out() for f in state.files.values()]}

    @app.get("/v1/files/{file_id}")
    def get_file(file_id: str) -> dict[str, Any]:
        return state.file(file_id).out()

    async def _json(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "Request body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Request body must be a JSON object")
        return body

    @app.post("/v1/fine-tunes")
    async def create(request: Request) -> dict[str, Any]:
        body = await _json(request)
        for name in ("training_file", "model"):
            if not body.get(name):
                raise ApiError(400, f"{name} is required", param=name)
        return state.create_job(body)

    @app.get("/v1/fine-tunes")
    def list_jobs() -> dict[str, Any]:
        with state.lock:
            return {"data": [state.truncated(j) for j in state.all_jobs()]}

    @app.post("/v1/fine-tunes/estimate-price")
    async def estimate(request: Request) -> dict[str, Any]:
        body = await _json(request)
        if not body.get("training_file"):
            raise ApiError(400, "training_file is required", param="training_file")
        return state.estimate(body)

    @app.get("/v1/fine-tunes/models/supported")
    def supported() -> dict[str, Any]:
        from .state import MODELS

        return {"models": sorted(MODELS)}

    @app.get("/v1/fine-tunes/{job_id}")
    def get_job(job_id: str) -> dict[str, Any]:
        with state.lock:
            return state.full(state.job(job_id))

    @app.get("/v1/fine-tunes/{job_id}/events")
    def events(job_id: str) -> dict[str, Any]:
        with state.lock:
            return {"data": list(state.job(job_id).events)}

    @app.get("/v1/fine-tunes/{job_id}/checkpoints")
    def checkpoints(job_id: str) -> dict[str, Any]:
        with state.lock:
            return {"data": list(reversed(state.job(job_id).checkpoints))}

    @app.post("/v1/fine-tunes/{job_id}/cancel")
    def cancel(job_id: str) -> dict[str, Any]:
        return state.cancel(job_id)

    @app.get("/v1/finetune/download")
    def download(ft_id: str, checkpoint: str | None = None, checkpoint_step: int | None = None) -> Response:
        with state.lock:
            job = state.job(ft_id)
            if checkpoint_step is None and checkpoint not in ("merged", "adapter", "model_output_path"):
                raise ApiError(400, "checkpoint must be merged, adapter or model_output_path", param="checkpoint")
            steps = {c["step"] for c in job.checkpoints}
            if checkpoint_step is not None and checkpoint_step not in steps:
                raise ApiError(404, f"No checkpoint at step {checkpoint_step}", param="checkpoint_step")
            if checkpoint_step is None and job.status != "completed":
                raise ApiError(400, f"Fine-tune job {ft_id} is {job.status}; nothing to download yet")
            kind = f"step-{checkpoint_step}" if checkpoint_step is not None else checkpoint
            payload = f"together-emulator {kind} of {job.id} ({job.output_name})\n".encode()
        return Response(payload, media_type="application/octet-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await _json(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "messages must be a non-empty list", param="messages")
        model = str(body.get("model") or "")
        text = state.answer(model, messages)
        prompt_tokens = sum(len(str(m.get("content") or "")) // 4 + 1 for m in messages)
        completion_tokens = len(text) // 4 + 1
        return {
            "id": secrets.token_hex(12),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "prompt": [],
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}, "seed": 0}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return app
