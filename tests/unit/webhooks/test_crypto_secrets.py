from __future__ import annotations

import io
import logging
import os

import pytest

from service.crypto import (
    CIPHERTEXT_PREFIX,
    REDACTED,
    DecryptionError,
    RedactingFilter,
    SecretBox,
    derive_key,
    redact,
)

OLD_SECRET = b"old-server-secret-0123456789abcdef"
NEW_SECRET = b"new-server-secret-fedcba9876543210"
API_KEY = "sk-proj-Abc123def456GHI789jkl012MNO345pqr"


def test_round_trip_of_text_and_bytes() -> None:
    box = SecretBox.from_secrets([NEW_SECRET], "provider-credentials")
    token = box.encrypt(API_KEY)
    assert token.startswith(f"{CIPHERTEXT_PREFIX}{box.primary_key_id}:")
    assert API_KEY not in token
    assert box.decrypt(token) == API_KEY
    assert box.decrypt_bytes(box.encrypt(b"\x00\xffbinary")) == b"\x00\xffbinary"
    assert box.encrypt(API_KEY) != token  # fresh nonce every time
    assert SecretBox.is_encrypted(token) and not SecretBox.is_encrypted(API_KEY) and not SecretBox.is_encrypted(None)


def test_context_binds_a_ciphertext_to_its_row() -> None:
    box = SecretBox([os.urandom(32)])
    token = box.encrypt(API_KEY, context="cred_1")
    assert box.decrypt(token, context="cred_1") == API_KEY
    with pytest.raises(DecryptionError, match="wrong context"):
        box.decrypt(token, context="cred_2")
    with pytest.raises(DecryptionError, match="wrong context"):
        box.decrypt(token)


def test_tampered_and_malformed_ciphertexts_fail_without_leaking() -> None:
    box = SecretBox([os.urandom(32)])
    token = box.encrypt(API_KEY)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad, message in [
        (flipped, "authentication"),
        (API_KEY, "not a enc:v1: ciphertext"),
        (CIPHERTEXT_PREFIX + "nokey", "malformed"),
        (CIPHERTEXT_PREFIX + box.primary_key_id + ":@@@", "bad base64"),
        (CIPHERTEXT_PREFIX + box.primary_key_id + ":AAAA", "too short"),
    ]:
        with pytest.raises(DecryptionError, match=message) as info:
            box.decrypt(bad)
        assert API_KEY not in str(info.value)


def test_key_rotation_old_values_still_decrypt_and_can_be_re_encrypted() -> None:
    old_box = SecretBox.from_secrets([OLD_SECRET], "provider-credentials")
    old_token = old_box.encrypt(API_KEY, context="cred_1")

    rotating = SecretBox.from_secrets([NEW_SECRET, OLD_SECRET], "provider-credentials")
    assert rotating.decrypt(old_token, context="cred_1") == API_KEY
    assert rotating.needs_rotation(old_token)
    new_token = rotating.rotate(old_token, context="cred_1")
    assert not rotating.needs_rotation(new_token)
    assert rotating.rotate(new_token, context="cred_1") == new_token

    new_only = SecretBox.from_secrets([NEW_SECRET], "provider-credentials")
    assert new_only.decrypt(new_token, context="cred_1") == API_KEY
    with pytest.raises(DecryptionError, match="no longer has"):
        new_only.decrypt(old_token, context="cred_1")


def test_key_derivation_is_deterministic_and_separated_by_purpose() -> None:
    a = derive_key(NEW_SECRET, "provider-credentials")
    assert len(a) == 32
    assert a == derive_key(NEW_SECRET.decode(), "provider-credentials")
    assert a != derive_key(NEW_SECRET, "webhook-secrets")
    assert a != derive_key(OLD_SECRET, "provider-credentials")
    token = SecretBox([a]).encrypt("x")
    with pytest.raises(DecryptionError):
        SecretBox.from_secrets([NEW_SECRET], "webhook-secrets").decrypt(token)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        derive_key(b"short", "p")
    with pytest.raises(ValueError, match="purpose"):
        derive_key(NEW_SECRET, "")


def test_box_rejects_bad_keys() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        SecretBox([])
    with pytest.raises(ValueError, match="must be 32 bytes"):
        SecretBox([b"too short"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"calling OpenAI with {API_KEY} now", f"calling OpenAI with sk-{REDACTED} now"),
        ("key ftk_3kq9x0bd2mz7pl4w8e1v", f"key ftk_{REDACTED}"),
        ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=", f"secret whsec_{REDACTED}"),
        ("Authorization: Bearer eyJhbGciOi.J9.abc-_", f"Authorization: Bearer {REDACTED}"),
        ("authorization=Basic dXNlcjpwYXNzd29yZA==", f"authorization=Basic {REDACTED}"),
        ('{"api_key": "plainsecretvalue", "model": "gpt-4o"}', f'{{"api_key": "{REDACTED}", "model": "gpt-4o"}}'),
        ("https://x.example/cb?token=abcdef123456&page=2", f"https://x.example/cb?token={REDACTED}&page=2"),
        ("password=hunter2hunter2", f"password={REDACTED}"),
        ("max_tokens=1000 prompt_tokens: 5 total_tokens=12", "max_tokens=1000 prompt_tokens: 5 total_tokens=12"),
        ("job ftjob_abc123 succeeded with model ft:gpt-4o-mini:org::x1", None),
        ("", None),
    ],
)
def test_redact_patterns(text: str, expected: str | None) -> None:
    assert redact(text) == (text if expected is None else expected)


def test_redact_known_secrets_longest_first() -> None:
    secrets = ["custom-secret-value", "custom-secret-value-extended", "abc"]
    text = "a custom-secret-value-extended b custom-secret-value c abc"
    assert redact(text, secrets) == f"a {REDACTED} b {REDACTED} c abc"


def _logger_with_filter(*secrets: str) -> tuple[logging.Logger, io.StringIO, RedactingFilter]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(note)s"))
    flt = RedactingFilter(secrets)
    handler.addFilter(flt)
    logger = logging.getLogger(f"test.redaction.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream, flt


def test_log_filter_masks_messages_args_extras_and_tracebacks() -> None:
    logger, stream, flt = _logger_with_filter("my-admin-key-123456")
    flt.add_secret("late-added-secret-999")
    logger.info("using key %s and admin %s", API_KEY, "my-admin-key-123456", extra={"note": "whsec_abcdefgh12345678"})
    try:
        raise RuntimeError(f"provider rejected {API_KEY} (late-added-secret-999)")
    except RuntimeError:
        logger.exception("call failed", extra={"note": "-"})
    out = stream.getvalue()
    assert API_KEY not in out
    assert "my-admin-key-123456" not in out and "late-added-secret-999" not in out
    assert "whsec_abcdefgh" not in out
    assert f"using key sk-{REDACTED} and admin {REDACTED} whsec_{REDACTED}" in out
    assert "Traceback (most recent call last)" in out and f"provider rejected sk-{REDACTED}" in out


def test_log_filter_survives_bad_format_arguments() -> None:
    logger, stream, _ = _logger_with_filter()
    logger.info("two %s %s", API_KEY, extra={"note": ""})  # one argument short
    out = stream.getvalue()
    assert API_KEY not in out and f"sk-{REDACTED}" in out
