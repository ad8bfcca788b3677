"""Exact and near-duplicate detection inside one dataset, and leakage between two datasets, in bounded memory.

* ``params``: ``MinHashParams`` and the LSH band layout for a threshold (``lsh_bands``);
* ``word_tables`` and ``words``: per-code-point lookup tables (cached on disk) and the vectorised word hashes of NFC
  texts; ``hashing``: the 64-bit mixer and seeded constants;
* ``minhash``: word shingles, one-permutation MinHash signatures, LSH band keys (``Sketcher``, ``Sketches``);
* ``storage``: in-memory-then-spilled row stores and hash-partitioned stores;
* ``finder``: ``DuplicateFinder`` and its ``DuplicateResult``;
* ``leakage``: signature files (``build_signature_index``) and the train/test join (``find_leakage``).

Why our own numpy MinHash rather than ``datasketch``: datasketch hashes every shingle with SHA-1 in Python and builds
one ``MinHash`` object per example (about 210 µs per 20-word example here, so about 3.5 minutes per million), and its
LSH index is a dict in memory (or Redis/Cassandra), which breaks the memory bound.
"""

from service.datasets.dedupe.finder import DuplicateFinder, DuplicateResult
from service.datasets.dedupe.leakage import SIGNATURE_VERSION, LeakageResult, build_signature_index, find_leakage
from service.datasets.dedupe.minhash import Sketcher, Sketches
from service.datasets.dedupe.params import DEFAULT_NUM_PERM, DEFAULT_SHINGLE_SIZE, MinHashParams, lsh_bands
from service.datasets.dedupe.word_tables import prepare

__all__ = [
    "DEFAULT_NUM_PERM",
    "DEFAULT_SHINGLE_SIZE",
    "SIGNATURE_VERSION",
    "DuplicateFinder",
    "DuplicateResult",
    "LeakageResult",
    "MinHashParams",
    "Sketcher",
    "Sketches",
    "build_signature_index",
    "find_leakage",
    "lsh_bands",
    "prepare",
]
