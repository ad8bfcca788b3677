"""Bounded-memory storage for duplicate search: rows kept in memory up to a byte budget and spilled to private files
after it, with random access by row number or grouping by a hash key one partition at a time."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

# Band keys and digests spill into 2**_PARTITION_BITS hash partitions, so that grouping can read one at a time.
_PARTITION_BITS = 6


class SpillDir:
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


class RowStore:
    """Append-only rows, in memory up to a byte budget and in a file after; random access by row number."""

    def __init__(self, dtype: np.dtype, width: int | None, budget: int, spill: SpillDir, name: str) -> None:
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
        return read_rows(self._path, 0, self._dtype, self._width, rows)


def read_rows(path: Path, offset: int, dtype: np.dtype, width: int | None, rows: np.ndarray) -> np.ndarray:
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


class PartitionStore:
    """Append-only records grouped later by a 64-bit hash key, in memory up to a budget, else in 64 partition files.

    ``partitions`` yields arrays that each hold every record of some set of keys (so a group is never split),
    records in append order, each at most about ``pass_bytes``: a larger partition (in memory or on disk) is read
    in several passes, each keeping the keys of one residue class of other key bits.
    """

    def __init__(self, dtype: np.dtype, key: str, budget: int, pass_bytes: int, spill: SpillDir, name: str) -> None:
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
