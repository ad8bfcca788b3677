"""Words of texts as hashes, a whole batch at a time: texts are case-folded, decoded to code points, classified
with the lookup tables of ``word_tables`` (which reproduce ``word_tables._WORD_RE`` exactly) and each word is hashed
with a polynomial over its code points computed from one prefix sum. Texts are compared in NFC."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

import numpy as np

from service.datasets.dedupe.hashing import _mix64
from service.datasets.dedupe.word_tables import (
    _CJK_CHAR,
    _KIND_MASK,
    _PIECE_CHARS,
    _WORD,
    _not_nfc,
    _Tables,
    _tables,
)


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
