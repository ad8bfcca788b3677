"""Duplicate detection: DuplicateFinder against per-example MinHash (the datasketch method), in the same run.

    .venv/bin/python -m bench.dedupe                         # 1,000,000 examples, baseline on 20,000
    .venv/bin/python -m bench.dedupe --examples 100000 --budget-mb 16

The examples are generated, deterministic for a seed: chat-like canonical texts ("user: ...\\nassistant: ..."),
90% short (30 words), 10% long (120 words), drawn from a 20,000-word vocabulary. Planted: 2% exact copies of an
earlier example, 1% case/punctuation variants (Jaccard 1 after case-folding) and 1% one-word edits of a long
example (Jaccard ~0.95). Recall is measured on the planted near pairs.

The baseline does what datasketch's ``MinHash`` + ``MinHashLSH`` do: per example, SHA-1 of every shingle, the
permutations applied with numpy on that example alone, and an in-memory dict per LSH band. It uses datasketch
itself when it is installed, and otherwise an equivalent re-implementation. It runs on a prefix of the same
examples (``--baseline-examples``); its time per example is extrapolated. Each side runs in its own subprocess,
whose peak RSS (VmHWM) is reported.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import random
import struct
import time
from collections.abc import Iterator
from typing import Any

VOCABULARY_SIZE = 20_000


def examples(n: int, seed: int) -> Iterator[tuple[int, str, str | None]]:
    """(line, text, kind of planted duplicate or None), deterministic for ``seed``."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(VOCABULARY_SIZE)]
    recent: list[str] = []
    recent_long: list[str] = []
    for line in range(1, n + 1):
        draw = rng.random()
        if recent and draw < 0.02:
            yield line, rng.choice(recent), "exact"
            continue
        if recent and draw < 0.03:
            source = rng.choice(recent)
            yield line, source.upper() + "!", "case"
            continue
        if recent_long and draw < 0.04:
            tokens = rng.choice(recent_long).split(" ")
            tokens[len(tokens) // 2] = "edited"
            yield line, " ".join(tokens), "edit"
            continue
        words = 120 if draw > 0.9 else 30
        user = " ".join(rng.choices(vocabulary, k=words // 2))
        assistant = " ".join(rng.choices(vocabulary, k=words // 2))
        text = f"user: {user}\nassistant: {assistant}"
        recent.append(text)
        if words == 120:
            recent_long.append(text)
        if len(recent) > 1000:
            recent.pop(0)
        if len(recent_long) > 1000:
            recent_long.pop(0)
        yield line, text, None


def _hwm_mb() -> float:
    with open("/proc/self/status") as fh:
        for row in fh:
            if row.startswith("VmHWM"):
                return int(row.split()[1]) / 1024
    return float("nan")


def run_finder(n: int, seed: int, budget_mb: int, queue: Any) -> None:
    from service.datasets.dedupe import DuplicateFinder

    planted = 0
    base_mb = _hwm_mb()
    start = time.perf_counter()
    generation = 0.0
    with DuplicateFinder(memory_budget=budget_mb * 1024 * 1024) as finder:
        stream = examples(n, seed)
        while True:
            t0 = time.perf_counter()
            item = next(stream, None)
            generation += time.perf_counter() - t0
            if item is None:
                break
            line, text, kind = item
            planted += kind in ("case", "edit")
            finder.add(line, text)
        added = time.perf_counter()
        result = finder.finish()
        done = time.perf_counter()
    queue.put(
        {
            "add_s": added - start - generation,
            "finish_s": done - added,
            "peak_mb": _hwm_mb(),
            "base_mb": base_mb,
            "result": result.model_dump(exclude={"exact", "near", "exact_sizes"}),
            "planted_near_lines": planted,
        }
    )


def _sha1_32(data: bytes) -> int:
    return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]


def run_baseline(n: int, seed: int, queue: Any) -> None:
    import numpy as np

    try:
        from datasketch import MinHash, MinHashLSH

        implementation = "datasketch"
    except ImportError:
        MinHash = MinHashLSH = None
        implementation = "re-implementation of datasketch's method"
    num_perm, bands, rows = 128, 11, 11
    base_mb = _hwm_mb()
    start = time.perf_counter()
    generation = 0.0
    if MinHash is not None:
        template = MinHash(num_perm=num_perm, seed=1)
        lsh = MinHashLSH(num_perm=num_perm, params=(bands, rows))
    else:
        generator = np.random.RandomState(1)
        prime = np.uint64((1 << 61) - 1)
        a = generator.randint(1, int(prime), num_perm, dtype=np.uint64)
        b = generator.randint(0, int(prime), num_perm, dtype=np.uint64)
        tables: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    stream = examples(n, seed)
    while True:
        t0 = time.perf_counter()
        item = next(stream, None)
        generation += time.perf_counter() - t0
        if item is None:
            break
        line, text, _ = item
        tokens = text.casefold().split()
        shingles = [" ".join(tokens[i : i + 3]).encode() for i in range(max(1, len(tokens) - 2))]
        if MinHash is not None:
            sketch = MinHash(num_perm=num_perm, permutations=template.permutations, scheme=template.scheme)
            sketch.update_batch(shingles)
            lsh.insert(line, sketch)
        else:
            hashes = np.array([_sha1_32(s) for s in shingles], dtype=np.uint64)
            signature = ((np.outer(hashes, a) + b) % prime).min(axis=0)
            for band in range(bands):
                key = signature[band * rows : (band + 1) * rows].tobytes()
                tables[band].setdefault(key, []).append(line)
    elapsed = time.perf_counter() - start - generation
    queue.put({"implementation": implementation, "add_s": elapsed, "peak_mb": _hwm_mb(), "base_mb": base_mb})


def _in_subprocess(target: Any, *args: Any) -> dict[str, Any]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--baseline-examples", type=int, default=20_000)
    parser.add_argument("--budget-mb", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    ours = _in_subprocess(run_finder, args.examples, args.seed, args.budget_mb)
    baseline = _in_subprocess(run_baseline, min(args.baseline_examples, args.examples), args.seed)
    result = ours["result"]
    total = ours["add_s"] + ours["finish_s"]
    ours_us = total / args.examples * 1e6
    base_us = baseline["add_s"] / min(args.baseline_examples, args.examples) * 1e6
    print(f"examples: {args.examples:,}  memory budget: {args.budget_mb} MiB  (generation time excluded)")
    print(
        f"DuplicateFinder: {total:.1f} s ({ours['add_s']:.1f} add + {ours['finish_s']:.1f} finish), "
        f"{ours_us:.1f} us/example, peak RSS {ours['peak_mb']:.0f} MB (interpreter + imports {ours['base_mb']:.0f} MB), "
        f"spilled to disk: {result['spilled_to_disk']}"
    )
    print(
        f"  exact groups {result['exact_groups_total']:,}, duplicate lines {result['exact_duplicate_lines']:,}; "
        f"near pairs {result['near_pairs_total']:,}, lines with an earlier near duplicate "
        f"{result['near_duplicate_lines']:,} (planted case variants + edits: {ours['planted_near_lines']:,}, an upper "
        "bound: a variant drawn twice is an exact copy the second time)"
    )
    print(
        f"baseline ({baseline['implementation']}, LSH insert only, no verification, "
        f"{min(args.baseline_examples, args.examples):,} examples): {base_us:.1f} us/example, "
        f"peak RSS {baseline['peak_mb']:.0f} MB -> {base_us * args.examples / 1e6:.0f} s extrapolated"
    )
    print(f"speed-up: {base_us / ours_us:.1f}x")


if __name__ == "__main__":
    main()
