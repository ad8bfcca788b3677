"""What crosses the wire between a process that serves the API (or runs evaluations) and the `finetune inference`
role: a request (model, prompt, sampling) as JSON, the answer as newline-delimited JSON items, errors by kind. Both
sides use these functions, so the remote runtime raises exactly the errors the in-process one raises."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from pathlib import Path
from typing import Any

from .types import (
    InferenceError,
    InferenceTimeout,
    InvalidRequest,
    ModelLoadError,
    ModelRef,
    Overloaded,
    Prompt,
    SamplingParams,
    StreamEvent,
    StreamItem,
    Usage,
)

PATH = "/internal/v1/generate"
LOAD_PATH = "/internal/v1/load"
HEALTH_PATH = "/internal/v1/health"
_TOKEN_CONTEXT = b"finetune-inference-v1"


def token(server_secret: bytes) -> str:
    """The bearer token of the inference role, derived from the server secret every process of a deployment shares:
    no extra secret to distribute, and it says nothing about the secret itself."""
    return hmac.new(server_secret, _TOKEN_CONTEXT, hashlib.sha256).hexdigest()


def encode_request(model: ModelRef, prompt: Prompt, params: SamplingParams, timeout_s: float | None) -> dict[str, Any]:
    from service.providers.local.base_models import BaseModelSource

    base: Any = model.base_model
    if isinstance(base, BaseModelSource):
        base = {"spec": base.spec, "kind": base.kind, "location": base.location}
    return {
        "model": {
            "base_model": base,
            "adapter_path": str(model.adapter_path) if model.adapter_path is not None else None,
            "name": model.name,
        },
        "prompt": prompt,
        "params": dataclasses.asdict(params),
        "timeout_s": timeout_s,
    }


def decode_request(body: dict[str, Any]) -> tuple[ModelRef, Prompt, SamplingParams, float | None]:
    """Raises InvalidRequest for a body that is not one ``encode_request`` makes."""
    from service.providers.local.base_models import BaseModelSource

    try:
        raw = body["model"]
        base = raw["base_model"]
        if isinstance(base, dict):
            base = BaseModelSource(spec=str(base["spec"]), kind=base["kind"], location=str(base["location"]))
        elif not isinstance(base, str):
            raise TypeError("base_model")
        adapter = Path(raw["adapter_path"]) if raw.get("adapter_path") else None
        model = ModelRef(base_model=base, adapter_path=adapter, name=str(raw.get("name") or ""))
        prompt = body["prompt"]
        if not isinstance(prompt, str | list):
            raise TypeError("prompt")
        params = SamplingParams(**{**body["params"], "stop": list(body["params"].get("stop") or [])})
        timeout_s = body.get("timeout_s")
        return model, prompt, params, float(timeout_s) if timeout_s is not None else None
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"not an inference request: {exc}") from None


def encode_item(item: StreamItem) -> dict[str, Any]:
    if isinstance(item, Usage):
        return {"usage": {"prompt_tokens": item.prompt_tokens, "completion_tokens": item.completion_tokens}}
    return {"event": {"index": item.index, "text": item.text, "finish_reason": item.finish_reason}}


def decode_item(data: dict[str, Any]) -> StreamItem:
    """The item, or raises the error the line carries."""
    if "error" in data:
        raise decode_error(data["error"])
    if "usage" in data:
        return Usage(int(data["usage"]["prompt_tokens"]), int(data["usage"]["completion_tokens"]))
    event = data["event"]
    return StreamEvent(int(event["index"]), str(event["text"]), event.get("finish_reason"))


# Status codes the inference role answers an error with before streaming: the API maps the errors itself.
_KINDS: dict[str, tuple[type[InferenceError], int]] = {
    "overloaded": (Overloaded, 429),
    "invalid_request": (InvalidRequest, 400),
    "model_load": (ModelLoadError, 422),
    "timeout": (InferenceTimeout, 504),
    "error": (InferenceError, 500),
}


def encode_error(exc: InferenceError) -> tuple[dict[str, Any], int]:
    kind = next((k for k, (cls, _) in _KINDS.items() if type(exc) is cls), "error")
    body: dict[str, Any] = {"kind": kind, "message": exc.message}
    if isinstance(exc, Overloaded):
        body["retry_after_s"] = exc.retry_after_s
    if isinstance(exc, InvalidRequest):
        body["param"] = exc.param
    return body, _KINDS[kind][1]


def decode_error(body: dict[str, Any]) -> InferenceError:
    kind, message = body.get("kind", "error"), str(body.get("message") or "inference failed")
    if kind == "overloaded":
        return Overloaded(message, float(body.get("retry_after_s") or 1.0))
    if kind == "invalid_request":
        return InvalidRequest(message, body.get("param"))
    cls = _KINDS.get(kind, (InferenceError, 500))[0]
    return cls(message)
