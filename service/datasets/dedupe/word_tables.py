"""Lookup tables over every Unicode code point for the vectorised word tokeniser: the case fold and word kind of
each character, NFC quick-check data, and the powers the polynomial word hash multiplies by.

Building them is Python loops over a million code points, so they are cached on disk (``cache_dir``) and loaded
once per process (``prepare`` loads them before worker processes are forked so that they share the memory).
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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from service.datasets.dedupe.hashing import _COMBINE

log = logging.getLogger(__name__)

# Words are runs of word characters, except that CJK ideographs and kana count one per character: those scripts
# do not separate words with spaces and would otherwise turn a whole sentence into one token. The vectorised
# tokeniser below reproduces this expression through a table (checked against it by the tests).
_CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
_CJK = "".join(f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi in _CJK_RANGES)
_WORD_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_NOT_WORD, _WORD, _CJK_CHAR = 0, 1, 2
# Code points above this have no case mapping (the last cased script, Adlam, ends at U+1E95F).
_CASED_LIMIT = 0x20000

# Texts are tokenised in chunks of at most this many characters (a long text cut at a space, so no word is split):
# the per-character arrays of a chunk stay a few MiB even for a multi-megabyte example.
_PIECE_CHARS = 1 << 18


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
