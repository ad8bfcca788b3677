"""``DuplicateFinder``: exact and near-duplicate examples inside one dataset, in bounded memory.

Exact duplicates are examples whose canonical text (see ``canonical.py``) has the same 128-bit BLAKE2b digest.
Near duplicates are pairs whose case-folded word-shingle sets have an estimated Jaccard similarity of at least the
threshold, found with MinHash + LSH banding and then verified on the signatures (see ``minhash.py``).

Memory stays bounded whatever the number of examples: per example we keep a 1-byte-per-bin "b-bit" signature
(Li & König, 2010), its line number, its exact digest and its band keys, each in a store that holds rows in memory up
to its share of ``memory_budget`` and then spills to files in a private temporary folder. Band keys and digests
spill into hash partitions so that ``finish`` can group them one partition at a time; LSH buckets are found by
sorting band keys rather than in a dict, so grouping works partition by partition from disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
from pydantic import BaseModel, ConfigDict

from service.datasets.dedupe.minhash import VERIFY_BATCH_PAIRS, Sketcher, Sketches, signature_width, verify
from service.datasets.dedupe.params import DEFAULT_MEMORY_BUDGET, DEFAULT_NUM_PERM, DEFAULT_SHINGLE_SIZE, MinHashParams
from service.datasets.dedupe.storage import PartitionStore, RowStore, SpillDir

_RESOLVE_BATCH = 4096
_BUCKET_WINDOW = 32

_EXACT_DTYPE = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("idx", "<u4")])
_BAND_DTYPE = np.dtype([("key", "<u8"), ("idx", "<u4"), ("band", "u1")])


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start positions and lengths of the runs of equal values in a sorted array."""
    if not len(sorted_keys):
        return np.empty(0, np.intp), np.empty(0, np.intp)
    starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
    lengths = np.diff(np.append(starts, len(sorted_keys)))
    return starts, lengths


