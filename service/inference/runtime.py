"""The inference runtime: one scheduler thread per process that serves every local model.

Callers submit from any thread (loading a base model and encoding the prompt happen in the caller's thread, so a slow
load never stalls the running batches). The scheduler thread loops over the lanes (one batch per resident base): it
drops rows whose request was cancelled or timed out, loads the adapters that joining rows need, prefills them into the
running batch, decodes one token for every row, and hands each request its new text. Results travel through the
request's own event list, which sync consumers wait on with a condition and async consumers with an asyncio event.

transformers' own continuous batching (``init_continuous_batching``) was not used: it runs one generation config for
every request (no per-request temperature, top_p or seed), has no per-request LoRA adapter, and its paged attention
targets accelerators. This scheduler keeps a plain left-padded dynamic KV cache, which works with any causal LM on CPU
and GPU and with peft's mixed-adapter batches.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch import Lane, Sequence
from .calls import DerivedCalls, check_params, token_limit
from .capacity import rows_fit
from .models import BASE_ROW, ModelPool, ResidentBase, adapter_name, check_adapter_folder
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

log = logging.getLogger(__name__)

_DONE = object()
# Prompt tokens prefilled between two decode steps at most (a longer prompt still goes alone): a burst of arrivals is
# prefilled in groups, so the first of them get their first token sooner and running rows keep decoding in between.
PREFILL_TOKENS_PER_STEP = 512
# A GPU prefills thousands of tokens in the time of a few decode steps, and 512 would take 20 steps to bring 256 rows of
# short prompts into the batch (not measured on a GPU yet: bench/inference_throughput.py shows it).
GPU_PREFILL_TOKENS_PER_STEP = 8192


class Request:
    """One submitted call: its choices' sequences, its deadline and the events waiting for its consumer."""

    def __init__(
        self, ref: ModelRef, prompt_ids: list[int], params: SamplingParams, deadline: float, *, whole: bool = False
    ):
        self.ref = ref
        self.whole = whole  # read only when complete: its text is handed over once, not a piece per step
        self.prompt_ids = prompt_ids
        self.params = params
        self.deadline = deadline
        self.submitted = time.monotonic()
        self.sequences: list[Sequence] = []
        self.cancelled = False
        self.admitted = False
        self._events: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._wakers: list[Callable[[], None]] = []
        self.done = False

    # Producer side (scheduler thread) -----------------------------------------------------------------------------

    def put(self, item: Any) -> None:
        with self._cond:
            if self.done:
                return
            self._events.append(item)
            if item is _DONE or isinstance(item, BaseException):
                self.done = True
            self._cond.notify_all()
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def fail(self, error: BaseException) -> None:
        self.put(error)

    # Consumer side ------------------------------------------------------------------------------------------------

    def cancel(self) -> None:
        """The consumer went away: the scheduler drops the request's rows before the next decode step."""
        self.cancelled = True

    def get(self) -> Any:
        """The next event (blocking); `_DONE` at the end; an exception instance when the request failed."""
        with self._cond:
            while not self._events:
                remaining = self.deadline + 30.0 - time.monotonic()
                if remaining <= 0:
                    # The scheduler enforces deadlines itself; this only guards against it having died.
                    return InferenceTimeout("the request did not finish in time")
                self._cond.wait(remaining)
            return self._events.popleft()

    def add_waker(self, wake: Callable[[], None]) -> None:
        with self._cond:
            self._wakers.append(wake)

    def pop_ready(self) -> list[Any]:
        with self._cond:
            items = list(self._events)
            self._events.clear()
            return items


@dataclass
class RuntimeStats:
    queued: int
    running: int
    resident: dict[str, list[str]]  # base model -> its loaded adapter folders' names
    used_mb: float
    batch_sizes: list[int] = field(default_factory=list)  # rows of recent decode steps, oldest first


