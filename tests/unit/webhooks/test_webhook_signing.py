from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import openai
import pytest
import standardwebhooks
from openai import InvalidWebhookSignatureError

from service.webhooks.signing import (
    SECRET_PREFIX,
    WebhookSecretError,
    WebhookVerificationError,
    build_headers,
    decode_secret,
    generate_secret,
    sign,
    verify,
)

# The shape OpenAI sends, so the SDK's unwrap can parse it into its own event type.
OPENAI_EVENT = {
    "id": "evt_685343a1381c819085d44c354e1b330e",
    "object": "event",
    "type": "fine_tuning.job.succeeded",
    "created_at": 1750287018,
    "data": {"id": "ftjob_abc123"},
}
BODY = json.dumps(OPENAI_EVENT, separators=(",", ":")).encode()


def _client() -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test-not-used", base_url="http://127.0.0.1:9/v1")


def test_generated_secret_is_whsec_base64_of_32_random_bytes() -> None:
    secrets = {generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    for s in secrets:
        assert s.startswith(SECRET_PREFIX)
        assert len(base64.b64decode(s[len(SECRET_PREFIX) :], validate=True)) == 32
        assert decode_secret(s) == base64.b64decode(s[len(SECRET_PREFIX) :])


def test_signature_matches_the_reference_implementation() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks spec's example secret
    ts = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    expected = standardwebhooks.Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", ts, BODY.decode())
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", ts, BODY) == expected
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", int(ts.timestamp()), BODY) == expected


def test_headers_verify_with_standardwebhooks_openai_sdk_and_ours() -> None:
    secret = generate_secret()
    headers = build_headers(secret, OPENAI_EVENT["id"], BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"}
    assert headers["webhook-id"] == OPENAI_EVENT["id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert headers["webhook-signature"].startswith("v1,")

    assert standardwebhooks.Webhook(secret).verify(BODY, headers) == OPENAI_EVENT
    event = _client().webhooks.unwrap(BODY, headers, secret=secret)
    assert event.type == "fine_tuning.job.succeeded"
    assert event.data.id == "ftjob_abc123"
    assert verify(secret, BODY, headers) == OPENAI_EVENT["id"]


def test_rotation_signs_with_both_secrets_and_each_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    headers = build_headers([new, old], "evt_rot", BODY)
    parts = headers["webhook-signature"].split(" ")
    assert len(parts) == 2 and all(p.startswith("v1,") for p in parts)
    for secret in (old, new):
        standardwebhooks.Webhook(secret).verify(BODY, headers)
        _client().webhooks.unwrap(BODY, headers, secret=secret)
        verify(secret, BODY, headers)

    stranger = generate_secret()
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(stranger).verify(BODY, headers)
    with pytest.raises(InvalidWebhookSignatureError):
        _client().webhooks.unwrap(BODY, headers, secret=stranger)
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify(stranger, BODY, headers)


def test_verify_accepts_any_of_several_configured_secrets() -> None:
    current, previous = generate_secret(), generate_secret()
    headers = build_headers(previous, "evt_1", BODY)
    assert verify([current, previous], BODY, headers) == "evt_1"


def test_verify_accepts_webhooks_signed_by_the_reference_library() -> None:
    secret = generate_secret()
    now = datetime.now(UTC)
    sig = standardwebhooks.Webhook(secret).sign("msg_1", now, BODY.decode())
    headers = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(int(now.timestamp())), "Webhook-Signature": sig}
    assert verify(secret, BODY.decode(), headers) == "msg_1"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h, b: (h, b + b" "), "no matching"),
        (lambda h, b: ({**h, "webhook-id": "evt_other"}, b), "no matching"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing webhook-signature"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "missing webhook-id"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "invalid webhook-timestamp"),
        (lambda h, b: ({**h, "webhook-signature": "v2,abc"}, b), "no v1 signature"),
        (lambda h, b: ({**h, "webhook-id": "evt 1"}, b), "invalid webhook-id"),
    ],
)
def test_verify_rejects_tampering_and_malformed_headers(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    secret = generate_secret()
    headers, body = mutate(build_headers(secret, "evt_1", BODY), BODY)
    with pytest.raises(WebhookVerificationError, match=message):
        verify(secret, body, headers)


def test_verify_enforces_the_timestamp_tolerance() -> None:
    secret = generate_secret()
    headers = build_headers(secret, "evt_1", BODY, timestamp=1_000_000)
    assert verify(secret, BODY, headers, now=1_000_000 + 299) == "evt_1"
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(secret, BODY, headers, now=1_000_000 + 301)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(secret, BODY, headers, now=1_000_000 - 301)
    assert verify(secret, BODY, headers, now=1_000_000 + 3000, tolerance=3600) == "evt_1"


def test_signature_mismatch_error_never_contains_the_secret() -> None:
    secret = generate_secret()
    headers = build_headers(generate_secret(), "evt_1", BODY)
    with pytest.raises(WebhookVerificationError) as info:
        verify(secret, BODY, headers)
    assert secret not in str(info.value) and secret[len(SECRET_PREFIX) :] not in str(info.value)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with"),
        ("whsec_not*base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24-64 bytes"),
        ("whsec_", "24-64 bytes"),
    ],
)
def test_malformed_secrets_are_refused_clearly(secret: str, message: str) -> None:
    with pytest.raises(WebhookSecretError, match=message):
        sign(secret, "evt_1", 1, BODY)


def test_unpadded_secret_is_accepted_like_the_reference_library() -> None:
    secret = generate_secret()
    unpadded = secret.rstrip("=")
    assert decode_secret(unpadded) == decode_secret(secret)


def test_sign_refuses_bad_ids_bodies_and_timestamps() -> None:
    secret = generate_secret()
    with pytest.raises(ValueError, match="whitespace"):
        sign(secret, "evt_1\r\nx-injected: 1", 1, BODY)
    with pytest.raises(ValueError, match="non-empty"):
        sign(secret, "", 1, BODY)
    with pytest.raises(TypeError, match="bytes"):
        sign(secret, "evt_1", 1, BODY.decode())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        sign(secret, "evt_1", datetime(2024, 1, 1), BODY)
    with pytest.raises(WebhookSecretError, match="at least one"):
        sign([], "evt_1", 1, BODY)
