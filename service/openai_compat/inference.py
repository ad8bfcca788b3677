"""``/v1/chat/completions`` and ``/v1/completions`` as OpenAI's SDK calls them, for every model a project has: local
models (base, fine-tune, checkpoint) answer through the inference runtime; a hosted provider's models are forwarded to
that provider with the project's credentials. Streaming is OpenAI's: server-sent ``data:`` chunks, then ``[DONE]``."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlmodel import Session

from api_schemas.openai_compat import (
    OpenAIChatChoice,
    OpenAIChatCompletion,
    OpenAIChatCompletionCreate,
    OpenAIChatMessage,
    OpenAICompletionCreate,
    OpenAIErrorResponse,
    OpenAITextChoice,
    OpenAITextCompletion,
    OpenAIUsage,
)
from service import catalog, inference, net
from service.api.deps import CallerDep, SessionDep, SettingsDep
from service.api.outbound import OutboundGate, OutboundGateDep
from service.errors import InvalidInput, RateLimited, Unavailable
from service.evaluations import targets
from service.openai_compat.errors import openai_error
from service.providers.openai.client import async_client
from service.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["openai-compatible"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIErrorResponse, "description": "OpenAI's error shape."} for code in (400, 401, 404, 429, 503)
}
STREAM_RESPONSE = {200: {"content": {"text/event-stream": {}}, "description": "With `stream: true`: SSE chunks."}}
MAX_STOP = 4
# Fields a local model accepts only at the value that changes nothing; others it cannot honour are refused by name.
NEUTRAL_EXTRAS: dict[str, Any] = {
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "logprobs": False,
    "response_format": {"type": "text"},
    "parallel_tool_calls": True,
}
IGNORED_EXTRAS = frozenset({"metadata", "store", "service_tier", "user"})


def _resolve(session: Session, settings: Settings, project_id: str, name: str) -> targets.Target:
    candidate = catalog.inference_candidate(session, project_id, name, settings)
    target = targets.resolve(session, settings, project_id, candidate)
    # Release the database connection before the (possibly long) generation or provider call.
    session.commit()
    session.close()
    return target


def _sampling(body: OpenAIChatCompletionCreate | OpenAICompletionCreate) -> inference.SamplingParams:
    for key, value in (body.model_extra or {}).items():
        if key in IGNORED_EXTRAS or value is None or NEUTRAL_EXTRAS.get(key, object()) == value:
            continue
        raise InvalidInput(f"{key} is not supported for local models", code="unsupported_parameter", param=key)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > MAX_STOP or any(not s for s in stop):
        raise InvalidInput(f"stop takes up to {MAX_STOP} non-empty sequences", code="invalid_value", param="stop")
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    defaults = inference.SamplingParams()
    return inference.SamplingParams(
        max_tokens=max_tokens or defaults.max_tokens,
        temperature=body.temperature if body.temperature is not None else defaults.temperature,
        top_p=body.top_p if body.top_p is not None else defaults.top_p,
        stop=stop,
        seed=body.seed,
        n=body.n or 1,
    )


def _runtime_error(exc: inference.InferenceError) -> Exception:
    if isinstance(exc, inference.Overloaded):
        return RateLimited(exc.message, code="overloaded", retry_after=max(1, round(exc.retry_after_s)))
    if isinstance(exc, inference.InvalidRequest):
        return InvalidInput(exc.message, code="invalid_request", param=exc.param)
    if isinstance(exc, inference.InferenceTimeout):
        return Unavailable(exc.message, code="timeout")
    return Unavailable(exc.message, code="model_unavailable")


def _sse(obj: dict[str, Any] | str) -> bytes:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, separators=(',', ':'))}\n\n".encode()


async def _local(
    settings: Settings,
    target: targets.LocalTarget,
    name: str,
    prompt: inference.Prompt,
    body: OpenAIChatCompletionCreate | OpenAICompletionCreate,
    *,
    chat: bool,
) -> Response:
    params = _sampling(body)
    runtime = await run_in_threadpool(inference.get_runtime, settings)
    ref = inference.ModelRef(base_model=target.base_model, adapter_path=target.adapter_path, name=name)
    created = int(time.time())
    ident = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    if not body.stream:
        try:
            result = await runtime.agenerate(ref, prompt, params)
        except inference.InferenceError as exc:
            raise _runtime_error(exc) from None
        usage = OpenAIUsage(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            total_tokens=result.total_tokens,
        )
        answer: OpenAIChatCompletion | OpenAITextCompletion
        if chat:
            answer = OpenAIChatCompletion(
                id=ident,
                created=created,
                model=name,
                choices=[
                    OpenAIChatChoice(
                        index=c.index, message=OpenAIChatMessage(content=c.text), finish_reason=c.finish_reason
                    )
                    for c in result.choices
                ],
                usage=usage,
            )
        else:
            answer = OpenAITextCompletion(
                id=ident,
                created=created,
                model=name,
                choices=[
                    OpenAITextChoice(index=c.index, text=c.text, finish_reason=c.finish_reason) for c in result.choices
                ],
                usage=usage,
            )
        return JSONResponse(answer.model_dump(mode="json"))

    # Submitted before answering: a full queue or a model that cannot load is still an HTTP error, not a stream event.
    try:
        stream = await runtime.aopen_stream(ref, prompt, params)
    except inference.InferenceError as exc:
        raise _runtime_error(exc) from None
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        out: dict[str, Any] = {"id": ident, "object": kind, "created": created, "model": name, "choices": choices}
        if include_usage:
            out["usage"] = usage
        return _sse(out)

    async def events() -> AsyncIterator[bytes]:
        started: set[int] = set()
        try:
            if chat:
                # OpenAI opens every choice with the role and empty content.
                for index in range(params.n):
                    started.add(index)
                    yield chunk(
                        [
                            {
                                "index": index,
                                "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None,
                                "logprobs": None,
                            }
                        ]
                    )
            item = await anext(stream, None)
            while item is not None:
                if isinstance(item, inference.Usage):
                    if include_usage:
                        yield chunk(
                            [],
                            {
                                "prompt_tokens": item.prompt_tokens,
                                "completion_tokens": item.completion_tokens,
                                "total_tokens": item.total_tokens,
                            },
                        )
                elif chat:
                    delta = {"content": item.text} if item.text else {}
                    yield chunk(
                        [{"index": item.index, "delta": delta, "finish_reason": item.finish_reason, "logprobs": None}]
                    )
                else:
                    yield chunk(
                        [
                            {
                                "index": item.index,
                                "text": item.text,
                                "finish_reason": item.finish_reason,
                                "logprobs": None,
                            }
                        ]
                    )
                item = await anext(stream, None)
            yield _sse("[DONE]")
        except inference.InferenceError as exc:
            # Headers are sent: OpenAI reports a failure mid-stream as an error event.
            yield _sse({"error": {"message": exc.message, "type": "server_error", "param": None, "code": None}})
        finally:
            await stream.aclose()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


async def _forward(
    target: targets.RemoteTarget,
    body: OpenAIChatCompletionCreate | OpenAICompletionCreate,
    slot: contextlib.AbstractContextManager[None],
    *,
    chat: bool,
) -> Response:
    """A hosted model: the provider answers, with the project's credentials; its answer and its errors go back as
    they are (OpenAI's shape either way). ``slot`` (the project's share of calls in flight, ``OutboundGate``) is held
    until the answer, streamed or not, has gone through: a slow provider cannot tie up more than that."""
    held = contextlib.ExitStack()
    held.enter_context(slot)  # 429 / 503 here, before anything is sent
    payload = body.model_dump(exclude_none=True)
    payload["model"] = target.model
    client = async_client(target.client, max_connections=4)

    async def close() -> None:
        await client.close()
        held.close()

    create = client.chat.completions.create if chat else client.completions.create
    try:
        result = await create(**payload)
    except openai.APIStatusError as exc:
        await close()
        error = (exc.body or {}) if isinstance(exc.body, dict) else {}
        return openai_error(
            exc.status_code, error.get("code"), error.get("message") or str(exc.message), param=error.get("param")
        )
    except openai.APIConnectionError as exc:
        await close()
        if net.is_refusal(exc):
            # The project's base URL resolves to an address the outbound policy refuses (e.g. DNS changed since it
            # was stored): the same answer the API gives a refused URL, never what is behind it.
            return openai_error(400, "url_not_allowed", f"the {target.provider} base URL is not allowed here")
        log.warning("forwarding to %s failed: %s", target.provider, exc)
        return openai_error(502, "provider_unreachable", f"the {target.provider} provider could not be reached")
    if not body.stream:
        await close()
        return JSONResponse(result.model_dump(mode="json", exclude_unset=True))

    async def events() -> AsyncIterator[bytes]:
        try:
            async for part in result:
                yield _sse(part.model_dump(mode="json", exclude_unset=True))
            yield _sse("[DONE]")
        finally:
            await close()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


async def _answer(
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    gate: OutboundGate,
    body: OpenAIChatCompletionCreate | OpenAICompletionCreate,
    prompt: inference.Prompt,
    *,
    chat: bool,
) -> Response:
    target = await run_in_threadpool(_resolve, session, settings, caller.project_id, body.model)
    if isinstance(target, targets.RemoteTarget):
        return await _forward(target, body, gate.slot(caller.project_id), chat=chat)
    return await _local(settings, target, body.model, prompt, body, chat=chat)


@router.post(
    "/chat/completions",
    response_model=OpenAIChatCompletion,
    responses=ERRORS | STREAM_RESPONSE,
    summary="Create a chat completion (any model of the project: local, fine-tuned, or hosted)",
)
async def chat_completions(
    body: OpenAIChatCompletionCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    gate: OutboundGateDep,
) -> Response:
    return await _answer(caller, session, settings, gate, body, body.messages, chat=True)


@router.post(
    "/completions",
    response_model=OpenAITextCompletion,
    responses=ERRORS | STREAM_RESPONSE,
    summary="Create a text completion (the legacy prompt form)",
)
async def completions(
    body: OpenAICompletionCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    gate: OutboundGateDep,
) -> Response:
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise InvalidInput("send one prompt per request here", code="unsupported_parameter", param="prompt")
        prompt: str = body.prompt[0]
    else:
        prompt = body.prompt
    return await _answer(caller, session, settings, gate, body, prompt, chat=False)
