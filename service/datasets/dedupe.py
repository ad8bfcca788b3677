"""Exact and near-duplicate detection inside one dataset, and leakage between two datasets, in bounded memory.

Exact duplicates are examples whose canonical text (see ``canonical.py``) has the same 128-bit BLAKE2b digest.
Near duplicates are pairs whose case-folded word-shingle sets have an estimated Jaccard similarity of at least the
threshold, found with MinHash + LSH banding and then verified on the signatures.

Why our own numpy MinHash rather than ``datasketch``: datasketch hashes every shingle with SHA-1 in Python and builds
one ``MinHash`` object per example (about 210 µs per 20-word example here, so about 3.5 minutes per million), and its
LSH index is a dict in memory (or Redis/Cassandra), which breaks the memory bound. Here the shingle hashes of a
batch of examples form one matrix, every permutation is applied at once and the per-example minimum is one
``np.minimum.reduceat``; the LSH buckets are found by sorting band keys, which can be done partition by partition
from disk. Everything derives from fixed BLAKE2b-seeded constants, so results are identical on every machine.

Memory stays bounded whatever the number of examples: per example we keep a 1-byte-per-permutation "b-bit" signature
(Li & König, 2010), its line number, its exact digest and its band keys, each in a store that holds rows in memory up
to its share of ``memory_budget`` and then spills to files in a private temporary folder. Band keys and digests
spill into 64 hash partitions so that ``finish`` can group them one partition at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import weakref
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict

from service.datasets.canonical import canonical_example_text

__all__ = [
    "DuplicateFinder",
    "DuplicateResult",
    "LeakageResult",
    "MinHashParams",
    "build_signature_index",
    "find_leakage",
    "lsh_bands",
]

MiB = 1024 * 1024
DEFAULT_SEED = 20240917
DEFAULT_NUM_PERM = 128
DEFAULT_SHINGLE_SIZE = 3
DEFAULT_MEMORY_BUDGET = 64 * MiB

# Candidates are verified on the signatures, so a false positive costs a comparison while a false negative is a
# missed duplicate: the band layout is chosen to favour recall (datasketch's default weighs both equally, which
# finds only about half of the pairs sitting right at the threshold).
_FALSE_POSITIVE_WEIGHT = 0.1
_FALSE_NEGATIVE_WEIGHT = 0.9

# Words are runs of word characters, except that CJK ideographs and kana count one per character: those scripts
# do not separate words with spaces and would otherwise turn a whole sentence into one token.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_ASCII_WORDS = bytes(c if chr(c).isalnum() or c == ord("_") else ord(" ") for c in range(128)) + bytes(range(128, 256))

_U32_MAX = np.uint32(0xFFFFFFFF)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_COMBINE = np.uint64(0x9E3779B97F4A7C15)

# Shingles hashed at once: the permutation matrix is num_perm times this many 4-byte values (4 MiB by default).
_SHINGLE_COLUMNS = 8192
_BATCH_EXAMPLES = 4096
_BATCH_WORDS = 1 << 18
_VERIFY_PAIRS = 8192
_PARTITION_BITS = 6
_BUCKET_WINDOW = 32

_EXACT_DTYPE = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("idx", "<u4")])
_BAND_DTYPE = np.dtype([("key", "<u8"), ("idx", "<u4"), ("band", "u1")])


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (returns a new array): a cheap, well-mixing bijection."""
    x = x ^ (x >> np.uint64(30))
    x *= _MIX_1
    x ^= x >> np.uint64(27)
    x *= _MIX_2
    x ^= x >> np.uint64(31)
    return x


def _stable_u64(label: str, count: int, seed: int) -> np.ndarray:
    """``count`` 64-bit constants derived from BLAKE2b: stable across platforms and numpy versions, unlike RNGs."""
    values = [
        int.from_bytes(hashlib.blake2b(f"{label}:{seed}:{i}".encode(), digest_size=8).digest(), "little")
        for i in range(count)
    ]
    return np.array(values, dtype=np.uint64)


