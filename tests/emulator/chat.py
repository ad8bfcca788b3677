"""Chat completions with deterministic answers, so evaluations can tell a fine-tuned model from its base."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from . import params, tokens
from .catalog import ResolvedModel
from .errors import AzureError, invalid, not_found

if TYPE_CHECKING:
    from .core import EmulatorCore

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
KNOWN_FIELDS = {
    "model",
    "messages",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "user",
    "metadata",
    "store",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "service_tier",
    "stream",
    "stream_options",
    "reasoning_effort",
    "modalities",
    "prediction",
    "audio",
    "web_search_options",
    "verbosity",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "functions",
    "function_call",
}


def _unit(key: str) -> float:
    """A stable number in [0, 1) for a key: the emulator's only source of "randomness" in answers."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return tokens.content_text(message.get("content")).strip()
    return ""


def answer(
    core: EmulatorCore,
    requested: str,
    model: ResolvedModel,
    messages: list[dict[str, Any]],
    *,
    variant: str,
) -> str:
    config = core.config
    if config.answer_fn is not None:
        custom = config.answer_fn(requested, messages)
        if custom is not None:
            return custom
    prompt = last_user_text(messages)
    correct = core.correct_answers.get(prompt)
    if correct is not None:
        accuracy = config.fine_tuned_accuracy if model.fine_tuned else config.base_accuracy
        return correct if _unit(f"{model.id}|{prompt}|{variant}") < accuracy else config.wrong_answer
    excerpt = prompt if len(prompt) <= 200 else prompt[:200] + "..."
    return f"Emulated reply from {model.id} to: {excerpt}" if excerpt else f"Emulated reply from {model.id}."


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    if "messages" not in body:
        raise params.missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise params.wrong_type("messages", "an array", messages)
    if not messages:
        raise invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise params.wrong_type(f"messages[{i}]", "an object", message)
        if "role" not in message:
            raise params.missing(f"messages[{i}].role")
        if message["role"] not in ROLES:
            params.one_of(f"messages[{i}].role", message["role"], tuple(sorted(ROLES)))
    return messages


def resolve_model(core: EmulatorCore, name: str) -> ResolvedModel:
    resolved = core.catalog.resolve(name, core.store)
    if resolved is None:
        raise not_found(
            f"The model `{name}` does not exist or you do not have access to it.", param=None, code="model_not_found"
        )
    return resolved


def build(core: EmulatorCore, body: Any, *, request_id: str | None = None) -> tuple[dict[str, Any], int]:
    """A chat.completion for `body` and the tokens it used. Pure (no waiting, no rate limits), so batches reuse it."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    params.reject_unknown(body, KNOWN_FIELDS)
    requested = params.required_str(body, "model")
    messages = _messages(body)
    if body.get("stream_options") is not None and not body.get("stream"):
        raise invalid("stream_options is only allowed when stream is true.", param="stream_options")
    n = params.int_in_range("n", body.get("n", 1), low=1, high=128)
    temperature = params.number_in_range("temperature", body.get("temperature", 1.0), low=0.0, high=2.0)
    limit: int | None = None
    for key in ("max_completion_tokens", "max_tokens"):
        if body.get(key) is not None:
            limit = params.int_in_range(key, body[key], low=1)
            break
    if core.config.azure is not None:
        # Azure serves a model only through a deployment: the request names the deployment.
        deployed = core.store.deployments.get(requested)
        if deployed is None:
            raise AzureError(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the deployment within the last "
                "5 minutes, please wait a moment and try again.",
            )
        model = resolve_model(core, deployed)
    else:
        model = resolve_model(core, requested)
    encoding = model.spec.encoding
    prompt_tokens = tokens.count_messages(messages, encoding)
    choices = []
    completion_tokens = 0
    for index in range(n):
        # Greedy decoding repeats itself; sampled choices (temperature > 0) may differ from one another.
        variant = "greedy" if temperature == 0 else f"{body.get('seed')}|{index}"
        text = answer(core, requested, model, messages, variant=variant)
        used = tokens.count(text, encoding)
        finish = "stop"
        if limit is not None and used > limit:
            text = tokens.truncate(text, limit, encoding)
            used = limit
            finish = "length"
        completion_tokens += used
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish,
            }
        )
    completion = {
        "id": core.ids.new("chat"),
        "object": "chat.completion",
        "created": int(core.clock.now()),
        "model": model.id,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }
    return completion, prompt_tokens + completion_tokens


def stream_chunks(completion: dict[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    """The completion as OpenAI streams it: per choice a role chunk, the content a few characters at a time, a chunk
    with the finish reason; with ``include_usage`` every chunk carries ``usage: null`` and a last chunk has no choices
    and the usage."""
    base = {k: completion[k] for k in ("id", "created", "model", "service_tier", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    chunks: list[dict[str, Any]] = []

    def emit(choices: list[dict[str, Any]], usage: Any = None) -> None:
        chunk = {**base, "choices": choices}
        if include_usage:
            chunk["usage"] = usage
        chunks.append(chunk)

    for choice in completion["choices"]:
        index, text = choice["index"], choice["message"]["content"] or ""
        emit(
            [
                {
                    "index": index,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )
        for start in range(0, len(text), 4):
            emit(
                [
                    {
                        "index": index,
                        "delta": {"content": text[start : start + 4]},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        emit([{"index": index, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]}])
    if include_usage:
        emit([], completion["usage"])
    return chunks


def latency(core: EmulatorCore, model_id: str, requested: str) -> float:
    by_model = core.config.chat_latency_by_model
    for name in (requested, model_id):
        if name in by_model:
            return by_model[name]
    return core.config.chat_latency_seconds
