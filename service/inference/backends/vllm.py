"""vLLM as the inference backend on a GPU: paged KV cache, continuous batching and CUDA graphs in one engine, many LoRA
adapters per batch (``enable_lora``, one ``LoRARequest`` per fine-tune), with the runtime's interface, items and errors.

What stays ours: the prompt is encoded here with the training chat template (``ChatEncoder``) and sent as token ids,
so a fine-tune sees at inference exactly the format it was trained on; the bounds (max_tokens, n, stop, queue length,
timeouts) are the transformers runtime's. vLLM decodes the text (``RequestOutputKind.DELTA``: each output carries only
the new text) and holds back what could still become a stop string, as our TextAssembler does.

The engine runs on an event loop of its own (a daemon thread): vLLM's async engine binds its output handler to the loop
of the first ``generate``, while our callers come from worker threads (evaluations, ``LocalGenerator``) and from the
API's loop. Each request runs there as a task; its items cross back through a queue (thread or asyncio, by caller), and
a consumer that goes away cancels the task, which aborts the request in the engine.

One base model per process: vLLM sizes its KV cache from ``gpu_memory_utilization`` of the whole device when the engine
starts, so a second engine would find no memory left. A request for another base is refused (ModelLoadError).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..calls import DerivedCalls, check_params, token_limit
from ..models import adapter_name, check_adapter_folder
from ..types import (
    InferenceError,
    InferenceTimeout,
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
# vLLM preallocates this share of the GPU for weights, activations and its paged KV cache; the rest stays for the
# process's own tensors (and a trainer's, when both share a device, should leave itself room through this).
GPU_MEMORY_UTILIZATION = 0.85
# Adapters resident on the GPU at once (more are swapped in from CPU memory as requests need them) and the largest
# LoRA rank served; the local trainer's ranks are well below it.
MAX_LORAS = 8
MAX_LORA_RANK = 64


@dataclass
class VllmBase:
    """What ``load`` returns: the engine of one base model and what callers read from a base (tokenizer, chat encoder,
    end tokens), as the transformers runtime's ResidentBase offers them."""

    key: str
    engine: Any
    tokenizer: Any
    encoder: Any
    eos_ids: frozenset[int]
    max_context: int | None
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: dict[str, int] = field(default_factory=dict)  # adapter name -> vLLM's integer LoRA id