@lru_cache(maxsize=64)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising the recall-weighted error of the LSH S-curve around ``threshold``.

    Plain Python floats and a fixed midpoint rule keep the choice identical on every machine.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    steps = 100

    def integral(lo: float, hi: float, fn: Callable[[float], float]) -> float:
        width = (hi - lo) / steps
        return sum(fn(lo + (i + 0.5) * width) for i in range(steps)) * width

    best: tuple[float, int, int] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = integral(0.0, threshold, lambda s, b=bands, r=rows: 1.0 - (1.0 - s**r) ** b)
            fn = integral(threshold, 1.0, lambda s, b=bands, r=rows: (1.0 - s**r) ** b)
            error = _FALSE_POSITIVE_WEIGHT * fp + _FALSE_NEGATIVE_WEIGHT * fn
            if best is None or error < best[0]:
                best = (error, bands, rows)
    assert best is not None
    return best[1], best[2]


class MinHashParams(BaseModel):
    """Everything that must agree for two signatures to be comparable."""

    model_config = ConfigDict(frozen=True)

    num_perm: int = DEFAULT_NUM_PERM
    shingle_size: int = DEFAULT_SHINGLE_SIZE
    seed: int = DEFAULT_SEED
    bands: int
    rows: int

    @classmethod
    def for_threshold(
        cls, threshold: float, *, num_perm: int = DEFAULT_NUM_PERM, shingle_size: int = DEFAULT_SHINGLE_SIZE
    ) -> MinHashParams:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near_threshold must be in (0, 1], got {threshold}")
        if not 16 <= num_perm <= 1024:
            raise ValueError(f"num_perm must be between 16 and 1024, got {num_perm}")
        if not 1 <= shingle_size <= 16:
            raise ValueError(f"shingle_size must be between 1 and 16, got {shingle_size}")
        bands, rows = lsh_bands(threshold, num_perm)
        if bands > 255:
            raise ValueError(f"threshold {threshold} needs {bands} LSH bands; at most 255 are supported")
        return cls(num_perm=num_perm, shingle_size=shingle_size, bands=bands, rows=rows)


def _word_hashes(text: str) -> array:
    folded = text.casefold()
    if folded.isascii():
        # Same tokens as the regular expression below (runs of [a-z0-9_]), about three times faster.
        return array("I", map(zlib.crc32, folded.encode().translate(_ASCII_WORDS).split()))
    words = _WORD_RE.findall(folded)
    try:
        return array("I", map(zlib.crc32, map(str.encode, words)))
    except UnicodeEncodeError:
        # Lone surrogates survive JSON parsing; hash their code units rather than fail on them.
        return array("I", (zlib.crc32(word.encode("utf-8", "surrogatepass")) for word in words))


@dataclass
class _Sketches:
    lines: np.ndarray  # int64 (n,)
    hi: np.ndarray  # uint64 (n,) first half of the exact digest
    lo: np.ndarray  # uint64 (n,)
    sig: np.ndarray  # uint8 (n, num_perm) b-bit signature
    keys: np.ndarray  # uint64 (n, bands) LSH band keys
    has_words: np.ndarray  # bool (n,) examples without any word take no part in near-duplicate search