def _bucket_pairs(starts: np.ndarray, lengths: np.ndarray, max_bucket: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Position pairs (i < j) inside each run of length >= 2.

    Runs up to ``max_bucket`` give all their pairs. Longer runs (thousands of near-identical templated examples)
    would be quadratic, so each member is paired only with the next ``_BUCKET_WINDOW`` members; the caller reports
    the count as incomplete.
    """
    small = (lengths >= 2) & (lengths <= max_bucket)
    for size in np.unique(lengths[small]):
        run_starts = starts[small & (lengths == size)]
        first, second = np.triu_indices(int(size), 1)
        per_run = len(first)
        step = max(1, VERIFY_BATCH_PAIRS // per_run)
        for i in range(0, len(run_starts), step):
            block = run_starts[i : i + step, None]
            yield (block + first).ravel(), (block + second).ravel()
    for start, length in zip(starts[lengths > max_bucket], lengths[lengths > max_bucket], strict=True):
        members = np.arange(start, start + length)
        for distance in range(1, min(_BUCKET_WINDOW, length - 1) + 1):
            yield members[:-distance], members[distance:]


class DuplicateResult(BaseModel):
    """Duplicates within one dataset. Line numbers are the ones given to ``DuplicateFinder.add``."""

    model_config = ConfigDict(frozen=True)

    examples: int
    near_threshold: float
    exact: list[list[int]]
    """Groups of lines with identical canonical text, ordered by first line; at most ``max_exact_groups`` groups of
    at most ``max_group_lines`` lines each."""
    exact_sizes: list[int]
    """The full size of each listed group (parallel to ``exact``)."""
    exact_groups_total: int
    exact_duplicate_lines: int
    """Lines that repeat an earlier line exactly (group sizes minus one, summed over all groups)."""
    near: list[tuple[int, int, float]]
    """(line_a, line_b, estimated Jaccard), line_a < line_b, the first ``max_near_pairs`` in line order. Pairs are
    between the first lines of exact groups (and unique lines): copies of a line are reported in ``exact`` only."""
    near_pairs_total: int
    near_duplicate_lines: int
    """Lines that have a near duplicate on an earlier line."""
    near_complete: bool
    """False when a huge LSH bucket was only scanned with a sliding window: the near counts are then lower bounds."""
    spilled_to_disk: bool


class DuplicateFinder:
    """Streaming duplicate detector: ``add`` each example's canonical text in line order, then ``finish`` once.

    >>> with DuplicateFinder() as finder:
    ...     for line, text in examples:
    ...         finder.add(line, text)
    ...     result = finder.finish()
    """

    def __init__(
        self,
        *,
        near_threshold: float = 0.85,
        workdir: Path | None = None,
        num_perm: int = DEFAULT_NUM_PERM,
        shingle_size: int = DEFAULT_SHINGLE_SIZE,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        max_near_pairs: int = 10_000,
        max_exact_groups: int = 10_000,
        max_group_lines: int = 1_000,
        max_bucket: int = 200,
        resolve: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """``resolve`` maps refs (int64, see ``Sketches``) to the exact digests of those examples' canonical texts
        (uint64 (n, 2), as ``minhash.exact_digest``); it is required to ``add_sketches`` that carry refs."""
        if memory_budget < 1024:
            raise ValueError(f"memory_budget must be at least 1024 bytes, got {memory_budget}")
        for name, value in (
            ("max_near_pairs", max_near_pairs),
            ("max_exact_groups", max_exact_groups),
            ("max_group_lines", max_group_lines),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if max_bucket < 2:
            raise ValueError(f"max_bucket must be >= 2, got {max_bucket}")
        self.params = MinHashParams.for_threshold(near_threshold, num_perm=num_perm, shingle_size=shingle_size)
        self.near_threshold = near_threshold
        self._max_near_pairs = max_near_pairs
        self._max_exact_groups = max_exact_groups
        self._max_group_lines = max_group_lines
        self._max_bucket = max_bucket
        self._budget = memory_budget
        self._spill = SpillDir(Path(workdir) if workdir is not None else None)
        # Stored rows take at most 11/16 of the budget (with refs); grouping works on slices of 1/16, whose sorting
        # temporaries stay within the rest.
        share = memory_budget // 16
        self._sigs = RowStore(np.dtype(np.uint8), signature_width(self.params), 4 * share, self._spill, "signatures")
        self._lines = RowStore(np.dtype(np.int64), None, share, self._spill, "lines")
        self._exact = PartitionStore(_EXACT_DTYPE, "hi", share, share, self._spill, "exact")
        self._bands = PartitionStore(_BAND_DTYPE, "key", 4 * share, share, self._spill, "bands")
        self._resolve = resolve
        self._refs: RowStore | None = None  # set when sketches carry refs: hi/lo are then candidate keys
        self._sketcher = Sketcher(self.params)
        self._count = 0
        self._last_line = 0
        self._result: DuplicateResult | None = None
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spill files. Safe to call more than once."""
        self._closed = True
        self._spill.remove()

    def add(self, line: int, text: str) -> None:
        """Add the canonical text of the example on ``line`` (1-based; strictly increasing across calls)."""
        if self._closed or self._result is not None:
            raise RuntimeError("DuplicateFinder.add() after finish() or close()")
        if not isinstance(line, int) or isinstance(line, bool) or line < 1:
            raise ValueError(f"line must be a positive integer, got {line!r}")
        if line <= self._last_line:
            raise ValueError(f"lines must be added in increasing order: {line} after {self._last_line}")
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if self._count >= 0xFFFFFFFF:
            raise ValueError("more than 4,294,967,295 examples")
        if self._refs is not None:
            raise ValueError("canonical texts cannot follow sketches with refs")
        self._last_line = line
        self._count += 1
        if self._sketcher.add(line, text):
            self._store(self._sketcher.take())

    def add_sketches(self, batch: Sketches) -> None:
        """Add examples sketched elsewhere (e.g. in validation workers) with a ``Sketcher`` of ``self.params``.

        The same as ``add`` of each (line, text) that produced them: sketches do not depend on batching. Sketches
        with refs (candidate keys, see ``Sketches``) give the same result once ``finish`` has confirmed their
        candidate groups through ``resolve``; they cannot be mixed with texts or digests in one finder.
        """
        if self._closed or self._result is not None:
            raise RuntimeError("DuplicateFinder.add_sketches() after finish() or close()")
        n = len(batch)
        if not n:
            return
        if batch.sig.shape[1:] != (signature_width(self.params),) or batch.keys.shape[1:] != (self.params.bands,):
            raise ValueError("sketches were made with other MinHash parameters")
        lines = batch.lines
        if int(lines[0]) <= self._last_line or (n > 1 and not bool(np.all(lines[1:] > lines[:-1]))):
            raise ValueError(f"lines must be added in increasing order: {int(lines[0])} after {self._last_line}")
        if self._count + n > 0xFFFFFFFF:
            raise ValueError("more than 4,294,967,295 examples")
        if batch.refs is not None:
            if self._resolve is None:
                raise ValueError("sketches with refs need a DuplicateFinder made with resolve=")
            if self._count and self._refs is None:
                raise ValueError("sketches with refs cannot follow examples with exact digests")
            if self._refs is None:
                self._refs = RowStore(np.dtype(np.int64), None, self._budget // 16, self._spill, "refs")
            self._refs.append(batch.refs)
        elif self._refs is not None:
            raise ValueError("sketches without refs cannot follow sketches with refs")
        if len(self._sketcher):
            self._store(self._sketcher.take())
        self._last_line = int(lines[-1])
        self._count += n
        self._store(batch)

    def _store(self, batch: Sketches) -> None:
        n = len(batch.lines)
        base = self._count - n
        idx = np.arange(base, base + n, dtype=np.uint32)
        exact = np.empty(n, _EXACT_DTYPE)
        exact["hi"], exact["lo"], exact["idx"] = batch.hi, batch.lo, idx
        self._exact.append(exact)
        self._sigs.append(batch.sig)
        self._lines.append(batch.lines)
        with_words = np.flatnonzero(batch.has_words)
        bands = self.params.bands
        records = np.empty(len(with_words) * bands, _BAND_DTYPE)
        records["key"] = batch.keys[with_words].ravel()
        records["idx"] = np.repeat(idx[with_words], bands)
        records["band"] = np.tile(np.arange(bands, dtype=np.uint8), len(with_words))
        self._bands.append(records)

    def finish(self) -> DuplicateResult:
        """Group exact duplicates, find near-duplicate pairs, and return the result (cached on repeated calls)."""
        if self._result is not None:
            return self._result
        if self._closed:
            raise RuntimeError("DuplicateFinder.finish() after close()")
        if len(self._sketcher):
            self._store(self._sketcher.take())
        self._sigs.seal()
        self._lines.seal()
        if self._refs is not None:
            self._refs.seal()
        n = self._count
        is_first = np.ones(n, dtype=bool)
        groups, sizes, groups_total, duplicate_lines = self._exact_groups(is_first)
        near, near_total, near_lines, complete = self._near_pairs(is_first)
        self._result = DuplicateResult(
            examples=n,
            near_threshold=self.near_threshold,
            exact=groups,
            exact_sizes=sizes,
            exact_groups_total=groups_total,
            exact_duplicate_lines=duplicate_lines,
            near=near,
            near_pairs_total=near_total,
            near_duplicate_lines=near_lines,
            near_complete=complete,
            spilled_to_disk=self._spill.used,
        )
        return self._result

    def _exact_groups(self, is_first: np.ndarray) -> tuple[list[list[int]], list[int], int, int]:
        kept: list[tuple[int, np.ndarray, int]] = []
        groups_total = 0
        duplicate_lines = 0
        for part in self._exact.partitions():
            order = np.lexsort((part["idx"], part["lo"], part["hi"]))
            hi, lo, idx = part["hi"][order], part["lo"][order], part["idx"][order]
            same = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
            if self._refs is not None:
                hi, lo, idx, same = self._confirm(hi, lo, idx, same)
            is_first[idx[np.flatnonzero(same) + 1]] = False
            starts = np.flatnonzero(np.concatenate(([True], ~same)))
            lengths = np.diff(np.append(starts, len(idx)))
            multi = lengths >= 2
            starts, lengths = starts[multi], lengths[multi]
            groups_total += len(starts)
            duplicate_lines += int((lengths - 1).sum())
            if self._max_exact_groups == 0 or not len(starts):
                continue
            firsts = idx[starts]
            if len(starts) > self._max_exact_groups:
                chosen = np.argpartition(firsts, self._max_exact_groups - 1)[: self._max_exact_groups]
                starts, lengths, firsts = starts[chosen], lengths[chosen], firsts[chosen]
            for start, length, first in zip(starts, lengths, firsts, strict=True):
                members = idx[start : start + min(int(length), self._max_group_lines)]
                kept.append((int(first), members, int(length)))
            kept.sort(key=lambda group: group[0])
            del kept[self._max_exact_groups :]
        groups = [self._lines.take(members.astype(np.intp)).tolist() for _, members, _ in kept]
        return groups, [size for _, _, size in kept], groups_total, duplicate_lines

    def _confirm(
        self, hi: np.ndarray, lo: np.ndarray, idx: np.ndarray, same: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Candidate-key groups (sorted keys, ``same`` marking equal neighbours) regrouped by the exact digests of
        their members' canonical texts: returns the members only, sorted by (candidate, digest, idx)."""
        in_group = np.zeros(len(idx), dtype=bool)
        in_group[:-1] |= same
        in_group[1:] |= same
        members = np.flatnonzero(in_group)
        if not len(members):
            empty = np.empty(0, np.uint64)
            return empty, empty, np.empty(0, idx.dtype), np.empty(0, dtype=bool)
        # A new candidate group starts wherever a member does not continue the one before it.
        starts_group = np.ones(len(members), dtype=bool)
        starts_group[1:] = ~same[members[1:] - 1]
        group = np.cumsum(starts_group)
        idx = idx[members]
        digests = np.empty((len(members), 2), dtype=np.uint64)
        # Resolve in line order (reads go forward through the file), a bounded number at a time.
        by_idx = np.argsort(idx, kind="stable")
        for start in range(0, len(by_idx), _RESOLVE_BATCH):
            chosen = by_idx[start : start + _RESOLVE_BATCH]
            refs = self._refs.take(idx[chosen].astype(np.intp))  # type: ignore[union-attr]
            digests[chosen] = self._resolve(refs)  # type: ignore[misc]
        order = np.lexsort((idx, digests[:, 1], digests[:, 0], group))
        group, hi, lo, idx = group[order], digests[order, 0], digests[order, 1], idx[order]
        same = (group[1:] == group[:-1]) & (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
        return hi, lo, idx, same

    def _near_pairs(self, is_first: np.ndarray) -> tuple[list[tuple[int, int, float]], int, int, bool]:
        params = self.params
        has_earlier = np.zeros(self._count, dtype=bool)
        kept_a = np.empty(0, np.intp)
        kept_b = np.empty(0, np.intp)
        kept_j = np.empty(0, np.float64)
        total = 0
        complete = True
        for part in self._bands.partitions():
            part = part[is_first[part["idx"]]]
            order = np.argsort(part["key"], kind="stable")  # stable: members stay in line order
            keys, idx, band = part["key"][order], part["idx"][order].astype(np.intp), part["band"][order]
            starts, lengths = _runs(keys)
            if np.any(lengths > self._max_bucket):
                complete = False
            for pos_a, pos_b in _bucket_pairs(starts, lengths, self._max_bucket):
                for lo in range(0, len(pos_a), VERIFY_BATCH_PAIRS):
                    a = idx[pos_a[lo : lo + VERIFY_BATCH_PAIRS]]
                    b = idx[pos_b[lo : lo + VERIFY_BATCH_PAIRS]]
                    pair_band = band[pos_a[lo : lo + VERIFY_BATCH_PAIRS]]
                    # One read for both sides: the members of a bucket appear on both, and each row is read once.
                    sigs = self._sigs.take(np.concatenate((a, b)))
                    jaccard, _, first = verify(sigs[: len(a)], sigs[len(a) :], pair_band, params)
                    ok = first & (jaccard >= self.near_threshold) & (a != b)
                    if not ok.any():
                        continue
                    a, b, jaccard = a[ok], b[ok], jaccard[ok]
                    total += len(a)
                    has_earlier[b] = True
                    if self._max_near_pairs:
                        kept_a = np.concatenate([kept_a, a])
                        kept_b = np.concatenate([kept_b, b])
                        kept_j = np.concatenate([kept_j, jaccard])
                        if len(kept_a) > 4 * self._max_near_pairs:
                            kept_a, kept_b, kept_j = _smallest_pairs(kept_a, kept_b, kept_j, self._max_near_pairs)
        kept_a, kept_b, kept_j = _smallest_pairs(kept_a, kept_b, kept_j, self._max_near_pairs)
        lines_a = self._lines.take(kept_a).tolist()
        lines_b = self._lines.take(kept_b).tolist()
        near = [(la, lb, round(float(j), 4)) for la, lb, j in zip(lines_a, lines_b, kept_j, strict=True)]
        return near, total, int(has_earlier.sum()), complete


def _smallest_pairs(
    a: np.ndarray, b: np.ndarray, j: np.ndarray, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((b, a))[:limit]
    return a[order], b[order], j[order]
