"""OpenAI-looking identifiers."""

from __future__ import annotations

import os
import random
import string
import threading

_BASE62 = string.ascii_letters + string.digits
_HEX = "0123456789abcdef"

# kind -> (prefix, alphabet, length), following the shapes OpenAI returns.
_SHAPES: dict[str, tuple[str, str, int]] = {
    "file": ("file-", _BASE62, 22),
    "job": ("ftjob-", _BASE62, 24),
    "event": ("ftevent-", _BASE62, 24),
    "checkpoint": ("ftckpt_", _BASE62, 24),
    "batch": ("batch_", _HEX, 32),
    "batch_request": ("batch_req_", _HEX, 32),
    "chat": ("chatcmpl-", _BASE62, 29),
    "request": ("req_", _HEX, 32),
    "webhook_event": ("evt_", _HEX, 32),
    "webhook_message": ("wh_", _HEX, 32),
    "model_tag": ("", string.ascii_letters + string.digits, 8),
}


class IdFactory:
    """Random ids by default, so objects from separate emulator runs never share an id (a test database may outlive
    one emulator); a seed makes them reproducible."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed) if seed is not None else random.Random(os.urandom(16))
        self._lock = threading.Lock()

    def new(self, kind: str) -> str:
        prefix, alphabet, length = _SHAPES[kind]
        with self._lock:
            return prefix + "".join(self._rng.choice(alphabet) for _ in range(length))