class _Sketcher:
    """Collects (line, text) pairs and turns each batch into digests, b-bit signatures and band keys at once."""

    def __init__(self, params: MinHashParams) -> None:
        self.params = params
        seed = params.seed
        self._perm_a = (_stable_u64("perm-a", params.num_perm, seed) >> np.uint64(32)).astype(np.uint32) | np.uint32(1)
        self._perm_b = (_stable_u64("perm-b", params.num_perm, seed) >> np.uint64(32)).astype(np.uint32)
        self._word_salt = _stable_u64("word", 1, seed)[0]
        self._byte_salt = _stable_u64("byte", 1, seed)[0]
        self._band_salt = _stable_u64("band", params.bands, seed)
        self._reset()

    def _reset(self) -> None:
        self._words = array("I")
        self._counts = array("q")
        self._lines = array("q")
        self._digests = bytearray()

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, line: int, text: str) -> bool:
        """Queue one example; True when the batch is full and ``take`` should be called."""
        self._digests += hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        words = _word_hashes(text)
        self._words.extend(words)
        self._counts.append(len(words))
        self._lines.append(line)
        return len(self._lines) >= _BATCH_EXAMPLES or len(self._words) >= _BATCH_WORDS

    def take(self) -> _Sketches:
        n = len(self._lines)
        digests = np.frombuffer(bytes(self._digests), dtype="<u8").reshape(n, 2)
        counts = np.frombuffer(self._counts, dtype=np.int64).copy()
        words = np.frombuffer(self._words, dtype=np.uint32).astype(np.uint64)
        lines = np.frombuffer(self._lines, dtype=np.int64).copy()
        self._reset()
        mins = self._minhash(words, counts)
        sig = (_mix64(mins.astype(np.uint64) ^ self._byte_salt) >> np.uint64(56)).astype(np.uint8)
        return _Sketches(
            lines=lines,
            hi=digests[:, 0].copy(),
            lo=digests[:, 1].copy(),
            sig=sig,
            keys=self._band_keys(mins),
            has_words=counts > 0,
        )

    def _minhash(self, words: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Per example, the minimum of each permutation over its word k-shingles (uint32, shape (n, num_perm)).

        Shingles are produced and hashed ``_SHINGLE_COLUMNS`` at a time, so temporaries stay a few MiB even when
        one example has millions of words.
        """
        n = len(counts)
        k = self.params.shingle_size
        mins = np.full((n, self.params.num_perm), _U32_MAX, dtype=np.uint32)
        if not len(words):
            return mins
        words = _mix64(words ^ self._word_salt)
        last_word = len(words) - 1
        offsets = np.zeros(n, dtype=np.int64)
        np.cumsum(counts[:-1], out=offsets[1:])
        ends = offsets + counts
        # An example with fewer than k words still gets one shingle made of all its words.
        n_shingles = np.where(counts >= k, counts - k + 1, np.minimum(counts, 1))
        shingle_end = np.cumsum(n_shingles)
        shingle_start = shingle_end - n_shingles
        total = int(shingle_end[-1])
        for start in range(0, total, _SHINGLE_COLUMNS):
            index = np.arange(start, min(total, start + _SHINGLE_COLUMNS), dtype=np.int64)
            ids = np.searchsorted(shingle_end, index, side="right")
            pos = offsets[ids] + (index - shingle_start[ids])
            end = ends[ids]
            shingles = words[pos]
            for i in range(1, k):
                combined = _mix64(shingles * _COMBINE + words[np.minimum(pos + i, last_word)])
                shingles = np.where(pos + i < end, combined, shingles)
            hashed32 = (_mix64(shingles) >> np.uint64(32)).astype(np.uint32)
            # Permutations x -> a*x + b mod 2^32 (a odd) applied to well-mixed shingle hashes; unbiased Jaccard
            # estimates in our checks. Permutations on rows, shingles on columns: the per-example minimum then runs
            # over contiguous memory, about 4 times faster than the transposed layout.
            hashed = np.multiply.outer(self._perm_a, hashed32)
            hashed += self._perm_b[:, None]
            starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
            part = np.minimum.reduceat(hashed, starts, axis=1).T
            rows = ids[starts]
            # An example can straddle two slices: merge with what the previous slice found.
            mins[rows] = np.minimum(mins[rows], part)
        return mins

    def _band_keys(self, mins: np.ndarray) -> np.ndarray:
        bands, rows = self.params.bands, self.params.rows
        banded = mins[:, : bands * rows].reshape(len(mins), bands, rows)
        keys = np.broadcast_to(self._band_salt, (len(mins), bands)).copy()
        for r in range(rows):
            keys = _mix64(keys * _COMBINE + banded[:, :, r].astype(np.uint64))
        return keys


def _estimate_jaccard(equal_fraction: np.ndarray) -> np.ndarray:
    """b-bit MinHash estimator: unequal minima still agree on one byte with probability 1/256."""
    return np.clip((equal_fraction - 1 / 256) / (1 - 1 / 256), 0.0, 1.0)


def _verify(
    sig_a: np.ndarray, sig_b: np.ndarray, band: np.ndarray, params: MinHashParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each candidate pair met in bucket ``band``: estimated Jaccard, whether the pair really collides in that
    band (rather than through a 64-bit band-key collision), and whether ``band`` is the first band where it collides.

    A pair sharing several bands is met once per band; counting it only in its first shared band removes the
    repeats without a set of all pairs seen.
    """
    equal = sig_a == sig_b
    jaccard = _estimate_jaccard(equal.sum(axis=1, dtype=np.int64) / params.num_perm)
    band_equal = equal[:, : params.bands * params.rows].reshape(len(equal), params.bands, params.rows).all(axis=2)
    collides = band_equal[np.arange(len(equal)), band.astype(np.intp)]
    first = collides & (band_equal.argmax(axis=1) == band)
    return jaccard, collides, first


class _SpillDir:
    """A private temporary folder created on first use and removed on close (or when garbage-collected)."""

    def __init__(self, parent: Path | None) -> None:
        self._parent = parent
        self._path: Path | None = None
        self._finalizer: weakref.finalize | None = None

    def __call__(self) -> Path:
        if self._path is None:
            if self._parent is not None:
                self._parent.mkdir(parents=True, exist_ok=True)
            self._path = Path(tempfile.mkdtemp(prefix="dedupe-", dir=self._parent))
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._path, True)
        return self._path

    @property
    def used(self) -> bool:
        return self._path is not None

    def remove(self) -> None:
        if self._finalizer is not None:
            self._finalizer()


