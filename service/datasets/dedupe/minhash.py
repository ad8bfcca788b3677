"""Sketches of examples for duplicate search: exact digests, word shingles and one-permutation MinHash signatures.

Every stage runs on a whole batch of texts at once with numpy, so the per-example cost is a few calls into C rather
than a Python loop per word or per permutation:

* words: the batch is case-folded and decoded to code points (one ``str.encode('utf-32-le')``), classified with a
  lookup table that reproduces ``_WORD_RE`` exactly (runs of ``\\w`` characters, each CJK ideograph or kana on its
  own), and each word is hashed with a polynomial over its code points computed from one prefix sum;
* shingles: ``shingle_size`` consecutive words combined with a 64-bit mixer;
* signature: one-permutation hashing (Li, Owen & Zhang, 2012): each shingle hash picks one of ``num_perm`` bins and
  the bin keeps its minimum, so a signature costs one pass over the shingles instead of one pass per permutation.
  Empty bins of examples with fewer shingles than bins are filled by optimal densification (Shrivastava, 2017):
  bin ``j`` borrows from the first non-empty bin in a fixed pseudo-random sequence of bins that depends only on
  ``j``, which keeps the probability that two examples agree on a bin equal to their Jaccard similarity.

Everything derives from fixed BLAKE2b-seeded constants, so results are identical on every machine and in every
process, and an example's sketch does not depend on which other examples share its batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from service.datasets.canonical import canonical_example_text, canonical_words_text

log = logging.getLogger(__name__)

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
# do not separate words with spaces and would otherwise turn a whole sentence into one token. The vectorised
# tokeniser below reproduces this expression through a table (checked against it by the tests).
_CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
_CJK = "".join(f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi in _CJK_RANGES)
_WORD_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_NOT_WORD, _WORD, _CJK_CHAR = 0, 1, 2
# Code points above this have no case mapping (the last cased script, Adlam, ends at U+1E95F).
_CASED_LIMIT = 0x20000

_U32_MAX = np.uint32(0xFFFFFFFF)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_COMBINE = np.uint64(0x9E3779B97F4A7C15)

# Texts are tokenised in chunks of at most this many characters (a long text cut at a space, so no word is split):
# the per-character arrays of a chunk stay a few MiB even for a multi-megabyte example.
_PIECE_CHARS = 1 << 18
# Shingles turned into bins at once (bounds the temporaries when one example has millions of words).
_SHINGLE_COLUMNS = 1 << 16
# A batch is sketched when it holds this many examples or characters.
_BATCH_EXAMPLES = 4096
_BATCH_CHARS = 1 << 20
# Densification tries this many pseudo-random bins per empty bin, then takes the next non-empty bin in order.
_DENSIFY_TRIES = 32
_DENSIFY_LEAD = 16  # tries looked at all at once (two uint64 words of bools)
_NO_BIT = 255


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (returns a new array): a cheap, well-mixing bijection."""
    x = x ^ (x >> np.uint64(30))
    x *= _MIX_1
    x ^= x >> np.uint64(27)
    x *= _MIX_2
    x ^= x >> np.uint64(31)
    return x


def _mix64_inplace(x: np.ndarray) -> np.ndarray:
    """``_mix64`` computed in ``x`` (which it returns), with one temporary instead of one per step."""
    t = x >> np.uint64(30)
    x ^= t
    x *= _MIX_1
    np.right_shift(x, np.uint64(27), out=t)
    x ^= t
    x *= _MIX_2
    np.right_shift(x, np.uint64(31), out=t)
    x ^= t
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


# --- words ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    fold: np.ndarray  # uint64 (0x110000,): the case fold of each code point if it is in a word, else 0
    kind: np.ndarray  # uint8 (0x110000,): _NOT_WORD, _WORD or _CJK_CHAR (of the folded character) | NFC flags
    nfc: _NfcTables
    powers: np.ndarray  # uint64 (_PIECE_CHARS + 1,): Q**i mod 2**64
    inverse_powers: np.ndarray  # uint64: Q**-i mod 2**64 (Q is odd, so it has an inverse)


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    """Loaded from the cache (or built, about 0.4 s) once per process; ``prepare`` loads them before worker processes
    are forked so that they share the memory."""
    arrays = _load_cached_tables()
    if arrays is None:
        arrays = _build_tables()
        _store_cached_tables(arrays)
    nfc = _NfcTables(
        flags=arrays["flags"], ccc=arrays["ccc"], decomposable=arrays["decomposable"], pairs=arrays["pairs"]
    )
    return _Tables(fold=arrays["fold"], kind=arrays["kind"] | nfc.flags, nfc=nfc, **_power_tables())


