"""Frozen train / validation / test splits of a JSONL dataset.

Frozen means: the same input bytes, fractions, seed and ``stratify_by`` give byte-identical output files on any
machine and Python version. Nothing depends on ``hash()``, ``random``, dict or set order, or floating-point rounding:

* every example (non-blank line) gets a rank, the first 8 bytes of BLAKE2b keyed by the seed over (BLAKE2b of the
  line's content, the example's ordinal); lines are ordered by rank within their class;
* split sizes come from exact rational arithmetic on the fractions (``fractions.Fraction`` of the given floats);
  without stratification this is largest-remainder rounding of ``n * fraction`` (ties to the earlier split in
  train, validation, test order);
* with ``stratify_by`` each class gets ``floor`` or ``ceil`` of ``n_class * fraction`` per split; which splits get
  the extra units is decided class after class (classes ordered by a seeded hash of their label) in favour of the
  split furthest below its overall target, so many small classes still fill validation and test and the totals stay
  within one example of ``n * fraction``;
* output lines keep their input order and bytes (line ends become ``\\n``).

Two streaming passes over the file; memory is 8 bytes per example (12 with stratification) plus one dict entry per
class.
"""

from __future__ import annotations

import hashlib
import math
import os
from array import array
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict

from service import chat
from service.datasets.canonical import detect_example_format, normalize_whitespace
from service.errors import InvalidInput

__all__ = ["SPLIT_NAMES", "SplitError", "SplitOutput", "check_split_arguments", "split_dataset"]

SPLIT_NAMES = ("train", "validation", "test")
ASSISTANT = "assistant"  # the stratify_by value meaning "the answer", not the role
_MAX_REPORTED_CLASSES = 50
_READ_BUFFER = 1 << 20


class SplitError(InvalidInput):
    code = "invalid_split"


class SplitOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    path: Path
    examples: int
    size_bytes: int
    sha256: str
    class_counts: dict[str, int] | None = None
    """Examples per class (label as compact JSON) when stratified over at most 50 classes."""


def check_split_arguments(fractions: Mapping[str, float], seed: int, stratify_by: str | None) -> list[str]:
    """Raise ``SplitError`` for arguments ``split_dataset`` would refuse, before any file is read; returns the
    names of the splits it would write, in output order."""
    shares = _validate_fractions(fractions)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SplitError(f"seed must be an integer, got {seed!r}")
    if stratify_by is not None:
        _parse_field_path(stratify_by)
    return list(shares)


