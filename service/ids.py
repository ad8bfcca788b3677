"""Resource ids: a type prefix and a time-ordered random part (ULID-like, Crockford base32, lowercase).

Time order lets list endpoints page newest-first with the id itself as the cursor.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

PREFIXES = {
    "project": "proj",
    "api_key": "key",
    "dataset": "ds",
    "job": "job",
    "job_event": "jevt",
    "evaluation": "eval",
    "event": "evt",
    "webhook_endpoint": "whep",
    "delivery": "dlv",
    "provider_file": "pf",
    "credential": "cred",
}


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id(kind: str) -> str:
    prefix = PREFIXES[kind]
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_b32(ms, 10)}{_b32(rand, 16)}"