class InferenceRuntime(DerivedCalls):
    def __init__(
        self,
        *,
        cache_dir: Path,
        max_batch_size: int = 32,
        max_queued: int = 256,
        max_tokens: int = 4096,
        memory_budget_mb: float = 8192,
        request_timeout_s: float = 300.0,
        device: str = "auto",
        precision: str = "auto",
        num_threads: int | None = None,
    ):
        self.max_batch_size = max_batch_size
        self.max_queued = max_queued
        self.max_tokens = max_tokens
        self.request_timeout_s = request_timeout_s
        self.pool = ModelPool(
            cache_dir=cache_dir,
            budget_bytes=int(memory_budget_mb * 2**20),
            device=device,
            precision=precision,
            num_threads=num_threads,
        )
        self._lock = threading.Condition()
        self._lanes: dict[str, Lane] = {}
        self._queued = 0  # requests whose sequences are not all in a batch yet
        self._batch_sizes: collections.deque[int] = collections.deque(maxlen=4096)
        self._seconds_per_request = 1.0  # moving average of request durations, for retry-after
        self._thread: threading.Thread | None = None
        self._closed = False
        self._drain = False

    # Public API ---------------------------------------------------------------------------------------------------

    def load(self, model: ModelRef) -> ResidentBase:
        """Make the base model resident and check the adapter folder (the adapter itself loads at first use)."""
        base = self.pool.get(model, self._in_use)
        if model.adapter_path is not None:
            check_adapter_folder(model)
        return base

    def encode(self, model: ModelRef, prompt: Prompt) -> list[int]:
        return encode_prompt(self.load(model), prompt)

    def submit(
        self,
        model: ModelRef,
        prompt: Prompt,
        params: SamplingParams,
        *,
        timeout_s: float | None = None,
        whole: bool = False,
    ) -> Request:
        check_params(params, max_tokens=self.max_tokens, max_n=self.max_batch_size)
        base = self.load(model)
        prompt_ids = encode_prompt(base, prompt)
        limit = token_limit(prompt_ids, params, base.max_context)
        timeout = self.request_timeout_s if timeout_s is None else min(timeout_s, self.request_timeout_s)
        request = Request(model, prompt_ids, params, time.monotonic() + timeout, whole=whole)
        from .sampling import row_generator
        from .text import TextAssembler

        name = adapter_name(model.adapter_path) if model.adapter_path is not None else BASE_ROW
        request.sequences = [
            Sequence(
                request=request,
                index=i,
                text=TextAssembler(base.tokenizer, params.stop),
                generator=row_generator(params.seed, i, base.device),
                limit=limit,
                adapter=name,
            )
            for i in range(params.n)
        ]
        with self._lock:
            if self._closed:
                raise InferenceError("the inference runtime is shut down")
            if self._queued >= self.max_queued:
                raise Overloaded(
                    f"{self._queued} inference requests are already waiting; try again shortly",
                    retry_after_s=self._retry_after(),
                )
            self.pool.reinstate(base)
            lane = self._lanes.get(base.key)
            if lane is None or (lane.base is not base and not lane.busy):
                lane = self._lanes[base.key] = Lane.for_base(base)
            lane.waiting.extend(request.sequences)
            self._queued += 1
            self._ensure_thread()
            self._lock.notify_all()
        return request

    def stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Iterator[StreamItem]:
        """StreamEvent items, then one Usage. Closing the iterator early cancels the request."""
        request = self.submit(model, prompt, params, timeout_s=timeout_s)
        return _events(request, iter(request.get, _DONE))

    def whole_stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Iterator[StreamItem]:
        request = self.submit(model, prompt, params, timeout_s=timeout_s, whole=True)
        return _events(request, iter(request.get, _DONE))

    async def aopen_stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> AsyncGenerator[StreamItem, None]:
        """Submit now (raising Overloaded, ModelLoadError or InvalidRequest here), then stream the events from the
        returned generator; closing it cancels the request."""
        request = await self._asubmit(model, prompt, params, timeout_s)
        return _aevents(request)

    def stats(self) -> RuntimeStats:
        with self._lock:
            running = sum(len(lane.rows) for lane in self._lanes.values())
            queued = self._queued
            sizes = list(self._batch_sizes)
        return RuntimeStats(
            queued=queued,
            running=running,
            resident={b.key: [a.path.name for a in b.adapters.values()] for b in self.pool.resident()},
            used_mb=self.pool.used_bytes() / 2**20,
            batch_sizes=sizes,
        )

    def close(self, *, drain: bool = False) -> None:
        """Refuse new requests; end running ones (or, with `drain`, let them finish first) and stop the thread."""
        with self._lock:
            self._closed = True
            self._drain = drain
            self._lock.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    # Submission helpers ---------------------------------------------------------------------------------------

    async def _asubmit(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, timeout_s: float | None
    ) -> Request:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, functools.partial(self.submit, model, prompt, params, timeout_s=timeout_s))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The caller left while the model loaded: cancel the request as soon as it exists.
            future.add_done_callback(lambda f: f.cancelled() or f.exception() or f.result().cancel())
            raise

    def _retry_after(self) -> float:
        waves = math.ceil((self._queued + 1) / self.max_batch_size)
        return float(max(1, math.ceil(waves * self._seconds_per_request)))

    def _in_use(self, key: str) -> bool:
        lane = self._lanes.get(key)
        return lane is not None and lane.busy

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="inference-scheduler", daemon=True)
            self._thread.start()

    # Scheduler thread -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not any(lane.busy for lane in self._lanes.values()):
                    self._lock.wait()
                busy = [lane for lane in self._lanes.values() if lane.busy]
                stopping = self._closed and not (self._drain and busy)
                lanes = list(self._lanes.values()) if stopping else busy
            if stopping:
                for lane in lanes:
                    for seq in [*lane.rows, *lane.waiting]:
                        seq.request.fail(InferenceError("the inference runtime is shut down"))
                return
            for lane in lanes:
                try:
                    self._step(lane)
                except Exception:
                    log.exception("inference: a batch of %s failed", lane.base.key)
                    self._fail_lane(lane, InferenceError("the model failed while generating"))
            self._trim_idle()

    def _step(self, lane: Lane) -> None:
        now = time.monotonic()
        self._drop_gone(lane, now)
        joining = self._admit(lane)
        if joining:
            lane.prefill(joining)
            lane.note_tokens(joining, lane.base.eos_ids)
            self._deliver(lane, joining)
        decoding = [seq for seq in lane.rows if seq not in joining]
        if decoding:
            with self._lock:
                self._batch_sizes.append(len(lane.rows))
            lane.decode()
            lane.note_tokens(lane.rows, lane.base.eos_ids)
            self._deliver(lane, lane.rows)
        elif joining:
            with self._lock:
                self._batch_sizes.append(len(joining))

    def _drop_gone(self, lane: Lane, now: float) -> None:
        gone = set()
        for seq in lane.rows:
            if seq.request.cancelled or seq.request.done or now > seq.request.deadline:
                gone.add(seq)
        lane.drop(gone)
        with self._lock:
            kept: collections.deque[Sequence] = collections.deque()
            for seq in lane.waiting:
                if seq.request.cancelled or seq.request.done or now > seq.request.deadline:
                    gone.add(seq)
                else:
                    kept.append(seq)
            lane.waiting = kept
            for request in {seq.request for seq in gone}:
                if not request.admitted:
                    request.admitted = True
                    self._queued -= 1
        for request in {seq.request for seq in gone}:
            if now > request.deadline and not request.cancelled:
                request.fail(InferenceTimeout("the request did not finish within its timeout"))
            else:
                request.put(_DONE)

    def _admit(self, lane: Lane) -> list[Sequence]:
        if lane.rows and not lane.can_join_running():
            return []  # a cache this scheduler cannot merge: let the running batch finish first
        joining: list[Sequence] = []
        prompt_tokens = 0
        widest = lane.widest()
        chunk = GPU_PREFILL_TOKENS_PER_STEP if lane.base.device.type == "cuda" else PREFILL_TOKENS_PER_STEP
        with self._lock:
            while lane.waiting and len(lane.rows) + len(joining) < self.max_batch_size:
                seq = lane.waiting[0]
                size = len(seq.request.prompt_ids)
                if joining and prompt_tokens + size > chunk:
                    break
                rows, width = len(lane.rows) + len(joining) + 1, max(widest, seq.width)
                if rows > 1 and not rows_fit(lane.kv_budget, rows, width):
                    break  # its KV cache would not fit beside the running rows' (GPU): it waits for rows to finish
                joining.append(lane.waiting.popleft())
                prompt_tokens += size
                widest = width
            for request in {seq.request for seq in joining}:
                if not request.admitted and all(s in joining or s in lane.rows for s in request.sequences):
                    request.admitted = True
                    self._queued -= 1
        ready = []
        busy = {seq.adapter for seq in lane.rows}
        for seq in joining:
            if seq.adapter == BASE_ROW:
                ready.append(seq)
                continue
            try:
                if seq.adapter not in lane.base.adapters:
                    self._make_room(lane, seq, busy | {s.adapter for s in joining})
                lane.base.load_adapter(seq.request.ref)
                ready.append(seq)
            except ModelLoadError as exc:
                seq.request.fail(exc)
        return ready

    def _make_room(self, lane: Lane, seq: Sequence, busy: set[str]) -> None:
        path = Path(seq.request.ref.adapter_path or ".")
        nbytes = sum(f.stat().st_size for f in path.glob("adapter_model.*") if f.is_file())
        self.pool.make_room_for_adapter(lane.base, nbytes, busy)
        self.pool.trim(self._in_use, keep=lane.base.key)

    def _deliver(self, lane: Lane, rows: list[Sequence]) -> None:
        finished = set()
        for seq in rows:
            done = seq.finish_reason is not None
            if not done and seq.request.whole:
                continue
            if done:
                seq.text.finish()
            piece = seq.text.take(final=done)
            if piece or done:
                seq.request.put(StreamEvent(seq.index, piece, seq.finish_reason))  # type: ignore[arg-type]
            if done:
                finished.add(seq)
        lane.drop(finished)
        for request in {seq.request for seq in finished}:
            if all(s.finish_reason is not None for s in request.sequences):
                request.put(Usage(len(request.prompt_ids), sum(s.tokens for s in request.sequences)))
                request.put(_DONE)
                elapsed = time.monotonic() - request.submitted
                self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * elapsed

    def _fail_lane(self, lane: Lane, error: InferenceError) -> None:
        with self._lock:
            sequences = [*lane.rows, *lane.waiting]
            lane.waiting.clear()
            for request in {seq.request for seq in sequences}:
                if not request.admitted:
                    request.admitted = True
                    self._queued -= 1
        lane.rows, lane.cache, lane.mask = [], None, None
        for request in {seq.request for seq in sequences}:
            request.fail(error)

    def _trim_idle(self) -> None:
        with self._lock:
            idle = [key for key, lane in self._lanes.items() if not lane.busy]
            for key in idle:
                del self._lanes[key]
        if idle:
            self.pool.trim(self._in_use)