def _build_tables() -> dict[str, np.ndarray]:
    # Every code point in one string, built without a million one-character objects.
    chars = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    kind = np.frombuffer(bytes(map(str.isalnum, chars)), dtype=np.uint8).copy()
    kind[ord("_")] = _WORD
    for lo, hi in _CJK_RANGES:
        kind[lo : hi + 1] = _CJK_CHAR
    fold = np.arange(0x110000, dtype=np.uint32)
    for cp in range(_CASED_LIMIT):
        folded = chars[cp].casefold()
        # Multi-character folds (ß -> ss, ligatures) keep the character: a word then differs from its spelled-out
        # form, which only lowers a similarity slightly.
        if len(folded) == 1 and folded != chars[cp]:
            fold[cp] = ord(folded)
    # Classify the folded character, as the regular expression sees the folded text; zero outside words, so that
    # one lookup gives the value the word hash sums.
    kind = kind[fold]
    fold[kind == _NOT_WORD] = 0
    nfc = _nfc_tables(chars)
    return {
        "fold": fold.astype(np.uint64),  # the type the word hash sums in: one conversion less per character
        "kind": kind,
        "flags": nfc.flags,
        "ccc": nfc.ccc,
        "decomposable": nfc.decomposable,
        "pairs": nfc.pairs,
    }


# The tables depend only on the Unicode database and on how they are built, so they are kept on disk: building them
# is Python loops over a million code points, which every validation process would otherwise pay before its first
# sketch (and a parallel validation pays before it forks its workers). Bump the version when ``_build_tables``
# changes what it computes.
_TABLES_VERSION = 1
_TABLE_NAMES = ("fold", "kind", "flags", "ccc", "decomposable", "pairs")


