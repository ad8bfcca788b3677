"""API keys: random secrets shown once, stored as an HMAC with the server secret (fast to check, useless if stolen)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "ftk_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str, server_secret: bytes) -> str:
    return hmac.new(server_secret, key.encode(), hashlib.sha256).hexdigest()


def display_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + 6]
