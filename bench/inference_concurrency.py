"""Local inference under concurrency: 32 chat completions at once against the same 32 one at a time, on CPU.

    .venv/bin/python bench/inference_concurrency.py [--requests 32] [--max-tokens 64] [--threads N] [--cache-dir DIR]

Model: SmolLM2-135M-Instruct (alias smollm2-135m-instruct; the packaged GGUF is converted once into --cache-dir).
Both sides run in the same process on the same resident model, greedy, with the same prompts:
- concurrent: every request is submitted at once and streamed (``InferenceRuntime.stream``); the runtime batches them
  continuously (new requests join between decode steps, finished ones leave);
- baseline: the same requests one after another, each alone in the runtime (what serving without batching gives);
- reference: the first few requests with transformers' own ``generate`` one at a time, to show the runtime's single
  request speed is that of plain transformers.
Figures: completion tokens per second (of wall time, and of this process's CPU time, which a busy shared machine
disturbs less), requests per second, latency p50/p95 and time to first token p50/p95, and how
many concurrent answers are identical to the one-at-a-time answers (greedy: all of them should be).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

TOPICS = [
    "the water cycle",
    "photosynthesis",
    "how a bicycle stays upright",
    "why the sky is blue",
    "volcanoes",
    "the moon's phases",
    "how vaccines work",
    "compound interest",
    "the French revolution",
    "black holes",
    "how bread rises",
    "plate tectonics",
    "the immune system",
    "rainbows",
    "how airplanes fly",
    "the printing press",
    "honey bees",
    "tides",
    "electric cars",
    "recycling plastic",
    "the Roman empire",
    "coffee",
    "earthquakes",
    "the internet",
    "solar panels",
    "glaciers",
    "how a compass works",
    "chess openings",
    "the human heart",
    "thunderstorms",
    "coral reefs",
    "the speed of light",
]


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [
        [
            {"role": "system", "content": "You are a helpful assistant. Answer in a few sentences."},
            {"role": "user", "content": f"Explain {TOPICS[i % len(TOPICS)]} to a curious ten year old."},
        ]
        for i in range(n)
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed_stream(runtime, ref, messages, params) -> dict:  # type: ignore[no-untyped-def]
    from service.inference import StreamEvent, Usage

    started = time.perf_counter()
    first = None
    text = []
    tokens = 0
    for event in runtime.stream(ref, messages, params):
        if isinstance(event, StreamEvent):
            if first is None and event.text:
                first = time.perf_counter()
            text.append(event.text)
        elif isinstance(event, Usage):
            tokens = event.completion_tokens
    ended = time.perf_counter()
    return {"latency": ended - started, "ttft": (first or ended) - started, "tokens": tokens, "text": "".join(text)}


def run_concurrent(runtime, ref, all_messages, params) -> tuple[float, float, list[dict]]:  # type: ignore[no-untyped-def]
    results: list[dict | None] = [None] * len(all_messages)
    gate = threading.Barrier(len(all_messages) + 1)

    def one(i: int) -> None:
        gate.wait()
        results[i] = timed_stream(runtime, ref, all_messages[i], params)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(all_messages))]
    for thread in threads:
        thread.start()
    gate.wait()
    started, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, time.process_time() - cpu, [r for r in results if r is not None]


def run_sequential(runtime, ref, all_messages, params) -> tuple[float, float, list[dict]]:  # type: ignore[no-untyped-def]
    started, cpu = time.perf_counter(), time.process_time()
    results = [timed_stream(runtime, ref, messages, params) for messages in all_messages]
    return time.perf_counter() - started, time.process_time() - cpu, results


def transformers_reference(runtime, ref, all_messages, max_tokens: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    import torch

    base = runtime.load(ref)
    started = time.perf_counter()
    tokens = 0
    for messages in all_messages:
        ids = torch.tensor([runtime.encode(ref, messages)])
        with torch.inference_mode():
            out = base.model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
        tokens += out.shape[1] - ids.shape[1]
    return time.perf_counter() - started, tokens


def report(name: str, wall: float, cpu: float, results: list[dict]) -> dict[str, float]:
    tokens = sum(r["tokens"] for r in results)
    lat = [r["latency"] for r in results]
    ttft = [r["ttft"] for r in results]
    figures = {"tok_s": tokens / wall, "req_s": len(results) / wall, "tok_cpu_s": tokens / cpu}
    print(
        f"{name:<11} {len(results):3d} requests in {wall:6.1f}s  {figures['tok_s']:7.1f} tok/s  "
        f"{figures['req_s']:5.2f} req/s  latency p50 {pct(lat, 0.5):5.2f}s p95 {pct(lat, 0.95):5.2f}s  "
        f"TTFT p50 {pct(ttft, 0.5):5.2f}s p95 {pct(ttft, 0.95):5.2f}s  ({tokens} completion tokens, "
        f"{figures['tok_cpu_s']:.1f} per CPU second)"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the idle cores)")
    parser.add_argument("--reference", type=int, default=4, help="requests for the transformers generate reference")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "local-models")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    import torch

    from service.inference import ModelRef, SamplingParams
    from service.inference.runtime import InferenceRuntime

    runtime = InferenceRuntime(
        cache_dir=args.cache_dir, device="cpu", num_threads=args.threads, max_batch_size=max(32, args.requests)
    )
    ref = ModelRef(args.model)
    started = time.perf_counter()
    runtime.load(ref)
    print(
        f"model {args.model}: resident in {time.perf_counter() - started:.1f}s, torch threads {torch.get_num_threads()}"
    )
    all_messages = prompts(args.requests)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0)
    timed_stream(runtime, ref, all_messages[0], SamplingParams(max_tokens=4, temperature=0))  # warm-up

    load = os.getloadavg()[0]
    wall_c, cpu_c, concurrent = run_concurrent(runtime, ref, all_messages, params)
    sizes = runtime.stats().batch_sizes
    wall_s, cpu_s, sequential = run_sequential(runtime, ref, all_messages, params)
    print(
        f"{args.requests} chat completions, greedy, max_tokens {args.max_tokens}, CPU "
        f"(load average {load:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} cores)"
    )
    ours = report("concurrent", wall_c, cpu_c, concurrent)
    base = report("one by one", wall_s, cpu_s, sequential)
    print(
        f"throughput  {ours['tok_s'] / base['tok_s']:.2f}x one-at-a-time by wall time (goal >= 4x), "
        f"{ours['tok_cpu_s'] / base['tok_cpu_s']:.2f}x by CPU time (other processes' load does not count); "
        f"largest batch {max(sizes)}"
    )
    same = sum(a["text"] == b["text"] for a, b in zip(concurrent, sequential, strict=True))
    print(f"identical answers concurrent vs one by one: {same}/{len(sequential)}")
    if args.reference:
        wall_r, tokens_r = transformers_reference(runtime, ref, all_messages[: args.reference], args.max_tokens)
        print(
            f"reference   transformers generate one at a time: {tokens_r / wall_r:7.1f} tok/s "
            f"({args.reference} requests, {tokens_r} tokens)"
        )
    runtime.close()


if __name__ == "__main__":
    main()