class _RowStore:
    """Append-only rows, in memory up to a byte budget and in a file after; random access by row number."""

    def __init__(self, dtype: np.dtype, width: int | None, budget: int, spill: _SpillDir, name: str) -> None:
        self._dtype = np.dtype(dtype)
        self._width = width
        self._budget = budget
        self._spill = spill
        self._name = name
        self._chunks: list[np.ndarray] = []
        self._buffered = 0
        self._path: Path | None = None
        self._file_rows = 0
        self._memory: np.ndarray | None = None

    def append(self, rows: np.ndarray) -> None:
        self._chunks.append(np.ascontiguousarray(rows, dtype=self._dtype))
        self._buffered += rows.nbytes
        if self._buffered > self._budget:
            self._flush()

    def _flush(self) -> None:
        if self._path is None:
            self._path = self._spill() / self._name
        with open(self._path, "ab") as fh:
            for chunk in self._chunks:
                chunk.tofile(fh)
                self._file_rows += len(chunk)
        self._chunks.clear()
        self._buffered = 0

    def seal(self) -> None:
        """No more appends: either flush the rest to the file or join the in-memory chunks."""
        if self._path is not None:
            self._flush()
            return
        rows = sum(len(chunk) for chunk in self._chunks)
        self._memory = np.empty((rows,) if self._width is None else (rows, self._width), self._dtype)
        start = 0
        # Copy chunk by chunk, dropping each as it goes, so joining never holds two full copies.
        self._chunks.reverse()
        while self._chunks:
            chunk = self._chunks.pop()
            self._memory[start : start + len(chunk)] = chunk
            start += len(chunk)

    def take(self, rows: np.ndarray) -> np.ndarray:
        if self._memory is not None:
            return self._memory[rows]
        assert self._path is not None, "take() before seal()"
        return _read_rows(self._path, 0, self._dtype, self._width, rows)


