"""Run the range scans of a file on a process pool, yielding results in file order with bounded memory.

Tokenizing is CPU-bound and the tokenizers hold the GIL, so throughput scales with processes, not threads. Only a few
ranges are in flight at a time (twice the workers), so results never pile up when the consumer (duplicate
detection) is slower than the scans. Workers are forked when that is safe (a single-threaded parent), so they share
the tokenizer vocabularies the parent loaded; otherwise they are spawned and load their own.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from service.datasets.validation.scan import ScanContext, prepare_counts, scan_range
from service.datasets.validation.state import RangeResult

log = logging.getLogger(__name__)


def plan_ranges(size: int, chunk_bytes: int, start: int = 0) -> list[tuple[int, int | None]]:
    """Byte ranges covering ``[start, size)``; the last one is open-ended (reads to EOF)."""
    bounds = list(range(start, size, chunk_bytes)) or [start]
    return [(lo, bounds[i + 1] if i + 1 < len(bounds) else None) for i, lo in enumerate(bounds)]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _can_use_processes() -> bool:
    # Daemonic processes (e.g. some task-queue pool children) may not start children.
    return not multiprocessing.current_process().daemon


def _init_worker(primary: str, other: str | None, duplicates: bool) -> None:
    prepare_counts(primary, other, duplicates)  # type: ignore[arg-type]


def iter_results(ctx: ScanContext, size: int, workers: int, chunk_bytes: int) -> Iterator[RangeResult]:
    """Scan results of consecutive byte ranges, in file order.

    When worker processes cannot be started or die (a sandbox without fork, a daemonic parent, a worker killed for
    memory), the ranges not yet done are scanned in this process: ranges are independent, so the result is the same.
    """
    ranges = plan_ranges(size, chunk_bytes)
    if workers <= 1 or len(ranges) <= 1 or not _can_use_processes():
        yield scan_range(ctx, 0, None)
        return
    fork_safe = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    if fork_safe:
        prepare_counts(ctx.primary, ctx.other, ctx.duplicates)
    mp_context = multiprocessing.get_context("fork" if fork_safe else "spawn")
    todo = deque(ranges)
    with ProcessPoolExecutor(
        max_workers=min(workers, len(ranges)),
        mp_context=mp_context,
        initializer=_init_worker,
        initargs=(ctx.primary, ctx.other, ctx.duplicates),
    ) as pool:
        pending: deque[tuple[tuple[int, int | None], Future[RangeResult]]] = deque()
        try:
            while todo or pending:
                while todo and len(pending) < 2 * workers:
                    bounds = todo.popleft()
                    pending.append((bounds, pool.submit(scan_range, ctx, *bounds)))
                bounds, future = pending[0]
                result = future.result()
                pending.popleft()
                yield result
        except (OSError, RuntimeError, AssertionError) as exc:  # BrokenProcessPool is a RuntimeError
            log.warning("validation workers failed (%s); scanning the remaining ranges in-process", exc)
            todo.extendleft(reversed([bounds for bounds, _ in pending]))
        finally:
            for _, future in pending:
                future.cancel()
    for bounds in todo:
        yield scan_range(ctx, *bounds)
