"""Resource ids: a type prefix and a time-ordered random part (ULID-like, Crockford base32, lowercase).

Time order lets list endpoints page newest-first with the id itself as the cursor.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

PREFIXES = {
    "project": "proj",
    "api_key": "key",
    "dataset": "ds",
    "job": "job",
    "job_event": "jevt",
    "evaluation": "eval",
    "evaluation_sample": "evs",
    "event": "evt",
    "webhook_endpoint": "whep",
    "delivery": "dlv",
    "provider_file": "pf",
    "credential": "cred",
    "review_queue": "rvq",
    "review_item": "rvi",
    "review_rating": "rvr",
    "review_rating_revision": "rvrv",
    "distill_run": "dsr",
    "distillation": "dist",
}


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


_lock = threading.Lock()
_last = (0, 0)


def new_id(kind: str) -> str:
    """Ids made in one process are strictly increasing (monotonic ULID): rows written in the same millisecond, such as
    a job's transitions, still list in the order they happened."""
    global _last
    prefix = PREFIXES[kind]
    with _lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _last
        if ms <= last_ms:
            ms, rand = last_ms, last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # leave room to count up within the millisecond
        _last = (ms, rand)
    return f"{prefix}_{_b32(ms, 10)}{_b32(rand, 16)}"
