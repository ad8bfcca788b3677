"""Sketches of examples for duplicate search: exact digests, word shingles and one-permutation MinHash signatures.

Every stage runs on a whole batch of texts at once with numpy, so the per-example cost is a few calls into C rather
than a Python loop per word or per permutation:

* words (``words``, with the tables of ``word_tables``): the batch is case-folded and decoded to code points (one ``str.encode('utf-32-le')``), classified with a
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

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from service.datasets.canonical import canonical_example_text, canonical_words_text
from service.datasets.dedupe.hashing import _COMBINE, _U32_MAX, _mix64, _mix64_inplace, _stable_u64
from service.datasets.dedupe.params import MinHashParams
from service.datasets.dedupe.word_tables import _PIECE_CHARS
from service.datasets.dedupe.words import nfc_word_hashes

# Shingles turned into bins at once (bounds the temporaries when one example has millions of words).
_SHINGLE_COLUMNS = 1 << 16
# A batch is sketched when it holds this many examples or characters.
_BATCH_EXAMPLES = 4096
_BATCH_CHARS = 1 << 20
# Densification tries this many pseudo-random bins per empty bin, then takes the next non-empty bin in order.
_DENSIFY_TRIES = 32
_DENSIFY_LEAD = 16  # tries looked at all at once (two uint64 words of bools)
_NO_BIT = 255


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
