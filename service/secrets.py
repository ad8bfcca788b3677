"""Provider credentials at rest: encrypted with a key derived from the server secret."""

from __future__ import annotations

from service.crypto import SecretBox
from service.settings import Settings


def _box(settings: Settings) -> SecretBox:
    return SecretBox.from_server_secret(settings.server_secret())


def encrypt_secret(settings: Settings, plain: str) -> str:
    return _box(settings).encrypt(plain)


def decrypt_secret(settings: Settings, ciphertext: str) -> str:
    return _box(settings).decrypt(ciphertext)
