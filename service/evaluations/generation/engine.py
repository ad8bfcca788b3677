"""Run many chat completions concurrently within rate limits, handing each result over as it arrives."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Container, Iterable
from typing import Any

from openai import AsyncOpenAI

from service.evaluations.generation.runner import ChatRunner, FatalGenerationError, TokenEstimator
from service.evaluations.generation.types import ClientConfig, GenerationStats, GenRequest, GenResult, RateLimits
from service.evaluations.graders.judge import ChatReply

ResultCallback = Callable[[GenResult], Awaitable[None] | None]


async def _aiter(requests: Iterable[GenRequest] | AsyncIterable[GenRequest]) -> AsyncIterator[GenRequest]:
    if isinstance(requests, AsyncIterable):
        async for r in requests:
            yield r
    else:
        for r in requests:
            yield r


async def generate_all(
    requests: Iterable[GenRequest] | AsyncIterable[GenRequest],
    *,
    on_result: ResultCallback,
    client_config: ClientConfig | None = None,
    limits: RateLimits | None = None,
    client: AsyncOpenAI | None = None,
    runner: ChatRunner | None = None,
    skip_keys: Container[str] = frozenset(),
    should_stop: Callable[[], bool] | None = None,
    token_estimator: TokenEstimator | None = None,
) -> GenerationStats:
    """Make every request (except keys in ``skip_keys``) and call ``on_result`` with each result as it arrives.

    Requests are read lazily, so the input may be a generator over a large data set. Failed requests (after retries)
    are passed to ``on_result`` with ``ok=False``. A fatal error (authentication, quota, unknown model) stops the run:
    requests in flight finish, nothing new starts, the fatal request is not reported (a resumed run retries it), and
    the returned stats say ``aborted``. ``should_stop`` is checked before each request (for cancellation).
    An exception from ``on_result`` (e.g. the database is gone) cancels the run and propagates.

    Pass ``runner`` to share one rate budget with other work (e.g. an LLM judge); otherwise one is made from
    ``client_config`` or ``client`` and ``limits``. A shared runner's counters add up over everything it ran.
    """
    owned = runner is None
    if runner is None:
        runner = ChatRunner(client_config, limits, client=client, token_estimator=token_estimator)
    source = _aiter(requests)
    seen: set[str] = set()
    stop = asyncio.Event()
    started = time.monotonic()
    stats = runner.stats
    # An async generator cannot be advanced by two workers at once.
    source_lock = asyncio.Lock()

    async def next_request() -> GenRequest | None:
        while not stop.is_set():
            if should_stop is not None and should_stop():
                stats.stopped = True
                stop.set()
                return None
            try:
                async with source_lock:
                    request = await anext(source)
            except StopAsyncIteration:
                stop.set()
                return None
            stats.total += 1
            if request.key in seen or request.key in skip_keys:
                stats.skipped += 1
                continue
            seen.add(request.key)
            return request
        return None

    async def worker() -> None:
        while (request := await next_request()) is not None:
            try:
                result = await runner.run(request)
            except FatalGenerationError as exc:
                if not stats.aborted:
                    stats.aborted = True
                    stats.abort_reason = f"{exc.kind}: {exc}"
                    stats.abort_kind = exc.kind
                stop.set()
                return
            outcome = on_result(result)
            if inspect.isawaitable(outcome):
                await outcome

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(runner.limits.max_concurrency):
                group.create_task(worker())
    finally:
        if owned:
            await runner.aclose()
    result = runner.snapshot_stats()
    result.elapsed_s = time.monotonic() - started
    finished = result.succeeded + result.failed
    result.requests_per_s = finished / result.elapsed_s if result.elapsed_s > 0 else 0.0
    return result


def generate_all_sync(requests: Iterable[GenRequest], **kwargs: Any) -> GenerationStats:
    """``generate_all`` for synchronous callers such as Celery tasks; ``on_result`` may be a plain function.

    Inside a thread that already runs an event loop it runs on a fresh thread (``on_result`` is then called there).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(generate_all(requests, **kwargs))
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["stats"] = asyncio.run(generate_all(requests, **kwargs))
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="generate_all", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["stats"]


class JudgeRequestError(RuntimeError):
    pass


class JudgeChatClient:
    """The graders' ``ChatClient`` on top of a ``ChatRunner``: judge calls share its limits and retries."""

    def __init__(self, runner: ChatRunner) -> None:
        self._runner = runner
        self._count = 0

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temperature: float,
        max_tokens: int,
        seed: int | None,
    ) -> ChatReply:
        self._count += 1
        params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if seed is not None:
            params["seed"] = seed
        request = GenRequest(key=f"judge-{self._count}", model=model, messages=messages, params=params)
        result = await self._runner.run(request)
        if not result.ok:
            raise JudgeRequestError(result.error or "judge request failed")
        return ChatReply(text=result.output or "", input_tokens=result.input_tokens, output_tokens=result.output_tokens)