def _read_rows(path: Path, offset: int, dtype: np.dtype, width: int | None, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of a file of fixed-size records, read with one ``pread`` per distinct row.

    Not ``np.memmap``: every page a mapping touches counts in our resident set (the kernel maps neighbouring
    pages too), so random access over a large file would grow RSS by the file size. ``pread`` costs about 1 µs
    per row and leaves the pages in the page cache only.
    """
    row_bytes = dtype.itemsize * (width or 1)
    shape = (-1,) if width is None else (-1, width)
    if not len(rows):
        return np.empty((0,) if width is None else (0, width), dtype)
    unique, inverse = np.unique(rows, return_inverse=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        pread = os.pread
        data = b"".join([pread(fd, row_bytes, offset + row * row_bytes) for row in unique.tolist()])
    finally:
        os.close(fd)
    if len(data) != len(unique) * row_bytes:
        raise ValueError(f"{path}: truncated (a row past the end of the file was requested)")
    return np.frombuffer(data, dtype=dtype).reshape(shape)[inverse]


class _PartitionStore:
    """Append-only records grouped later by a 64-bit hash key, in memory up to a budget, else in 64 partition files.

    ``partitions`` yields arrays that each hold every record of some set of keys (so a group is never split),
    records in append order, each at most about ``pass_bytes``: a larger partition (in memory or on disk) is read
    in several passes, each keeping the keys of one residue class of other key bits.
    """

    def __init__(self, dtype: np.dtype, key: str, budget: int, pass_bytes: int, spill: _SpillDir, name: str) -> None:
        self._dtype = np.dtype(dtype)
        self._key = key
        self._budget = budget
        self._pass_bytes = max(pass_bytes, self._dtype.itemsize)
        self._spill = spill
        self._name = name
        self._chunks: list[np.ndarray] = []
        self._buffered = 0
        self._spilled = False

    def append(self, records: np.ndarray) -> None:
        if not len(records):
            return
        self._chunks.append(records)
        self._buffered += records.nbytes
        if self._buffered > self._budget:
            self._flush()

    def _path(self, part: int) -> Path:
        return self._spill() / f"{self._name}-{part:02d}"

    def _flush(self) -> None:
        self._spilled = True
        records = np.concatenate(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        # One mask per partition rather than a sort: 64 cheap scans, and no index arrays the size of the buffer.
        part = (records[self._key] >> np.uint64(64 - _PARTITION_BITS)).astype(np.uint8)
        for p in range(1 << _PARTITION_BITS):
            selected = records[part == p]
            if len(selected):
                with open(self._path(p), "ab") as fh:
                    selected.tofile(fh)

    def _read(self, path: Path) -> Iterator[np.ndarray]:
        chunk_records = max(1, self._pass_bytes // self._dtype.itemsize)
        with open(path, "rb") as fh:
            while True:
                chunk = np.fromfile(fh, dtype=self._dtype, count=chunk_records)
                if not len(chunk):
                    return
                yield chunk

    def partitions(self) -> Iterator[np.ndarray]:
        sources: list[tuple[Callable[[], Iterator[np.ndarray]], int]] = []
        if not self._spilled:
            chunks = self._chunks
            sources.append((lambda: iter(chunks), self._buffered))
        else:
            if self._chunks:
                self._flush()
            for p in range(1 << _PARTITION_BITS):
                path = self._path(p)
                if path.exists():
                    sources.append((lambda path=path: self._read(path), path.stat().st_size))
        for read, size in sources:
            passes = math.ceil(size / self._pass_bytes)
            if passes <= 1:
                arrays = list(read())
                if arrays:  # no example had any shingle (e.g. every example was empty)
                    yield np.concatenate(arrays)
                continue
            for residue in range(passes):
                selected = []
                for chunk in read():
                    bits = (chunk[self._key] >> np.uint64(16)) & np.uint64(0xFFFFFFFF)
                    selected.append(chunk[bits % np.uint64(passes) == residue])
                yield np.concatenate(selected)


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
        step = max(1, _VERIFY_PAIRS // per_run)
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
    ) -> None:
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
        self._spill = _SpillDir(Path(workdir) if workdir is not None else None)
        # Stored rows take at most 5/8 of the budget; grouping works on slices of 1/16, whose sorting temporaries
        # stay within the rest.
        share = memory_budget // 16
        self._sigs = _RowStore(np.dtype(np.uint8), num_perm, 4 * share, self._spill, "signatures")
        self._lines = _RowStore(np.dtype(np.int64), None, share, self._spill, "lines")
        self._exact = _PartitionStore(_EXACT_DTYPE, "hi", share, share, self._spill, "exact")
        self._bands = _PartitionStore(_BAND_DTYPE, "key", 4 * share, share, self._spill, "bands")
        self._sketcher = _Sketcher(self.params)
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
        self._last_line = line
        self._count += 1
        if self._sketcher.add(line, text):
            self._store(self._sketcher.take())

    def _store(self, batch: _Sketches) -> None:
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
                for lo in range(0, len(pos_a), _VERIFY_PAIRS):
                    a = idx[pos_a[lo : lo + _VERIFY_PAIRS]]
                    b = idx[pos_b[lo : lo + _VERIFY_PAIRS]]
                    pair_band = band[pos_a[lo : lo + _VERIFY_PAIRS]]
                    jaccard, _, first = _verify(self._sigs.take(a), self._sigs.take(b), pair_band, params)
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


# ---------------------------------------------------------------------------------------------------------------------
# Cross-dataset leakage: compact signature files and a bounded-memory join between two of them.

_SIG_MAGIC = b"FTDSIG1\n"
_SIG_HEADER_SIZE = 4096
_FLAG_HAS_WORDS = 1


def _signature_dtype(params: MinHashParams) -> np.dtype:
    return np.dtype(
        [
            ("line", "<i8"),
            ("hi", "<u8"),
            ("lo", "<u8"),
            ("flags", "u1"),
            ("keys", "<u8", (params.bands,)),
            ("sig", "u1", (params.num_perm,)),
        ]
    )


def build_signature_index(
    path: Path,
    out: Path,
    *,
    near_threshold: float = 0.85,
    num_perm: int = DEFAULT_NUM_PERM,
    shingle_size: int = DEFAULT_SHINGLE_SIZE,
) -> None:
    """Stream the JSONL dataset at ``path`` and write its signature file to ``out``.

    The file is a 4 KiB JSON header (parameters, counts, the source's sha256) followed by one fixed-size record per
    example: line number, exact digest, LSH band keys and b-bit MinHash signature (about 250 bytes with the defaults,
    whatever the example's size). Lines that are blank, not JSON or not an object are skipped and counted in the
    header. The file is written to a temporary name and renamed, so ``out`` is never left half-written.
    """
    path, out = Path(path), Path(out)
    params = MinHashParams.for_threshold(near_threshold, num_perm=num_perm, shingle_size=shingle_size)
    dtype = _signature_dtype(params)
    sketcher = _Sketcher(params)
    source_hash = hashlib.sha256()
    examples = 0
    skipped = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            dst.write(b"\0" * _SIG_HEADER_SIZE)

            def write(batch: _Sketches) -> None:
                rows = np.zeros(len(batch.lines), dtype)
                rows["line"], rows["hi"], rows["lo"] = batch.lines, batch.hi, batch.lo
                rows["flags"] = np.where(batch.has_words, _FLAG_HAS_WORDS, 0)
                rows["keys"], rows["sig"] = batch.keys, batch.sig
                rows.tofile(dst)

            for line_no, raw in enumerate(src, start=1):
                source_hash.update(raw)
                if not raw.strip():
                    skipped += 1
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    skipped += 1
                    continue
                if not isinstance(obj, dict):
                    skipped += 1
                    continue
                examples += 1
                if sketcher.add(line_no, canonical_example_text(obj)):
                    write(sketcher.take())
            if len(sketcher):
                write(sketcher.take())
            header = {
                "version": 1,
                "params": params.model_dump(),
                "threshold": near_threshold,
                "examples": examples,
                "skipped_lines": skipped,
                "source_sha256": source_hash.hexdigest(),
            }
            encoded = _SIG_MAGIC + json.dumps(header, sort_keys=True).encode()
            if len(encoded) > _SIG_HEADER_SIZE:
                raise AssertionError("signature header overflow")
            dst.seek(0)
            dst.write(encoded.ljust(_SIG_HEADER_SIZE, b" "))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


class _SignatureFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            head = fh.read(_SIG_HEADER_SIZE)
        if len(head) < _SIG_HEADER_SIZE or not head.startswith(_SIG_MAGIC):
            raise ValueError(f"{self.path}: not a signature file (build it with build_signature_index)")
        try:
            header: dict[str, Any] = json.loads(head[len(_SIG_MAGIC) :].decode())
        except ValueError as exc:
            raise ValueError(f"{self.path}: corrupt signature header") from exc
        if header.get("version") != 1:
            raise ValueError(f"{self.path}: unsupported signature file version {header.get('version')!r}")
        self.header = header
        self.params = MinHashParams(**header["params"])
        self.dtype = _signature_dtype(self.params)
        self.examples = int(header["examples"])
        expected = _SIG_HEADER_SIZE + self.examples * self.dtype.itemsize
        actual = self.path.stat().st_size
        if actual != expected:
            raise ValueError(f"{self.path}: {actual} bytes, expected {expected} for {self.examples} examples")

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, records) over the whole file, read sequentially ``rows`` records at a time."""
        for start in range(0, self.examples, rows):
            count = min(rows, self.examples - start)
            offset = _SIG_HEADER_SIZE + start * self.dtype.itemsize
            yield start, np.fromfile(self.path, dtype=self.dtype, count=count, offset=offset)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return _read_rows(self.path, _SIG_HEADER_SIZE, self.dtype, None, np.asarray(rows, dtype=np.int64))


class LeakageResult(BaseModel):
    """Test examples that also appear, exactly or nearly, in the training set."""

    model_config = ConfigDict(frozen=True)

    train_examples: int
    test_examples: int
    threshold: float
    exact_test_lines: int
    """Test examples whose canonical text is identical to some training example."""
    near_test_lines: int
    """Test examples without an exact copy whose best training match has estimated Jaccard >= threshold."""
    leaked_fraction: float
    exact_pairs: list[tuple[int, int]]
    """(train_line, test_line): the first training copy of each exactly leaked test line, in test line order."""
    near_pairs: list[tuple[int, int, float]]
    """(train_line, test_line, estimated Jaccard): the best training match of each near-leaked test line."""
    leaked_test_lines: list[int]
    """Test lines with an exact or near copy in training, ascending (capped at ``max_lines``)."""
    complete: bool
    """False when a huge LSH bucket was capped: the near counts are then lower bounds."""


def find_leakage(
    train_sig: Path,
    test_sig: Path,
    *,
    threshold: float = 0.85,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    max_pairs: int = 1_000,
    max_lines: int = 10_000,
    max_bucket: int = 1_000,
) -> LeakageResult:
    """Compare two signature files built with the same parameters.

    Memory: the training side is processed in hash partitions that fit ``memory_budget`` (one pass over both files
    per partition); the test side is streamed, plus three small arrays per test example (best match and score).
    The LSH bands were tuned for the threshold given at build time; a different ``threshold`` here is applied when
    verifying, with the build-time recall.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    train, test = _SignatureFile(train_sig), _SignatureFile(test_sig)
    if train.params != test.params:
        raise ValueError(
            f"signature files were built with different parameters: {train.params.model_dump()} vs "
            f"{test.params.model_dump()}"
        )
    params = train.params
    n_test = test.examples
    exact_row = np.full(n_test, -1, dtype=np.int64)
    best_j = np.full(n_test, -1.0, dtype=np.float64)
    best_row = np.full(n_test, -1, dtype=np.int64)
    complete = True

    record_bytes = 8 * 3 + params.bands * (8 + 8 + 1)
    passes = max(1, math.ceil(3 * train.examples * record_bytes / max(memory_budget, 1024)))
    chunk_rows = max(256, memory_budget // (8 * test.dtype.itemsize))
    for residue in range(passes if train.examples and n_test else 0):
        _exact_pass(train, test, residue, passes, chunk_rows, exact_row)
        complete &= _near_pass(train, test, residue, passes, chunk_rows, max_bucket, best_j, best_row)

    exact_mask = exact_row >= 0
    near_mask = (best_j >= threshold) & ~exact_mask
    exact_rows = np.flatnonzero(exact_mask)
    near_rows = np.flatnonzero(near_mask)
    leaked_rows = np.flatnonzero(exact_mask | near_mask)
    test_lines = test.take(exact_rows[:max_pairs])["line"].tolist()
    train_lines = train.take(exact_row[exact_rows[:max_pairs]])["line"].tolist()
    exact_pairs = list(zip(train_lines, test_lines, strict=True))
    near_test_lines = test.take(near_rows[:max_pairs])["line"].tolist()
    near_train_lines = train.take(best_row[near_rows[:max_pairs]])["line"].tolist()
    near_scores = [round(float(j), 4) for j in best_j[near_rows[:max_pairs]]]
    return LeakageResult(
        train_examples=train.examples,
        test_examples=n_test,
        threshold=threshold,
        exact_test_lines=len(exact_rows),
        near_test_lines=len(near_rows),
        leaked_fraction=round(len(leaked_rows) / n_test, 6) if n_test else 0.0,
        exact_pairs=exact_pairs,
        near_pairs=list(zip(near_train_lines, near_test_lines, near_scores, strict=True)),
        leaked_test_lines=test.take(leaked_rows[:max_lines])["line"].tolist(),
        complete=complete,
    )


def _exact_pass(
    train: _SignatureFile, test: _SignatureFile, residue: int, passes: int, chunk_rows: int, exact_row: np.ndarray
) -> None:
    """Record, for each test row, the first training row with the same digest (digests with hi % passes == residue)."""
    his, los, rows = [], [], []
    for start, chunk in train.chunks(chunk_rows):
        keep = np.flatnonzero(chunk["hi"] % np.uint64(passes) == residue)
        his.append(chunk["hi"][keep])
        los.append(chunk["lo"][keep])
        rows.append(keep + start)
    hi, lo, row = np.concatenate(his), np.concatenate(los), np.concatenate(rows)
    if not len(hi):
        return
    order = np.lexsort((row, lo, hi))
    hi, lo, row = hi[order], lo[order], row[order]
    for start, chunk in test.chunks(chunk_rows):
        keep = np.flatnonzero(chunk["hi"] % np.uint64(passes) == residue)
        t_hi, t_lo = chunk["hi"][keep], chunk["lo"][keep]
        left = np.searchsorted(hi, t_hi, side="left")
        right = np.searchsorted(hi, t_hi, side="right")
        for i in np.flatnonzero(right > left):
            # Equal high halves: the low half decides (a 64-bit collision is possible in principle, so check).
            span = slice(left[i], right[i])
            match = np.flatnonzero(lo[span] == t_lo[i])
            if len(match):
                exact_row[start + keep[i]] = row[span][match[0]]


def _near_pass(
    train: _SignatureFile,
    test: _SignatureFile,
    residue: int,
    passes: int,
    chunk_rows: int,
    max_bucket: int,
    best_j: np.ndarray,
    best_row: np.ndarray,
) -> bool:
    """Update each test row's best training match among band keys with key % passes == residue."""
    params = train.params
    bands = params.bands
    keys, rows = [], []
    for start, chunk in train.chunks(chunk_rows):
        flat = chunk["keys"].ravel()
        has_words = np.repeat(chunk["flags"] & _FLAG_HAS_WORDS > 0, bands)
        keep = np.flatnonzero(has_words & (flat % np.uint64(passes) == residue))
        keys.append(flat[keep])
        rows.append(keep // bands + start)
    train_key, train_row = np.concatenate(keys), np.concatenate(rows)
    del keys, rows
    if not len(train_key):
        return True
    order = np.argsort(train_key, kind="stable")
    train_key, train_row = train_key[order], train_row[order]
    complete = True
    for start, chunk in test.chunks(chunk_rows):
        flat = chunk["keys"].ravel()
        has_words = np.repeat(chunk["flags"] & _FLAG_HAS_WORDS > 0, bands)
        keep = np.flatnonzero(has_words & (flat % np.uint64(passes) == residue))
        left = np.searchsorted(train_key, flat[keep], side="left")
        count = np.searchsorted(train_key, flat[keep], side="right") - left
        if np.any(count > max_bucket):
            complete = False
            count = np.minimum(count, max_bucket)
        # Expand the (test record, training candidate) pairs a slice of test records at a time, so a popular band
        # key never materialises millions of pairs at once.
        cumulative = np.cumsum(count)
        total = int(cumulative[-1]) if len(cumulative) else 0
        cuts = np.searchsorted(cumulative, np.arange(_VERIFY_PAIRS, total, _VERIFY_PAIRS), side="left") + 1
        for first, last in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(keep)])), strict=True):
            slice_count = count[first:last]
            pairs = int(slice_count.sum())
            if not pairs:
                continue
            t_flat = np.repeat(keep[first:last], slice_count)
            offsets = np.arange(pairs) - np.repeat(np.cumsum(slice_count) - slice_count, slice_count)
            r_train = train_row[np.repeat(left[first:last], slice_count) + offsets]
            t_local = t_flat // bands
            band = (t_flat % bands).astype(np.uint8)
            train_records = train.take(r_train)
            test_records = chunk[t_local]
            # Only the best match per test row is kept, so repeats across bands are harmless and any real
            # collision counts (a pair whose first band sat in a capped bucket is still found in another band).
            jaccard, collides, _ = _verify(train_records["sig"], test_records["sig"], band, params)
            identical = (train_records["hi"] == test_records["hi"]) & (train_records["lo"] == test_records["lo"])
            ok = collides & ~identical
            if ok.any():
                _update_best(t_local[ok] + start, jaccard[ok], r_train[ok], best_j, best_row)
    return complete


def _update_best(
    test_rows: np.ndarray, jaccard: np.ndarray, train_rows: np.ndarray, best_j: np.ndarray, best_row: np.ndarray
) -> None:
    """Keep, per test row, the highest score (ties: the earliest training row)."""
    order = np.lexsort((train_rows, -jaccard, test_rows))
    test_rows, jaccard, train_rows = test_rows[order], jaccard[order], train_rows[order]
    first = np.concatenate(([True], test_rows[1:] != test_rows[:-1]))
    test_rows, jaccard, train_rows = test_rows[first], jaccard[first], train_rows[first]
    current_j, current_row = best_j[test_rows], best_row[test_rows]
    better = (jaccard > current_j) | ((jaccard == current_j) & (train_rows < current_row))
    best_j[test_rows[better]] = jaccard[better]
    best_row[test_rows[better]] = train_rows[better]