def split_dataset(
    path: Path,
    out_dir: Path,
    *,
    fractions: Mapping[str, float],
    seed: int,
    stratify_by: str | None = None,
    only: str | None = None,
) -> dict[str, SplitOutput]:
    """Split the JSONL file at ``path`` into ``out_dir/<name>.jsonl`` for each name in ``fractions``.

    ``fractions`` maps names from ``train``, ``validation``, ``test`` to shares >= 0 summing to 1 (within 1e-9; a zero
    share gives an empty file). ``stratify_by`` is a dotted field path into each example (``metadata.label``;
    integer parts index lists, ``messages.-1.content``) or ``assistant`` for the last assistant message's content
    (the completion for prompt/completion data, the preferred output for preference data).

    ``only`` writes just that split's file (the assignment of every example is the same, so its bytes are those a
    full split writes): a worker producing one derived dataset needs no other file.

    Raises ``SplitError`` naming the line for unparseable JSON or a missing stratification field, and for bad
    arguments.
    """
    path, out_dir = Path(path), Path(out_dir)
    shares = _validate_fractions(fractions)
    if only is not None and only not in shares:
        raise SplitError(f"split {only!r} is not among the fractions {sorted(shares)}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SplitError(f"seed must be an integer, got {seed!r}")
    field = _parse_field_path(stratify_by) if stratify_by is not None else None
    if not path.is_file():
        raise SplitError(f"{path}: no such file")
    key = hashlib.blake2b(b"ft-split-v1:" + str(seed).encode(), digest_size=32).digest()

    ranks, classes, labels, source_digest = _rank_lines(path, key, field, stratify_by)
    names = list(shares)
    assignment, class_sizes = _assign(ranks, classes, labels, key, [shares[name] for name in names])

    out_dir.mkdir(parents=True, exist_ok=True)
    return _write_outputs(path, out_dir, names, assignment, classes, labels, class_sizes, source_digest, only)


def _validate_fractions(fractions: Mapping[str, float]) -> dict[str, Fraction]:
    if not isinstance(fractions, Mapping) or not fractions:
        raise SplitError("fractions must be a non-empty mapping of split name to share")
    unknown = [name for name in fractions if name not in SPLIT_NAMES]
    if unknown:
        raise SplitError(f"unknown split name(s) {unknown}; allowed: {', '.join(SPLIT_NAMES)}")
    shares: dict[str, Fraction] = {}
    for name in SPLIT_NAMES:
        if name not in fractions:
            continue
        value = fractions[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SplitError(f"fraction for {name!r} must be a finite number, got {value!r}")
        if value < 0:
            raise SplitError(f"fraction for {name!r} must be >= 0, got {value}")
        shares[name] = Fraction(value)
    total = sum(shares.values())
    if abs(total - 1) > Fraction(1, 10**9):
        raise SplitError(f"fractions must sum to 1 (within 1e-9), got {float(total)!r}")
    # Normalise exactly so that the shares sum to exactly one.
    return {name: share / total for name, share in shares.items()}


def _parse_field_path(stratify_by: str) -> tuple[str | int, ...] | None:
    if not isinstance(stratify_by, str) or not stratify_by.strip():
        raise SplitError("stratify_by must be a non-empty field path such as 'metadata.label', or 'assistant'")
    if stratify_by == ASSISTANT:
        return None
    parts: list[str | int] = []
    for part in stratify_by.split("."):
        if not part:
            raise SplitError(f"stratify_by {stratify_by!r} has an empty path component")
        try:
            parts.append(int(part))
        except ValueError:
            parts.append(part)
    return tuple(parts)


def _rank_lines(
    path: Path, key: bytes, field: tuple[str | int, ...] | None, stratify_by: str | None
) -> tuple[np.ndarray, np.ndarray | None, list[tuple[bytes, str]], str]:
    ranks = array("Q")
    classes = array("I") if stratify_by is not None else None
    class_ids: dict[bytes, int] = {}
    labels: list[tuple[bytes, str]] = []  # per class: (label digest, label shown in reports)
    source = hashlib.sha256()
    blake2b = hashlib.blake2b
    for ordinal, (number, content) in enumerate(_lines_with_hash(path, source)):
        content_hash = blake2b(content, digest_size=16).digest()
        rank = blake2b(content_hash + ordinal.to_bytes(8, "little"), key=key, digest_size=8).digest()
        ranks.append(int.from_bytes(rank, "little"))
        if classes is not None:
            label = _label(content, number, field, stratify_by or "")
            digest = blake2b(label, digest_size=16).digest()
            class_id = class_ids.get(digest)
            if class_id is None:
                class_id = class_ids[digest] = len(labels)
                labels.append((digest, label.decode()[:200]))
            classes.append(class_id)
    rank_array = np.frombuffer(ranks, dtype=np.uint64) if ranks else np.empty(0, np.uint64)
    class_array = None
    if classes is not None:
        class_array = np.frombuffer(classes, dtype=np.uint32) if classes else np.empty(0, np.uint32)
    return rank_array, class_array, labels, source.hexdigest()


def _lines_with_hash(path: Path, source: Any) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, content without its line end) for each non-blank line, hashing every byte read."""
    with open(path, "rb", buffering=_READ_BUFFER) as fh:
        for number, raw in enumerate(fh, start=1):
            source.update(raw)
            content = raw.rstrip(b"\r\n")
            if content.strip():
                yield number, content


def _label(content: bytes, number: int, field: tuple[str | int, ...] | None, stratify_by: str) -> bytes:
    try:
        obj = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise SplitError(f"line {number}: not valid JSON ({exc}); stratification needs every line parsed") from exc
    if field is None:
        value: Any = _assistant_text(obj, number)
    else:
        value = obj
        for part in field:
            if isinstance(part, int) and isinstance(value, list) and -len(value) <= part < len(value):
                value = value[part]
            elif isinstance(value, Mapping) and str(part) in value:
                value = value[str(part)]
            else:
                raise SplitError(f"line {number}: field {stratify_by!r} is missing (no {part!r})")
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _assistant_text(obj: Any, number: int) -> str:
    """The answer an example teaches, whitespace-normalised: its completion, or its last assistant message's answer
    (``service.chat``; the preferred output for preference data)."""
    if isinstance(obj, Mapping):
        kind = detect_example_format(obj)
        if kind == "prompt_completion" and isinstance(obj.get("completion"), str):
            return normalize_whitespace(obj["completion"])
        messages = obj.get("preferred_output") if kind == "preference" else obj.get("messages")
        if isinstance(messages, list):
            for message in reversed(messages):
                if isinstance(message, Mapping) and message.get("role") == chat.ASSISTANT:
                    return normalize_whitespace(chat.answer_of(message))
    raise SplitError(f"line {number}: no assistant message to stratify by")


def _class_counts(sizes: list[int], weights: list[int], denominator: int) -> np.ndarray:
    """Per class and split: floor or ceil of size * share, extra units going to the splits furthest behind.

    ``weights`` are the shares times ``denominator`` (integers), so all arithmetic is exact.
    """
    n_splits = len(weights)
    counts = np.zeros((len(sizes), n_splits), dtype=np.int64)
    assigned = [0] * n_splits
    seen = 0
    for c, size in enumerate(sizes):
        seen += size
        floors = [size * w // denominator for w in weights]
        has_fraction = [size * w % denominator != 0 for w in weights]
        leftover = size - sum(floors)
        # Deficit of each split against its overall target after this class's floors, in units of 1/denominator.
        deficit = [seen * w - (assigned[s] + floors[s]) * denominator for s, w in enumerate(weights)]
        candidates = sorted(
            (s for s in range(n_splits) if has_fraction[s]),
            key=lambda s: (-deficit[s], -(size * weights[s] % denominator), s),
        )
        for s in candidates[:leftover]:
            floors[s] += 1
        for s in range(n_splits):
            assigned[s] += floors[s]
            counts[c, s] = floors[s]
    return counts


def _assign(
    ranks: np.ndarray,
    classes: np.ndarray | None,
    labels: list[tuple[bytes, str]],
    key: bytes,
    shares: list[Fraction],
) -> tuple[np.ndarray, np.ndarray]:
    """Split index (0-based, in ``shares`` order) of every example, and the class x split count matrix."""
    n = len(ranks)
    denominator = math.lcm(*(share.denominator for share in shares))
    weights = [int(share * denominator) for share in shares]
    if classes is None:
        sizes = [n]
        order = np.argsort(ranks, kind="stable")
    else:
        # Classes in a seeded, label-derived order: which classes get the rounding extras must not depend on which
        # label happened to come first in the file.
        class_rank = np.array(
            [
                int.from_bytes(hashlib.blake2b(digest, key=key, digest_size=8).digest(), "little")
                for digest, _ in labels
            ],
            dtype=np.uint64,
        )
        class_order = np.argsort(class_rank, kind="stable")
        position = np.empty(len(labels), dtype=np.int64)
        position[class_order] = np.arange(len(labels))
        order = np.lexsort((ranks, position[classes]))
        sizes = np.bincount(classes, minlength=len(labels))[class_order].tolist()
    counts = _class_counts(sizes, weights, denominator)
    split_codes = np.tile(np.arange(len(shares), dtype=np.uint8), len(sizes))
    assignment = np.empty(n, dtype=np.uint8)
    assignment[order] = np.repeat(split_codes, counts.ravel())
    if classes is not None:
        # Back to label order for reporting.
        unordered = np.empty_like(counts)
        unordered[class_order] = counts
        counts = unordered
    return assignment, counts


def _write_outputs(
    path: Path,
    out_dir: Path,
    names: list[str],
    assignment: np.ndarray,
    classes: np.ndarray | None,
    labels: list[tuple[bytes, str]],
    class_sizes: np.ndarray,
    source_digest: str,
    only: str | None = None,
) -> dict[str, SplitOutput]:
    written = names if only is None else [only]
    temporary = {name: out_dir / f".{name}.jsonl.{os.getpid()}.tmp" for name in written}
    handles = {name: open(temporary[name], "wb", buffering=_READ_BUFFER) for name in written}  # noqa: SIM115
    hashes = {name: hashlib.sha256() for name in written}
    examples = dict.fromkeys(names, 0)
    sizes = dict.fromkeys(names, 0)
    source = hashlib.sha256()
    try:
        codes = assignment.tolist()
        for ordinal, (_, content) in enumerate(_lines_with_hash(path, source)):
            if ordinal >= len(codes):
                raise SplitError(f"{path} changed while it was being split")
            name = names[codes[ordinal]]
            if name not in handles:
                continue
            data = content + b"\n"
            handles[name].write(data)
            hashes[name].update(data)
            examples[name] += 1
            sizes[name] += len(data)
        if source.hexdigest() != source_digest:
            raise SplitError(f"{path} changed while it was being split")
        for handle in handles.values():
            handle.close()
        outputs = {}
        for s, name in enumerate(names):
            if name not in handles:
                continue
            final = out_dir / f"{name}.jsonl"
            os.replace(temporary[name], final)
            class_counts = None
            if classes is not None and len(labels) <= _MAX_REPORTED_CLASSES:
                class_counts = {label: int(class_sizes[c, s]) for c, (_, label) in enumerate(labels)}
            outputs[name] = SplitOutput(
                name=name,
                path=final,
                examples=examples[name],
                size_bytes=sizes[name],
                sha256=hashes[name].hexdigest(),
                class_counts=class_counts,
            )
        return outputs
    finally:
        for handle in handles.values():
            handle.close()
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
