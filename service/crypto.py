"""Secrets at rest and in logs.

``SecretBox`` encrypts what the service must read back later (provider API keys, webhook signing secrets) with
AES-256-GCM. A ciphertext names the key that made it (``enc:v1:<key id>:<data>``), so keys rotate without a flag day:
the box holds a list of keys, encrypts with the first, decrypts with whichever made the value, and ``rotate``
re-encrypts old values. An optional ``context`` (e.g. the row id) is authenticated with the data, so a ciphertext
copied onto another row does not decrypt there.

``redact`` and ``RedactingFilter`` keep API keys, webhook secrets and bearer tokens out of text and log records.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import threading
import traceback
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CIPHERTEXT_PREFIX = "enc:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
MIN_SERVER_SECRET_BYTES = 16
_HKDF_SALT = b"finetune-control-plane/secretbox/v1"


class DecryptionError(Exception):
    """A ciphertext could not be decrypted: unknown key, tampered data or wrong context. Never carries the data."""


def derive_key(server_secret: bytes | str, purpose: str) -> bytes:
    """A 256-bit key for one purpose (e.g. ``"provider-credentials"``) derived from the server secret with HKDF.

    Separate purposes get independent keys, so one secret can serve API key hashing and several boxes.
    """
    material = server_secret.encode() if isinstance(server_secret, str) else bytes(server_secret)
    if len(material) < MIN_SERVER_SECRET_BYTES:
        raise ValueError(f"server secret must be at least {MIN_SERVER_SECRET_BYTES} bytes")
    if not purpose:
        raise ValueError("key derivation needs a purpose")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_HKDF_SALT, info=purpose.encode())
    return hkdf.derive(material)


def _key_id(key: bytes) -> str:
    digest = hashlib.sha256(b"secretbox-key-id\x00" + key).digest()
    return base64.urlsafe_b64encode(digest[:6]).decode("ascii")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


class SecretBox:
    """Authenticated encryption of short secrets with rotating keys (the first key encrypts)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one key")
        self._ciphers: dict[str, AESGCM] = {}
        self._primary = ""
        for i, key in enumerate(keys):
            if len(key) != KEY_BYTES:
                raise ValueError(f"SecretBox key {i} must be {KEY_BYTES} bytes, got {len(key)}")
            kid = _key_id(key)
            self._ciphers.setdefault(kid, AESGCM(key))
            if i == 0:
                self._primary = kid

    @classmethod
    def from_secrets(cls, server_secrets: Sequence[bytes | str], purpose: str) -> SecretBox:
        """Box keyed by ``derive_key`` of each server secret, current secret first, retired ones after it."""
        return cls([derive_key(s, purpose) for s in server_secrets])

    @property
    def primary_key_id(self) -> str:
        return self._primary

    @staticmethod
    def is_encrypted(value: str | None) -> bool:
        return isinstance(value, str) and value.startswith(CIPHERTEXT_PREFIX)

    @staticmethod
    def _aad(kid: str, context: str) -> bytes:
        return f"{CIPHERTEXT_PREFIX}{kid}".encode() + b"\x00" + context.encode()

    def encrypt(self, plaintext: str | bytes, *, context: str = "") -> str:
        data = plaintext.encode() if isinstance(plaintext, str) else bytes(plaintext)
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._primary].encrypt(nonce, data, self._aad(self._primary, context))
        return f"{CIPHERTEXT_PREFIX}{self._primary}:{_b64encode(nonce + sealed)}"

    def _split(self, token: str) -> tuple[str, bytes]:
        if not self.is_encrypted(token):
            raise DecryptionError(f"value is not a {CIPHERTEXT_PREFIX} ciphertext")
        kid, sep, payload = token[len(CIPHERTEXT_PREFIX) :].partition(":")
        if not sep or not kid or not payload:
            raise DecryptionError("malformed ciphertext")
        try:
            blob = _b64decode(payload)
        except (binascii.Error, ValueError):
            raise DecryptionError("malformed ciphertext: bad base64") from None
        if len(blob) < NONCE_BYTES + 16:
            raise DecryptionError("malformed ciphertext: too short")
        return kid, blob

    def decrypt_bytes(self, token: str, *, context: str = "") -> bytes:
        kid, blob = self._split(token)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(f"ciphertext was made with key {kid!r}, which this server no longer has")
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._aad(kid, context))
        except InvalidTag:
            raise DecryptionError(
                "ciphertext failed authentication (tampered, or decrypted in the wrong context)"
            ) from None

    def decrypt(self, token: str, *, context: str = "") -> str:
        data = self.decrypt_bytes(token, context=context)
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise DecryptionError("decrypted value is not UTF-8 text; use decrypt_bytes") from None

    def needs_rotation(self, token: str) -> bool:
        """True when ``token`` was made with a key other than the current one."""
        kid, _ = self._split(token)
        return kid != self._primary

    def rotate(self, token: str, *, context: str = "") -> str:
        """``token`` re-encrypted with the current key (unchanged when it already is)."""
        if not self.needs_rotation(token):
            return token
        return self.encrypt(self.decrypt_bytes(token, context=context), context=context)


REDACTED = "[REDACTED]"
# Shorter "secrets" are more likely ordinary words or numbers; replacing them would wreck logs for no safety gain.
MIN_KNOWN_SECRET_CHARS = 6

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # OpenAI keys: sk-..., sk-proj-..., sk-svcacct-..., sk-admin-...
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), "sk-" + REDACTED),
    # This service's project API keys.
    (re.compile(r"\bftk_[A-Za-z0-9_\-]{8,}"), "ftk_" + REDACTED),
    # Standard Webhooks secrets.
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_\-]{8,}"), "whsec_" + REDACTED),
    # Authorization header values, whatever the token looks like.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/\-]{6,}=*"), r"\1 " + REDACTED),
    # key=value / "key": "value" forms with an obviously secret name.
    (
        re.compile(
            r"""(?ix)
            (\b(?:api[_-]?key|secret(?:[_-]?key)?|password|passwd|access[_-]?token|refresh[_-]?token|token|
            authorization|x-api-key)["']?\s*[:=]\s*["']?)
            (?!\[REDACTED\]|bearer\s|basic\s)
            ([^\s"',;}&]{6,})
            """
        ),
        r"\1" + REDACTED,
    ),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known secret values and anything shaped like a key, webhook secret or token masked."""
    if not text:
        return text
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_KNOWN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_STANDARD_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "request_id",
    "job_id",
}


class RedactingFilter(logging.Filter):
    """Masks secrets in log records. Attach to handlers (logger filters do not see records of child loggers).

    The message is formatted and redacted in place (``args`` cleared). A traceback is rendered and redacted into
    ``exc_text`` and ``exc_info`` is dropped, because formatters would otherwise render the raw exception again;
    standard formatters print ``exc_text``. String ``extra=`` fields are redacted too.
    """

    def __init__(self, secrets: Iterable[str] = (), name: str = "") -> None:
        super().__init__(name)
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset(s for s in secrets if s)

    def add_secret(self, secret: str) -> None:
        """Also mask this exact value (e.g. a key read from settings at startup)."""
        if secret:
            with self._lock:
                self._secrets = self._secrets | {secret}

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A bad format string must not bypass redaction (or crash logging): keep the raw parts.
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message, secrets)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            rendered = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(rendered, secrets)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_RECORD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value, secrets))
        return True
