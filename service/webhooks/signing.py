"""Standard Webhooks signatures: secrets, outgoing headers and verification of incoming provider webhooks.

The scheme (https://www.standardwebhooks.com/) is HMAC-SHA256 over ``"{id}.{timestamp}.{body}"`` keyed with the
base64-decoded part of a ``whsec_`` secret, sent as ``webhook-signature: v1,<base64>``. Several space-separated
signatures are allowed, which is how a rotated endpoint stays verifiable with its old and its new secret for a while.
OpenAI signs its own webhooks the same way, so ``verify`` serves both directions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping
from datetime import datetime

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300
# 32 bytes is the HMAC-SHA256 block-size sweet spot; the spec accepts 24-64.
SECRET_BYTES = 32
_MIN_SECRET_BYTES = 24
_MAX_SECRET_BYTES = 64


class WebhookSecretError(ValueError):
    """A webhook secret is not ``whsec_`` followed by standard base64 of 24-64 bytes."""


class WebhookVerificationError(Exception):
    """An incoming webhook failed verification; the message says which check failed (never the secret)."""


def generate_secret() -> str:
    """A new endpoint secret, ``whsec_`` + standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise WebhookSecretError(f"webhook secret must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        # Standard Webhooks libraries tolerate missing padding, so we do too.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSecretError("webhook secret is not valid base64 after the whsec_ prefix") from None
    if not _MIN_SECRET_BYTES <= len(key) <= _MAX_SECRET_BYTES:
        raise WebhookSecretError(
            f"webhook secret must encode {_MIN_SECRET_BYTES}-{_MAX_SECRET_BYTES} bytes, got {len(key)}"
        )
    return key


def _as_unix(timestamp: int | datetime) -> int:
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise ValueError("webhook timestamp must be timezone-aware")
        return int(timestamp.timestamp())
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError("webhook timestamp must be an int (unix seconds) or an aware datetime")
    return timestamp


def _check_msg_id(msg_id: str) -> None:
    # The id becomes a header value and part of the signed string: whitespace or control characters would let a
    # caller split headers or make two different (id, timestamp) pairs sign the same bytes.
    if not msg_id or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in msg_id):
        raise ValueError("webhook id must be a non-empty string without whitespace or control characters")


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def _secret_list(secrets: str | Iterable[str]) -> list[str]:
    out = [secrets] if isinstance(secrets, str) else list(secrets)
    if not out:
        raise WebhookSecretError("at least one webhook secret is required")
    return out


def sign(secrets: str | Iterable[str], msg_id: str, timestamp: int | datetime, body: bytes) -> str:
    """The ``webhook-signature`` header value: one ``v1,<b64>`` per secret, space-separated, in the given order."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError("webhook body must be bytes: sign exactly what is sent")
    _check_msg_id(msg_id)
    ts = _as_unix(timestamp)
    return " ".join(
        f"{SIGNATURE_VERSION},{_signature(decode_secret(s), msg_id, ts, bytes(body))}" for s in _secret_list(secrets)
    )


def build_headers(
    secrets: str | Iterable[str],
    msg_id: str,
    body: bytes,
    *,
    timestamp: int | datetime | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """Headers for one delivery attempt.

    ``msg_id`` must stay the same across retries of one event (receivers dedupe on it). The timestamp defaults to the
    real wall clock, not the service's test clock: receivers check it against their own time with a 5 minute window.
    """
    ts = int(time.time()) if timestamp is None else _as_unix(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secrets, msg_id, ts, body),
        "content-type": content_type,
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get(name)
    if value is None or not value.strip():
        raise WebhookVerificationError(f"missing {name} header")
    return value.strip()


def verify(
    secrets: str | Iterable[str],
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    tolerance: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> str:
    """Check an incoming Standard Webhooks request; returns its ``webhook-id`` (dedupe on it: at-least-once delivery).

    Several secrets may be given for the rotation window; any one matching a ``v1`` signature is enough.
    Raises ``WebhookVerificationError`` naming the failed check, ``WebhookSecretError`` for a malformed secret.
    """
    keys = [decode_secret(s) for s in _secret_list(secrets)]
    raw = body.encode() if isinstance(body, str) else bytes(body)
    msg_id = _header(headers, "webhook-id")
    ts_text = _header(headers, "webhook-timestamp")
    sig_header = _header(headers, "webhook-signature")
    try:
        _check_msg_id(msg_id)
    except ValueError as exc:
        raise WebhookVerificationError(f"invalid webhook-id header: {exc}") from None
    if not ts_text.isascii() or not ts_text.isdigit():
        raise WebhookVerificationError("invalid webhook-timestamp header: expected unix seconds")
    ts = int(ts_text)
    current = time.time() if now is None else now
    if ts < current - tolerance:
        raise WebhookVerificationError(f"webhook timestamp too old (more than {tolerance} s)")
    if ts > current + tolerance:
        raise WebhookVerificationError(f"webhook timestamp too new (more than {tolerance} s ahead)")

    offered = []
    for part in sig_header.split():
        version, _, value = part.partition(",")
        # Other versions (e.g. v1a, asymmetric) are allowed next to v1 and simply not ours to check.
        if version == SIGNATURE_VERSION and value:
            offered.append(value.encode())
    if not offered:
        raise WebhookVerificationError("webhook-signature header has no v1 signature")
    expected = [_signature(key, msg_id, ts, raw).encode() for key in keys]
    # Compare every pair so the time taken does not reveal which secret or signature matched.
    matched = False
    for exp in expected:
        for got in offered:
            matched |= hmac.compare_digest(exp, got)
    if not matched:
        raise WebhookVerificationError("no matching webhook signature")
    return msg_id
