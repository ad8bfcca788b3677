"""Parameters of duplicate sketches: signature size, shingle size, seed, and the LSH band layout for a threshold."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from pydantic import BaseModel, ConfigDict

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
