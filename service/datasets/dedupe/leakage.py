"""Cross-dataset leakage: compact signature files and a bounded-memory join between two of them."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict

from service.datasets.canonical import canonical_example_text
from service.datasets.dedupe.minhash import VERIFY_BATCH_PAIRS, Sketcher, Sketches, signature_width, verify
from service.datasets.dedupe.params import DEFAULT_MEMORY_BUDGET, DEFAULT_NUM_PERM, DEFAULT_SHINGLE_SIZE, MinHashParams
from service.datasets.dedupe.storage import read_rows

# Version 2: one-permutation signatures and vectorised word hashes; version 1 files (per-permutation MinHash) are
# not comparable with them and are refused. Version 3: multi-part contents read as service.chat reads them (text
# parts run together, refusal parts are text), which changes the canonical text of such examples.
SIGNATURE_VERSION = 3
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
            ("sig", "u1", (signature_width(params),)),
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
    sketcher = Sketcher(params)
    source_hash = hashlib.sha256()
    examples = 0
    skipped = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            dst.write(b"\0" * _SIG_HEADER_SIZE)

            def write(batch: Sketches) -> None:
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
                "version": SIGNATURE_VERSION,
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
        if header.get("version") != SIGNATURE_VERSION:
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
        return read_rows(self.path, _SIG_HEADER_SIZE, self.dtype, None, np.asarray(rows, dtype=np.int64))


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
        cuts = np.searchsorted(cumulative, np.arange(VERIFY_BATCH_PAIRS, total, VERIFY_BATCH_PAIRS), side="left") + 1
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
            jaccard, collides, _ = verify(train_records["sig"], test_records["sig"], band, params)
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