def cache_dir() -> Path:
    """``FINETUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/finetune``, else ``~/.cache/finetune``."""
    configured = os.environ.get("FINETUNE_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "finetune"


def _tables_cache_path() -> Path:
    return cache_dir() / f"word-tables-v{_TABLES_VERSION}-unicode{unicodedata.unidata_version}.npz"


def _tables_digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in _TABLE_NAMES:
        digest.update(f"{name}:{arrays[name].dtype.str}:{arrays[name].shape}".encode())
        digest.update(np.ascontiguousarray(arrays[name]).data)
    return digest.hexdigest()


def _load_cached_tables() -> dict[str, np.ndarray] | None:
    """The cached tables, or None when there are none or they do not check out (then they are built again)."""
    path = _tables_cache_path()
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in _TABLE_NAMES}
            digest = str(stored["digest"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if _tables_digest(arrays) != digest:
        return None
    return arrays


def _store_cached_tables(arrays: dict[str, np.ndarray]) -> None:
    """Best effort: a read-only or full disk only means the next process builds the tables again."""
    path = _tables_cache_path()
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, digest=np.array(_tables_digest(arrays)), **arrays)
        os.replace(tmp, path)  # atomic: concurrent processes see the old file, the new one, or none
    except OSError:
        log.debug("could not cache the word tables in %s", path.parent, exc_info=True)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# NFC quick-check flags, stored in the word-kind table above its two low bits so that one lookup gives both.
_KIND_MASK = 3
_NFC_NO, _NFC_MAYBE, _NFC_MARK = 4, 8, 16


@dataclass(frozen=True)
class _NfcTables:
    """What a vectorised NFC quick check needs (Unicode's algorithm, refined for the "maybe" characters)."""

    flags: np.ndarray  # uint8 (0x110000,): _NFC_NO (never in NFC), _NFC_MAYBE (may compose with what precedes),
    # _NFC_MARK (non-zero combining class); zero for the characters that never change a text (nearly all)
    ccc: np.ndarray  # uint8: canonical combining class
    decomposable: np.ndarray  # bool: has a canonical decomposition (e.g. é, Hangul syllables)
    pairs: np.ndarray  # uint64, sorted: first << 21 | second for every primary composite


def _nfc_tables(chars: str) -> _NfcTables:
    ccc = np.zeros(0x110000, dtype=np.uint8)
    flags = np.zeros(0x110000, dtype=np.uint8)
    decomposable = np.zeros(0x110000, dtype=bool)
    pairs: list[int] = []
    # No character above U+2FFFF has a canonical decomposition or a combining class (the tests check it).
    for cp in range(0x30000):
        ch = chars[cp]
        ccc[cp] = unicodedata.combining(ch)
        no = unicodedata.normalize("NFC", ch) != ch
        if no:
            flags[cp] |= _NFC_NO
        decomposition = unicodedata.decomposition(ch)
        if decomposition and not decomposition.startswith("<"):
            decomposable[cp] = True
            parts = [int(part, 16) for part in decomposition.split()]
            if len(parts) == 2 and not no:
                flags[parts[1]] |= _NFC_MAYBE
                pairs.append(parts[0] << 21 | parts[1])
    # Hangul syllables compose algorithmically (no decomposition entries): leading + vowel, syllable + trailing.
    decomposable[0xAC00:0xD7A4] = True
    flags[0x1161:0x1176] |= _NFC_MAYBE
    flags[0x11A8:0x11C3] |= _NFC_MAYBE
    pairs.extend(lead << 21 | vowel for lead in range(0x1100, 0x1113) for vowel in range(0x1161, 0x1176))
    flags[ccc != 0] |= _NFC_MARK
    return _NfcTables(flags=flags, ccc=ccc, decomposable=decomposable, pairs=np.unique(pairs).astype(np.uint64))


def _not_nfc(points: np.ndarray, at: np.ndarray, nfc: _NfcTables) -> np.ndarray:
    """Of the positions ``at`` of flagged characters, those where a text of these code points may differ from its
    NFC form; none means it is NFC.

    Unicode's quick check, with "maybe" characters resolved by looking at the character before: a maybe character
    changes nothing when it follows a starter that neither composes with it nor decomposes (composition only
    combines a starter with what follows it). Anything else suspicious is flagged, so a false alarm only costs a
    ``unicodedata.normalize`` call. The first character of a chunk follows a newline or a space of its text, which
    compose with nothing.
    """
    kinds = nfc.flags[points[at]]
    bad = (kinds & _NFC_NO) != 0
    before = np.where(at > 0, points[np.maximum(at - 1, 0)], ord("\n"))
    ccc_before = nfc.ccc[before]
    # Combining marks out of canonical order.
    bad |= ((kinds & _NFC_MARK) != 0) & (ccc_before > nfc.ccc[points[at]])
    maybe = (kinds & _NFC_MAYBE) != 0
    if maybe.any():
        keys = before[maybe].astype(np.uint64) << np.uint64(21) | points[at[maybe]].astype(np.uint64)
        found = nfc.pairs[np.minimum(np.searchsorted(nfc.pairs, keys), len(nfc.pairs) - 1)] == keys
        # (A Hangul trailing jamo composes with a syllable, which counts as decomposable.)
        bad[maybe] |= (ccc_before[maybe] != 0) | nfc.decomposable[before[maybe]] | found
    return at[bad]


def _power_tables() -> dict[str, np.ndarray]:
    base = int(_COMBINE)
    inverse = pow(base, -1, 1 << 64)
    powers = np.empty(_PIECE_CHARS + 1, dtype=np.uint64)
    powers[0] = 1
    powers[1:] = np.uint64(base)
    np.cumprod(powers, out=powers)
    inverse_powers = np.empty(_PIECE_CHARS + 1, dtype=np.uint64)
    inverse_powers[0] = 1
    inverse_powers[1:] = np.uint64(inverse)
    np.cumprod(inverse_powers, out=inverse_powers)
    return {"powers": powers, "inverse_powers": inverse_powers}


def prepare() -> None:
    """Build the lookup tables now (e.g. before forking workers, so they share the memory)."""
    _tables()


def _chunks(texts: list[str]) -> Iterator[tuple[str, list[int], list[int]]]:
    """The texts as chunks of at most ``_PIECE_CHARS`` characters: (chunk, start of each piece in it, the text each
    piece belongs to). Short texts are joined with newlines (which end any word) so that numpy works on long arrays
    rather than once per example; a longer text is cut at spaces, so no word is split."""
    parts: list[str] = []
    starts: list[int] = []
    owners: list[int] = []
    size = 0
    limit = _PIECE_CHARS - 1
    for owner, text in enumerate(texts):
        if len(text) <= limit:  # the common case: the text is one piece
            if parts and size + 1 + len(text) > limit:
                yield "\n".join(parts), starts, owners
                parts, starts, owners, size = [], [], [], 0
            start = size + 1 if parts else 0
            starts.append(start)
            size = start + len(text)
            parts.append(text)
            owners.append(owner)
            continue
        begin = 0
        while True:
            end = min(len(text), begin + _PIECE_CHARS - 1)
            if end < len(text):
                cut = max(text.rfind(" ", begin, end), text.rfind("\n", begin, end))
                # Without a space (a megabyte-long "word"), cut anyway.
                end = cut + 1 if cut > begin else end
            piece = text[begin:end] if begin or end < len(text) else text
            if parts and size + 1 + len(piece) > _PIECE_CHARS - 1:
                yield "\n".join(parts), starts, owners
                parts, starts, owners, size = [], [], [], 0
            starts.append(size + 1 if parts else 0)
            size = starts[-1] + len(piece)
            parts.append(piece)
            owners.append(owner)
            begin = end
            if begin >= len(text):
                break
    if parts:
        yield "\n".join(parts), starts, owners


def _chunk_words(chunk: str, tables: _Tables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes (uint64) of the case-folded words of ``chunk`` in order, the offset where each starts, and the offsets
    where the chunk may not be NFC (see ``_not_nfc``)."""
    if not chunk:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    if len(chunk) >= len(tables.powers):
        raise AssertionError("chunk longer than the power tables")
    # Lone surrogates survive JSON parsing; they are not word characters, like in the regular expression.
    points = np.frombuffer(chunk.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    full = tables.kind[points]
    unstable = np.empty(0, dtype=np.intp)
    if not chunk.isascii():  # O(1); ASCII is NFC
        flagged = np.flatnonzero(full > _KIND_MASK)
        if len(flagged):
            unstable = _not_nfc(points, flagged, tables.nfc)
            full = full & _KIND_MASK
    starts = full == _CJK_CHAR
    word = full == _WORD
    starts[0] |= word[0]
    starts[1:] |= word[1:] & ~word[:-1]
    first = np.flatnonzero(starts)
    if not len(first):
        return np.empty(0, dtype=np.uint64), first, unstable
    # Polynomial hash of each word, sum(c_i * Q**i), from one pass over the chunk: characters outside words count as
    # zero (the fold table maps them to 0), so the sum from a word's start to the next word's start is the word's
    # own, and multiplying by Q**-start makes it independent of where the word sits. The sums are differences of
    # one running sum (cheaper than ``np.add.reduceat``; wrapping modulo 2**64 cancels out).
    values = tables.fold[points]
    values *= tables.powers[: len(values)]
    running = np.cumsum(values, out=values)
    hashes = running[np.append(first[1:] - 1, len(running) - 1)]
    hashes[1:] -= running[first[1:] - 1]
    if first[0]:
        hashes[0] -= running[first[0] - 1]
    hashes *= tables.inverse_powers[first]
    return hashes, first, unstable


def _word_pass(texts: list[str], tables: _Tables) -> tuple[np.ndarray, np.ndarray, set[int]]:
    """Raw word hashes of ``texts``, words per text, and the texts that may not be NFC."""
    hashes: list[np.ndarray] = []
    counts = np.zeros(len(texts), dtype=np.int64)
    unstable: set[int] = set()
    for chunk, starts, piece_owners in _chunks(texts):
        words, first, suspicious = _chunk_words(chunk, tables)
        hashes.append(words)
        # Words of each piece: those starting between its start and the next piece's.
        per_piece = np.diff(np.searchsorted(first, starts), append=len(first))
        np.add.at(counts, piece_owners, per_piece)
        if len(suspicious):
            pieces = np.searchsorted(np.array(starts), suspicious, side="right") - 1
            unstable.update(piece_owners[i] for i in np.unique(pieces).tolist())
    words = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
    return words, counts, unstable


def nfc_word_hashes(texts: list[str], salt: np.uint64 | int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The texts in NFC, the hashes of their case-folded words (uint64, concatenated in order) and the number of
    words of each (int64).

    Texts are compared after NFC, so a composed and a decomposed accent are the same text. Only the few texts the
    quick check flags (found in the same table lookup as the word kinds) are passed to ``unicodedata.normalize``
    and their words computed again.

    Lines that repeat within the batch (a system prompt or tool definitions shared by many examples) are hashed once:
    no word spans a newline, and NFC never changes anything across one (a newline is a starter that composes with
    nothing and ends every reordering), so a text's words and NFC form are those of its lines, in order.
    """
    # Taking texts apart costs Python work per line, and pays only when at least half of the text repeats (measured:
    # a batch with a quarter repeated was no faster; one whose examples share a long system prompt, 3.5x faster).
    # Repeats are looked for in the first lines, where shared system prompts are, at one lookup per text.
    seen: set[str] = set()
    repeated = total = 0
    for text in texts:
        total += len(text)
        end = text.find("\n")
        first = text if end < 0 else text[:end]
        if first in seen:
            repeated += len(first)
        else:
            seen.add(first)
    if repeated * 2 < total or not repeated:
        return _nfc_word_hashes(texts, salt)
    line_ids: dict[str, int] = {}
    refs: list[int] = []
    lines_per_text: list[int] = []
    for text in texts:
        lines = text.split("\n")
        lines_per_text.append(len(lines))
        for line in lines:
            i = line_ids.get(line)
            if i is None:
                i = line_ids[line] = len(line_ids)
            refs.append(i)
    lines = list(line_ids)
    nfc_lines, line_words, line_counts = _nfc_word_hashes(lines, salt)
    ref = np.array(refs, dtype=np.intp)
    ref_counts = line_counts[ref]
    # The words of every referenced line, in order: line i's words are line_words[start[i] : start[i] + count[i]].
    line_starts = np.cumsum(line_counts) - line_counts
    ref_ends = np.cumsum(ref_counts)
    gather = np.arange(int(ref_ends[-1]) if len(ref_ends) else 0, dtype=np.intp)
    gather += np.repeat(line_starts[ref] - (ref_ends - ref_counts), ref_counts)
    words = line_words[gather]
    text_ends = np.cumsum(lines_per_text)
    counts = np.diff(np.concatenate(([0], ref_ends[text_ends - 1]))) if len(texts) else np.zeros(0, np.int64)
    changed = {i for i, (a, b) in enumerate(zip(nfc_lines, lines, strict=True)) if a is not b}
    if changed:
        starts = text_ends - lines_per_text
        texts = [
            "\n".join(nfc_lines[j] for j in refs[lo:hi]) if changed.intersection(refs[lo:hi]) else text
            for text, lo, hi in zip(texts, starts.tolist(), text_ends.tolist(), strict=True)
        ]
    return texts, words, counts.astype(np.int64)


def _nfc_word_hashes(texts: list[str], salt: np.uint64 | int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``nfc_word_hashes`` of each text as a whole (texts whose NFC form is themselves come back as the same object)."""
    tables = _tables()
    words, counts, unstable = _word_pass(texts, tables)
    changed = {}
    for i in sorted(unstable):
        normal = unicodedata.normalize("NFC", texts[i])
        if normal != texts[i]:
            changed[i] = normal
    if changed:
        redo = list(changed)
        again, again_counts, _ = _word_pass([changed[i] for i in redo], tables)
        ends = np.cumsum(counts)
        parts = np.split(words, ends[:-1]) if len(texts) else []
        again_parts = np.split(again, np.cumsum(again_counts)[:-1])
        for i, part in zip(redo, again_parts, strict=True):
            parts[i] = part
            counts[i] = len(part)
        words = np.concatenate(parts) if parts else words
        texts = [changed.get(i, text) for i, text in enumerate(texts)]
    return texts, _mix64(words ^ np.uint64(salt)), counts


def word_hashes(texts: list[str], salt: np.uint64 | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the case-folded words of the NFC forms of ``texts`` and the number of words of each."""
    _, words, counts = nfc_word_hashes(texts, salt)
    return words, counts


def _nfc(texts: list[str]) -> list[str]:
    """The texts in NFC (what the sketches are computed from)."""
    return nfc_word_hashes(texts)[0]


def _word_hashes(text: str) -> np.ndarray:
    """The word hashes of one text (what ``word_hashes`` gives for it): for tests and one-off use."""
    return word_hashes([text])[0]


# --- signatures -------------------------------------------------------------------------------------------------------


@dataclass
class Sketches:
    """Sketches of a batch of examples, in line order: all a ``DuplicateFinder`` keeps of an example.

    Small (about 250 bytes per example with the defaults) and picklable, so validation workers compute them next to
    the checks and send only these to the process that runs the finder.

    With ``refs`` (made by ``Sketcher.add_example``), ``hi``/``lo`` are not the digest of the canonical text but a
    *candidate key*, equal whenever the canonical texts are equal (it is computed from the words); the finder
    confirms candidate groups by digesting the canonical texts of their members, which it reads again through
    ``refs``. Exact duplicates are rare, so this replaces a whitespace collapse and a digest of every example by
    one of a few.
    """

    lines: np.ndarray  # int64 (n,)
    hi: np.ndarray  # uint64 (n,) first half of the exact digest (of the candidate key with refs)
    lo: np.ndarray  # uint64 (n,)
    sig: np.ndarray  # uint8 (n, signature_width): b-bit value per bin, then the packed own-bin bits
    keys: np.ndarray  # uint64 (n, bands) LSH band keys
    has_words: np.ndarray  # bool (n,) examples without any word take no part in near-duplicate search
    refs: np.ndarray | None = None  # int64 (n,) where each example can be read again (e.g. its line's byte offset)

    def __len__(self) -> int:
        return len(self.lines)

    @classmethod
    def empty(cls, params: MinHashParams) -> Sketches:
        return cls(
            lines=np.empty(0, np.int64),
            hi=np.empty(0, np.uint64),
            lo=np.empty(0, np.uint64),
            sig=np.empty((0, signature_width(params)), np.uint8),
            keys=np.empty((0, params.bands), np.uint64),
            has_words=np.empty(0, bool),
        )

    @classmethod
    def concatenate(cls, batches: list[Sketches], params: MinHashParams) -> Sketches:
        if not batches:
            return cls.empty(params)
        if len(batches) == 1:
            return batches[0]
        with_refs = {b.refs is not None for b in batches}
        if len(with_refs) > 1:
            raise ValueError("cannot concatenate sketches with and without refs (candidate keys and digests)")
        return cls(
            lines=np.concatenate([b.lines for b in batches]),
            hi=np.concatenate([b.hi for b in batches]),
            lo=np.concatenate([b.lo for b in batches]),
            sig=np.concatenate([b.sig for b in batches]),
            keys=np.concatenate([b.keys for b in batches]),
            has_words=np.concatenate([b.has_words for b in batches]),
            refs=np.concatenate([b.refs for b in batches]) if with_refs == {True} else None,  # type: ignore[misc]
        )

    def shifted(self, line_offset: int) -> Sketches:
        """The same sketches with ``line_offset`` added to every line number."""
        if not line_offset:
            return self
        return Sketches(self.lines + line_offset, self.hi, self.lo, self.sig, self.keys, self.has_words, self.refs)


def _first_true(hits: np.ndarray) -> np.ndarray:
    """Index of the first True along the last axis (16 long) of a C-contiguous bool array; ``_NO_BIT`` if none.

    The 16 bools are read as two uint64 words, whose lowest set bit (x & -x, its exponent as a float) gives the
    byte: an argmax along such a short axis costs several times more.
    """
    words = np.ascontiguousarray(hits).view(np.uint64)
    out = np.full(words.shape[:-1], _NO_BIT, dtype=np.uint8)
    for w in (1, 0):
        x = words[..., w]
        lowest = x & (~x + np.uint64(1))
        byte = (np.frexp(lowest.astype(np.float64))[1] - 1) // 8 + 8 * w
        out = np.where(x != 0, byte.astype(np.uint8), out)
    return out


@lru_cache(maxsize=16)
def _sketch_constants(params: MinHashParams) -> tuple[np.uint64, np.uint64, np.uint64, np.ndarray, np.ndarray]:
    """Salts and densification sequences of ``params`` (thousands of BLAKE2b calls: computed once per process)."""
    seed = params.seed
    k = params.num_perm
    # Densification: the bins that empty bin j tries, in order (the same for every example).
    tries = _stable_u64("densify", _DENSIFY_TRIES * k, seed).reshape(_DENSIFY_TRIES, k)
    return (
        _stable_u64("word", 1, seed)[0],
        _stable_u64("shingle", 1, seed)[0],
        _stable_u64("byte", 1, seed)[0],
        _stable_u64("band", params.bands, seed),
        ((tries >> np.uint64(32)) * np.uint64(k) >> np.uint64(32)).astype(np.intp),
    )


class Sketcher:
    """Collects (line, text) pairs and turns each batch into digests, b-bit signatures and band keys at once."""

    def __init__(self, params: MinHashParams) -> None:
        self.params = params
        constants = _sketch_constants(params)
        self._word_salt, self._shingle_salt, self._byte_salt, self._band_salt, self._tries = constants
        self._reset()

    def _reset(self) -> None:
        self._texts: list[str] = []
        self._lines: list[int] = []
        self._refs: list[int] = []
        self._chars = 0

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, line: int, text: str) -> bool:
        """Queue one example by its canonical text; True when the batch is full and ``take`` should be called."""
        if self._refs:
            raise ValueError("a batch holds either canonical texts (add) or examples with refs (add_example)")
        self._texts.append(text)
        self._lines.append(line)
        self._chars += len(text)
        return len(self._lines) >= _BATCH_EXAMPLES or self._chars >= _BATCH_CHARS

    def add_example(self, line: int, obj: dict, ref: int) -> bool:
        """Queue one parsed example that can be read again through ``ref``; True when the batch is full.

        Its signature and band keys are those ``add(line, canonical_example_text(obj))`` gives, computed from
        ``canonical_words_text`` (same words, no whitespace collapse); its ``hi``/``lo`` are a candidate key (see
        ``Sketches``).
        """
        if self._texts and not self._refs:
            raise ValueError("a batch holds either canonical texts (add) or examples with refs (add_example)")
        text = canonical_words_text(obj)
        if len(text) >= _PIECE_CHARS - 1:
            # Word hashing cuts long texts at spaces: cut the canonical text, as ``add`` would.
            text = canonical_example_text(obj, nfc=False)
        self._texts.append(text)
        self._lines.append(line)
        self._refs.append(ref)
        self._chars += len(text)
        return len(self._lines) >= _BATCH_EXAMPLES or self._chars >= _BATCH_CHARS

    def take(self) -> Sketches:
        lines = self._lines
        refs = np.array(self._refs, dtype=np.int64) if self._refs else None
        texts, words, counts = nfc_word_hashes(self._texts, self._word_salt)
        self._reset()
        n = len(texts)
        mins, own = self._minhash(words, counts)
        if refs is None:
            digests = np.frombuffer(
                b"".join([exact_digest(t) for t in texts]),
                dtype="<u8",
            ).reshape(n, 2)
        else:
            digests = self._candidate_keys(mins, counts)
        del texts
        sig = np.empty((n, signature_width(self.params)), dtype=np.uint8)
        sig[:, : self.params.num_perm] = _mix64(mins.astype(np.uint64) ^ self._byte_salt) >> np.uint64(56)
        sig[:, self.params.num_perm :] = np.packbits(own, axis=1)
        return Sketches(
            lines=np.array(lines, dtype=np.int64),
            hi=digests[:, 0].copy(),
            lo=digests[:, 1].copy(),
            sig=sig,
            keys=self._band_keys(mins),
            has_words=counts > 0,
            refs=refs,
        )

    @staticmethod
    def _candidate_keys(mins: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """uint64 (n, 2): a digest of each example's full-width MinHash minima and word count. Equal canonical texts
        have equal words, hence equal keys; unequal texts share a key only when their words (case-folded) agree."""
        rows = np.ascontiguousarray(mins)
        return np.frombuffer(
            b"".join(
                [
                    hashlib.blake2b(row.tobytes() + int(count).to_bytes(8, "little"), digest_size=16).digest()
                    for row, count in zip(rows, counts.tolist(), strict=True)
                ]
            ),
            dtype="<u8",
        ).reshape(len(rows), 2)

    def _minhash(self, words: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per example and bin, the smallest shingle value falling in the bin, densified (uint32 (n, num_perm)),
        and whether the example's own shingles filled the bin (bool (n, num_perm)).

        Shingles are made ``_SHINGLE_COLUMNS`` word positions at a time from shifted slices of the word array, so
        temporaries stay a few MiB even when one example has millions of words.
        """
        n = len(counts)
        k = self.params.shingle_size
        bins = self.params.num_perm
        mins = np.full(n * bins, _U32_MAX, dtype=np.uint32)
        filled = np.zeros(n * bins, dtype=bool)
        total = len(words)
        if total:
            ends = np.cumsum(counts)
            owner = np.repeat(np.arange(n, dtype=np.int64), counts)
            # Shingle p is words p..p+k-1, kept when they all belong to the example of word p (so not at the last
            # k-1 words of an example); an example with fewer than k words still gets one shingle, made of all its
            # words, at its first word.
            valid = np.ones(total, dtype=bool)
            tails = (ends[:, None] - np.arange(1, k, dtype=np.int64)).ravel()
            valid[tails[tails >= np.repeat(ends - counts, k - 1)]] = False
            short = np.flatnonzero((counts > 0) & (counts < k))
            short_first = np.zeros(total, dtype=bool)
            short_first[ends[short] - counts[short]] = True
            valid |= short_first
            padded = np.concatenate((words, np.zeros(k, dtype=np.uint64)))
            for start in range(0, total, _SHINGLE_COLUMNS):
                stop = min(total, start + _SHINGLE_COLUMNS)
                shingles = padded[start:stop].copy()
                # Word hashes are well mixed already: (w0*C + w1)*C + w2 then one mix is enough.
                for i in range(1, k):
                    shingles *= _COMBINE
                    shingles += padded[start + i : stop + i]
                keep = valid[start:stop]
                small = np.flatnonzero(short_first[start:stop])
                if len(small):
                    shingles[small] = padded[small + start]
                    word_end = ends[owner[small + start]]
                    for i in range(1, k):
                        inside = small + start + i < word_end
                        shingles[small] = np.where(
                            inside, shingles[small] * _COMBINE + padded[small + start + i], shingles[small]
                        )
                shingles = shingles[keep]
                shingles ^= self._shingle_salt
                hashed = _mix64_inplace(shingles)
                # One permutation: the high half picks the bin (multiply-shift, any number of bins), the low half,
                # independent of it, is the value whose minimum the bin keeps.
                bin_of = ((hashed >> np.uint64(32)) * np.uint64(bins) >> np.uint64(32)).astype(np.int64)
                cell = owner[start:stop][keep] * bins + bin_of
                np.minimum.at(mins, cell, hashed.astype(np.uint32))  # the low 32 bits
                filled[cell] = True
        mins = mins.reshape(n, bins)
        filled = filled.reshape(n, bins)
        return self._densify(mins, filled, counts > 0), filled

    def _densify(self, mins: np.ndarray, filled: np.ndarray, has_words: np.ndarray) -> np.ndarray:
        sparse = np.flatnonzero(has_words & ~filled.all(axis=1))
        if not len(sparse):
            return mins
        out = mins.copy()
        bins = mins.shape[1]
        lead = min(_DENSIFY_LEAD, _DENSIFY_TRIES)
        # The leading tries of every bin of the sparse rows in one gather, laid out (row, bin, try) so that the
        # first hit is an argmax along contiguous memory; nearly every empty bin is filled by then.
        own = filled[sparse]
        hits = own.take(self._tries[:lead].T.ravel(), axis=1).reshape(len(sparse), bins, lead)
        first = _first_true(hits)
        hit = first != _NO_BIT
        source = self._tries[np.where(hit, first, 0), np.arange(bins)]
        values = mins[sparse]
        fill = hit & ~own
        block = values.copy()
        block[fill] = np.take_along_axis(values, source, axis=1)[fill]
        out[sparse] = block
        local, cols = np.nonzero(~own & ~hit)
        rows = sparse[local]
        for attempt in range(lead, _DENSIFY_TRIES):
            if not len(rows):
                return out
            source_col = self._tries[attempt, cols]
            found = filled[rows, source_col]
            out[rows[found], cols[found]] = mins[rows[found], source_col[found]]
            rows, cols = rows[~found], cols[~found]
        if not len(rows):
            return out
        # Rare (examples with a handful of shingles): the next non-empty bin in circular order.
        for row in np.unique(rows):
            present = np.flatnonzero(filled[row])
            wanted = cols[rows == row]
            nxt = present[np.searchsorted(present, wanted) % len(present)]
            out[row, wanted] = mins[row, nxt]
        return out

    def _band_keys(self, mins: np.ndarray) -> np.ndarray:
        bands, rows = self.params.bands, self.params.rows
        banded = mins[:, : bands * rows].reshape(len(mins), bands, rows)
        keys = np.broadcast_to(self._band_salt, (len(mins), bands)).copy()
        for r in range(rows):
            keys = _mix64(keys * _COMBINE + banded[:, :, r].astype(np.uint64))
        return keys


def exact_digest(text: str) -> bytes:
    """The 16-byte digest of a canonical text (NFC) that exact duplicates share."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def signature_width(params: MinHashParams) -> int:
    """Bytes per example signature: one b-bit value per bin, then one bit per bin telling whether the example's own
    shingles filled it (rather than densification)."""
    return params.num_perm + (params.num_perm + 7) // 8


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray, params: MinHashParams) -> np.ndarray:
    """Estimated Jaccard similarity of each row pair of two signature arrays (float64 (n,)).

    The one-permutation estimator (Li, Owen & Zhang, 2012): matching bins over bins that either example filled
    itself. Bins filled by densification are left out, so for examples with fewer shingles than bins each counted
    bin is a distinct element of the union, sampled without replacement, which is more precise than counting
    densified copies. b-bit correction: unequal minima still agree on one byte with probability 1/256.
    """
    bins = params.num_perm
    own_a = np.unpackbits(sig_a[:, bins:], axis=1, count=bins).view(bool)
    own_b = np.unpackbits(sig_b[:, bins:], axis=1, count=bins).view(bool)
    both = own_a & own_b
    agree = ((sig_a[:, :bins] == sig_b[:, :bins]) & both).sum(axis=1, dtype=np.int64)
    counted = (own_a | own_b).sum(axis=1, dtype=np.int64)
    matches = (agree - both.sum(axis=1, dtype=np.int64) / 256) / (1 - 1 / 256)
    return np.clip(matches / np.maximum(counted, 1), 0.0, 1.0)


# Candidate pairs verified at once: bounds the (pairs x bins) temporaries of ``verify`` to a few MiB.
VERIFY_BATCH_PAIRS = 8192


def verify(
    sig_a: np.ndarray, sig_b: np.ndarray, band: np.ndarray, params: MinHashParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each candidate pair met in bucket ``band``: estimated Jaccard, whether the pair really collides in that
    band (rather than through a 64-bit band-key collision), and whether ``band`` is the first band where it collides.

    A pair sharing several bands is met once per band; counting it only in its first shared band removes the
    repeats without a set of all pairs seen.
    """
    bins = params.bands * params.rows
    band_equal = (sig_a[:, :bins] == sig_b[:, :bins]).reshape(len(sig_a), params.bands, params.rows).all(axis=2)
    collides = band_equal[np.arange(len(sig_a)), band.astype(np.intp)]
    first = collides & (band_equal.argmax(axis=1) == band)
    return estimate_jaccard(sig_a, sig_b, params), collides, first