class VllmRuntime(DerivedCalls):
    def __init__(
        self,
        *,
        cache_dir: Path,
        max_batch_size: int = 256,
        max_queued: int = 256,
        max_tokens: int = 4096,
        request_timeout_s: float = 300.0,
        precision: str = "auto",
        **_transformers_only: Any,  # memory budget, device, threads: the engine manages the device itself
    ) -> None:
        import vllm  # noqa: F401  (fail here, not at the first request, when vLLM is not installed)

        self.cache_dir = Path(cache_dir)
        self.max_batch_size = max_batch_size
        self.max_queued = max_queued
        self.max_tokens = max_tokens
        self.request_timeout_s = request_timeout_s
        self.precision = precision
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._base: VllmBase | None = None
        self._lora_ids = itertools.count(1)  # vLLM wants a distinct positive int per adapter
        self._in_flight = 0
        self._seconds_per_request = 1.0
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()

    # The runtime interface ----------------------------------------------------------------------------------------

    def load(self, model: ModelRef) -> VllmBase:
        # One engine start at a time, under a lock of its own: a start takes minutes on a big model, and the counters'
        # lock is taken on the engine's loop (a request ending) and by the health route meanwhile.
        with self._start_lock:
            if self._closed:  # its loop has stopped: nothing would ever run there again
                raise InferenceError("the inference runtime is shut down")
            if self._base is None:
                base = self._start(model)
                with self._lock:
                    self._base = base
            elif self._base.key != model.base_key:
                raise ModelLoadError(
                    f"{model.who} cannot be loaded: the vLLM backend serves one base model per process and holds "
                    "another; set FINETUNE_INFERENCE_BACKEND=transformers to serve several"
                )
            base = self._base
        if model.adapter_path is not None:
            check_adapter_folder(model)
        return base

    def encode(self, model: ModelRef, prompt: Prompt) -> list[int]:
        from ..runtime import encode_prompt

        return encode_prompt(self.load(model), prompt)

    def stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Iterator[StreamItem]:
        items: queue.Queue[Any] = queue.Queue()
        task = self._submit(model, prompt, params, timeout_s, items.put)
        return _thread_items(items, task, self.request_timeout_s)

    async def aopen_stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> AsyncGenerator[StreamItem, None]:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone; nobody reads any more
                loop.call_soon_threadsafe(items.put_nowait, item)

        # Loading the model and encoding the prompt block: off the caller's loop.
        submitted = loop.run_in_executor(None, lambda: self._submit(model, prompt, params, timeout_s, put))
        try:
            task = await asyncio.shield(submitted)
        except asyncio.CancelledError:  # the caller left while the engine started: end the request once it exists
            submitted.add_done_callback(lambda f: f.cancelled() or f.exception() or f.result().cancel())
            raise
        return _async_items(items, task)

    def stats(self) -> Any:
        from ..runtime import RuntimeStats

        with self._lock:
            base, in_flight = self._base, self._in_flight
        resident = {base.key: sorted(base.adapters)} if base is not None else {}
        return RuntimeStats(queued=0, running=in_flight, resident=resident, used_mb=0.0)

    def close(self, *, drain: bool = False) -> None:
        with self._lock:
            self._closed = True
            base, self._base = self._base, None
        if base is not None:
            shutdown = getattr(base.engine, "shutdown", None)
            if shutdown is not None:
                self._loop.call_soon_threadsafe(shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    # Engine ------------------------------------------------------------------------------------------------------

    def _start(self, model: ModelRef) -> VllmBase:
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        from service.providers.local.base_models import load_tokenizer, model_folder, resolve_base_model
        from service.providers.local.chat_data import ChatEncoder
        from service.providers.local.errors import LocalTrainingError

        try:
            source = resolve_base_model(model.base_model)
            folder = model_folder(source, self.cache_dir)
            tokenizer = load_tokenizer(source, self.cache_dir)
        except LocalTrainingError as exc:
            log.warning("base model %s failed to load: %s", model.base_key, exc)
            raise ModelLoadError(f"{model.who} cannot be loaded: its base model failed to load") from None
        args = AsyncEngineArgs(
            model=folder,
            tokenizer=folder,
            dtype="float32" if self.precision == "fp32" else "auto",
            enable_lora=True,
            max_loras=MAX_LORAS,
            max_lora_rank=MAX_LORA_RANK,
            max_num_seqs=self.max_batch_size,
            gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
            disable_log_stats=True,
        )
        started = time.perf_counter()

        async def build() -> Any:  # on the engine's loop, which its output handler will run on
            return AsyncLLMEngine.from_engine_args(args)

        try:
            engine = asyncio.run_coroutine_threadsafe(build(), self._loop).result()
        except Exception as exc:
            log.warning("vLLM could not start %s: %s", model.base_key, exc)
            raise ModelLoadError(f"{model.who} cannot be loaded: the vLLM engine did not start") from None
        log.info("inference: vLLM engine for %s started in %.1fs", model.base_key, time.perf_counter() - started)
        try:
            encoder: Any = ChatEncoder(tokenizer, 1 << 30)
        except Exception:  # no chat template: raw-text completions still work
            encoder = None
        max_context = getattr(getattr(engine, "model_config", None), "max_model_len", None)
        return VllmBase(
            key=model.base_key,
            engine=engine,
            tokenizer=tokenizer,
            encoder=encoder,
            eos_ids=_eos_ids(tokenizer, folder),
            max_context=int(max_context) if max_context else None,
        )

    def _lora(self, base: VllmBase, model: ModelRef) -> Any:
        if model.adapter_path is None:
            return None
        from vllm.lora.request import LoRARequest

        name = adapter_name(model.adapter_path)
        with self._lock:
            if name not in base.adapters:
                base.adapters[name] = next(self._lora_ids)
            lora_id = base.adapters[name]
        return LoRARequest(lora_name=name, lora_int_id=lora_id, lora_path=str(model.adapter_path))

    def _sampling(self, base: VllmBase, params: SamplingParams, limit: int) -> Any:
        import vllm
        from vllm.sampling_params import RequestOutputKind

        return vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,  # 0 is greedy in vLLM as in OpenAI's API
            top_p=params.top_p,
            seed=params.seed,
            max_tokens=limit,
            stop=list(params.stop),
            stop_token_ids=sorted(base.eos_ids),
            include_stop_str_in_output=False,
            skip_special_tokens=True,
            output_kind=RequestOutputKind.DELTA,
        )

    def _submit(
        self,
        model: ModelRef,
        prompt: Prompt,
        params: SamplingParams,
        timeout_s: float | None,
        put: Callable[[Any], None],
    ) -> concurrent.futures.Future[None]:
        """Check, encode and start the request on the engine's loop; its items go to `put`, `_DONE` last."""
        check_params(params, max_tokens=self.max_tokens, max_n=self.max_batch_size)
        base = self.load(model)
        from ..runtime import encode_prompt

        prompt_ids = encode_prompt(base, prompt)
        limit = token_limit(prompt_ids, params, base.max_context)
        timeout = self.request_timeout_s if timeout_s is None else min(timeout_s, self.request_timeout_s)
        with self._lock:
            if self._closed:
                raise InferenceError("the inference runtime is shut down")
            if self._in_flight >= self.max_batch_size + self.max_queued:
                waves = math.ceil((self._in_flight - self.max_batch_size + 1) / self.max_batch_size)
                raise Overloaded(
                    f"{self._in_flight - self.max_batch_size} inference requests are already waiting; try again shortly",
                    retry_after_s=float(max(1, math.ceil(waves * self._seconds_per_request))),
                )
            self._in_flight += 1
        try:
            job = self._generate(
                base, prompt_ids, self._sampling(base, params, limit), self._lora(base, model), put, timeout
            )
            task = asyncio.run_coroutine_threadsafe(job, self._loop)
        except BaseException:
            self._release(None)
            raise
        # Also when the consumer cancels it before it starts (its own `finally` never runs then).
        task.add_done_callback(self._release)
        return task

    def _release(self, _task: Any) -> None:
        with self._lock:
            self._in_flight -= 1

    async def _generate(
        self,
        base: VllmBase,
        prompt_ids: list[int],
        sampling: Any,
        lora: Any,
        put: Callable[[Any], None],
        timeout: float,
    ) -> None:
        from vllm import TokensPrompt

        request_id = uuid.uuid4().hex
        started = time.monotonic()
        finished = False
        counts: dict[int, int] = {}
        try:
            async with asyncio.timeout(timeout):
                outputs = base.engine.generate(
                    TokensPrompt(prompt_token_ids=prompt_ids), sampling, request_id, lora_request=lora
                )
                async for output in outputs:
                    for choice in output.outputs:
                        counts[choice.index] = counts.get(choice.index, 0) + len(choice.token_ids)
                        reason = choice.finish_reason
                        if reason is not None and reason not in ("stop", "length"):
                            raise InferenceError(f"the engine ended the request ({reason})")
                        if choice.text or reason is not None:
                            put(StreamEvent(choice.index, choice.text, reason))
                    if output.finished:
                        finished = True
                        put(Usage(len(prompt_ids), sum(counts.values())))
            if not finished:
                raise InferenceError("the request ended without a result")
            put(_DONE)
        except TimeoutError:
            put(InferenceTimeout("the request did not finish within its timeout"))
        except InferenceError as exc:
            put(exc)
        except asyncio.CancelledError:  # the consumer went away
            raise
        except Exception:
            log.exception("inference: vLLM failed on a request for %s", base.key)
            put(InferenceError("the model failed while generating"))
        finally:
            if not finished:
                await base.engine.abort(request_id)
            if finished:
                with self._lock:
                    self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * (time.monotonic() - started)


def _eos_ids(tokenizer: Any, folder: str) -> frozenset[int]:
    """The tokenizer's end token and the generation config's (a chat model's end-of-turn), as ResidentBase reads them."""
    eos = {tokenizer.eos_token_id}
    try:
        from transformers import GenerationConfig

        configured = GenerationConfig.from_pretrained(folder).eos_token_id
    except Exception:  # no generation_config.json
        configured = None
    eos.update(configured if isinstance(configured, list) else [configured])
    return frozenset(token for token in eos if token is not None)


def _thread_items(items: queue.Queue[Any], task: concurrent.futures.Future[None], timeout_s: float) -> Iterator[Any]:
    try:
        while True:
            try:
                item = items.get(timeout=timeout_s + 30.0)
            except queue.Empty:  # the engine's loop died; its own timeout would have ended the request
                raise InferenceTimeout("the request did not finish in time") from None
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()  # cancels the request's task on the engine's loop, which aborts it in the engine


async def _async_items(items: asyncio.Queue[Any], task: concurrent.futures.Future[None]) -> AsyncGenerator[Any, None]:
    try:
        while True:
            item = await items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
