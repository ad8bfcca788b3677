"""64-bit mixing and seeded constants shared by word hashing and MinHash signatures."""

from __future__ import annotations

import hashlib

import numpy as np

_U32_MAX = np.uint32(0xFFFFFFFF)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_COMBINE = np.uint64(0x9E3779B97F4A7C15)


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
