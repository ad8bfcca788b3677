"""schemathesis against the app's own openapi.json, every operation, in-process (ASGI), as a project.

Checks: no 5xx, and responses conform to the description (status code documented, content type, body schema).
The example count is kept small so the whole run takes about a minute; derandomized so CI sees the same inputs.
A deeper, random run: FINETUNE_TEST_FUZZ_EXAMPLES=100 pytest tests/unit/ops/test_ops_schemathesis.py
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _load_schema():  # type: ignore[no-untyped-def]
    """The description the app serves. Loading it needs no database; each test calls its own fresh app."""
    from service.api.app import create_app

    return schemathesis.openapi.from_asgi("/openapi.json", create_app(migrate=False))


schema = _load_schema()


@pytest.fixture
def fuzzed_app(settings):  # type: ignore[no-untyped-def]
    """The app with OpenAI webhooks configured, so their routes check signatures (401) instead of answering the
    documented 503 "not configured", which no_server_error would count as a failure."""
    from pydantic import SecretStr

    from service.api.app import create_app

    secret = SecretStr("whsec_c2VjcmV0LWZvci10ZXN0cw==")
    return create_app(settings.model_copy(update={"openai_webhook_secret": secret}))


@schema.parametrize()
@hypothesis_settings(
    max_examples=int(os.environ.get("FINETUNE_TEST_FUZZ_EXAMPLES", "6")),
    deadline=None,
    derandomize="FINETUNE_TEST_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms(case, fuzzed_app, project):  # type: ignore[no-untyped-def]
    case.call_and_validate(app=fuzzed_app, headers=project["headers"], checks=CHECKS)
