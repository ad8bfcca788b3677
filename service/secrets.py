"""Secrets at rest (provider keys, webhook signing secrets): AES-GCM with keys derived from the server secret.

``FINETUNE_PREVIOUS_SECRET_KEYS`` lists retired server secrets that still decrypt, so the server secret can rotate.
"""

from __future__ import annotations

from service.crypto import SecretBox
from service.settings import Settings


def _box(settings: Settings, purpose: str) -> SecretBox:
    retired = [s.get_secret_value() for s in settings.previous_secret_keys]
    return SecretBox.from_secrets([settings.server_secret(), *retired], purpose)


def encrypt_secret(settings: Settings, plain: str, *, purpose: str = "provider-credentials", context: str = "") -> str:
    return _box(settings, purpose).encrypt(plain, context=context)


def decrypt_secret(
    settings: Settings, ciphertext: str, *, purpose: str = "provider-credentials", context: str = ""
) -> str:
    return _box(settings, purpose).decrypt(ciphertext, context=context)