# Prompt encoding and result assembly --------------------------------------------------------------------------


def encode_prompt(base: Any, prompt: Prompt) -> list[int]:
    """Token ids of a chat (the base's training chat template) or of a raw text prompt; `base` has `tokenizer`,
    `tokenizer_lock` and `encoder` (a resident transformers base, or a vLLM backend's)."""
    # A Rust tokenizer refuses use from two threads while one changes its settings ("Already borrowed").
    with base.tokenizer_lock:
        return _encode_unlocked(base, prompt)


def _encode_unlocked(base: Any, prompt: Prompt) -> list[int]:
    if isinstance(prompt, str):
        ids = list(base.tokenizer(prompt)["input_ids"])
        if not ids:
            bos = base.tokenizer.bos_token_id
            if bos is None:
                raise InvalidRequest("the prompt is empty", "prompt")
            ids = [bos]
        return ids
    if base.encoder is None:
        raise InvalidRequest("this model has no chat template: call it with a text prompt (completions)", "messages")
    from service.providers.local.errors import LocalTrainingError

    try:
        return base.encoder.encode_prompt(list(prompt))
    except LocalTrainingError as exc:
        raise InvalidRequest(f"messages: {exc}", "messages") from None


def _events(request: Request, items: Iterator[Any]) -> Iterator[StreamItem]:
    try:
        for item in items:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        request.cancel()


async def _aevents(request: Request) -> AsyncGenerator[StreamItem, None]:
    try:
        async for item in _aitems(request):
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        request.cancel()


async def _aitems(request: Request) -> AsyncIterator[Any]:
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the consumer's loop is gone; nothing waits any more
            loop.call_soon_threadsafe(ready.set)

    request.add_waker(wake)
    while True:
        ready.clear()
        for item in request.pop_ready():
            if item is _DONE:
                return
            yield item
            if isinstance(item, BaseException):
                return
        remaining = request.deadline + 30.0 - time.monotonic()
        try:
            await asyncio.wait_for(ready.wait(), timeout=max(remaining, 0.001))
        except TimeoutError:
            yield InferenceTimeout("the request did not finish in time")
            return
