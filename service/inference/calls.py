"""The calls every runtime answers (in-process, remote, vLLM), and the ones derived from two each implements.

A runtime implements ``load``, ``stream`` (blocking, for worker threads) and ``aopen_stream`` (async: submits at once,
so a refusal raises before a response starts); ``generate``, ``astream`` and ``agenerate`` are the same on all of them
and live here once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, Protocol

from .types import Completion, ModelRef, Prompt, SamplingParams, StreamItem, collect


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

    def generate(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Completion:
        # Closing the stream, even when an error stops the collection, cancels what is left of the request.
        with contextlib.closing(self.stream(model, prompt, params, timeout_s=timeout_s)) as items:  # type: ignore[type-var]
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
