"""The calls every runtime answers (in-process, remote, vLLM), and the ones derived from two each implements.

A runtime implements ``load``, ``stream`` (blocking, for worker threads) and ``aopen_stream`` (async: submits at once,
so a refusal raises before a response starts); ``generate``, ``astream`` and ``agenerate`` are the same on all of them
and live here once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, Protocol

from .types import Completion, InvalidRequest, ModelRef, Prompt, SamplingParams, StreamItem, collect


class Runtime(Protocol):
    max_batch_size: int

    def load(self, model: ModelRef) -> Any: ...

    def stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Iterator[StreamItem]: ...

    async def aopen_stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> AsyncGenerator[StreamItem, None]: ...

    def generate(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Completion: ...

    async def agenerate(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Completion: ...

    def close(self, *, drain: bool = False) -> None: ...


class DerivedCalls:
    """Mixed into each runtime: whole completions and the async stream, from its ``stream`` and ``aopen_stream``."""

    def stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Iterator[StreamItem]:
        raise NotImplementedError

    async def aopen_stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> AsyncGenerator[StreamItem, None]:
        raise NotImplementedError

    def whole_stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Iterator[StreamItem]:
        """The items of a request that is read only once complete; a backend may hand its text over in one piece."""
        return self.stream(model, prompt, params, timeout_s=timeout_s)

    def generate(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Completion:
        # Closing the stream, even when an error stops the collection, cancels what is left of the request.
        with contextlib.closing(self.whole_stream(model, prompt, params, timeout_s=timeout_s)) as items:  # type: ignore[type-var]
            return collect(items, params.n)

    async def astream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> AsyncIterator[StreamItem]:
        """Submission errors (Overloaded, ModelLoadError, InvalidRequest) come at the first item; use `aopen_stream`
        to get them before starting a response. Closing the generator (or cancelling its task) cancels the request."""
        events = await self.aopen_stream(model, prompt, params, timeout_s=timeout_s)
        try:
            async for item in events:
                yield item
        finally:
            await events.aclose()

    async def agenerate(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Completion:
        return collect([item async for item in self.astream(model, prompt, params, timeout_s=timeout_s)], params.n)


def check_params(params: SamplingParams, *, max_tokens: int, max_n: int) -> None:
    """Refuse sampling values no backend serves, naming the field."""
    if not 1 <= params.max_tokens <= max_tokens:
        raise InvalidRequest(f"max_tokens must be between 1 and {max_tokens}", "max_tokens")
    if not 0 <= params.temperature <= 2:
        raise InvalidRequest("temperature must be between 0 and 2", "temperature")
    if not 0 < params.top_p <= 1:
        raise InvalidRequest("top_p must be greater than 0 and at most 1", "top_p")
    if not 1 <= params.n <= max_n:
        raise InvalidRequest(f"n must be between 1 and {max_n}", "n")
    if len(params.stop) > 4 or not all(isinstance(s, str) and s for s in params.stop):
        raise InvalidRequest("stop takes up to 4 non-empty strings", "stop")


def token_limit(prompt_ids: list[int], params: SamplingParams, max_context: int | None) -> int:
    """Tokens each choice may generate: max_tokens, less when the model's context ends sooner."""
    if max_context is None:
        return params.max_tokens
    room = max_context - len(prompt_ids)
    if room < 1:
        raise InvalidRequest(
            f"the prompt has {len(prompt_ids)} tokens; the model's context is {max_context}", "messages"
        )
    return min(params.max_tokens, room)
