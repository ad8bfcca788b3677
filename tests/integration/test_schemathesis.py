"""schemathesis with hostile data: negative testing of every operation (inputs that break the description: wrong
types, out-of-range numbers, missing fields, odd strings) and stateful testing (sequences that create objects and
feed their ids to the next calls). No response is a 5xx, and afterwards every list route still answers 200 for every
project, so nothing stored by the run can break reading.

Bounded for CI (a few examples per operation, short scenarios, about a minute in all) and derandomized, so CI sees the
same inputs every run. A deeper random run: FINETUNE_TEST_FUZZ_EXAMPLES=100 pytest tests/integration/test_schemathesis.py
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

EXAMPLES = int(os.environ.get("FINETUNE_TEST_FUZZ_EXAMPLES", "3"))
DERANDOMIZE = "FINETUNE_TEST_FUZZ_EXAMPLES" not in os.environ


def _load_schema(mode: GenerationMode) -> Any:
    """The description the app serves. Loading it needs no database; each test calls its own fresh app."""
    from service.api.app import create_app

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(migrate=False))
    schema.config.generation.update(modes=[mode])
    return schema


def _has_inputs(ctx: Any) -> bool:
    """Operations with parameters or a body: the others have nothing to make invalid."""
    raw = ctx.operation.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody"))


negative_schema = _load_schema(GenerationMode.NEGATIVE).include(func=_has_inputs)
stateful_schema = _load_schema(GenerationMode.POSITIVE)


def _list_routes(app: Any) -> list[str]:
    """Every GET without path parameters: the lists (and the project's own views) a client reads."""
    spec = app.openapi()
    return sorted(p for p, ops in spec["paths"].items() if "get" in ops and "{" not in p and p.startswith("/v1/"))


@pytest.fixture
def fuzzed_app(settings):  # type: ignore[no-untyped-def]
    """The app with OpenAI webhooks configured, so their routes check signatures (401) instead of answering the
    documented 503 "not configured"."""
    from pydantic import SecretStr

    from service.api.app import create_app

    secret = SecretStr("whsec_c2VjcmV0LWZvci10ZXN0cw==")
    return create_app(settings.model_copy(update={"openai_webhook_secret": secret}))


@pytest.fixture
def lists_still_answer(request, fuzzed_app, project, other_project):  # type: ignore[no-untyped-def]
    """After the test: every list route answers 200 for both projects, whatever the run stored. (A GET operation
    stores nothing: its negative run is not followed by the check.)"""
    from fastapi.testclient import TestClient

    yield
    if "[GET " in request.node.name:
        return
    routes = _list_routes(fuzzed_app)
    assert "/v1/jobs" in routes and "/v1/evaluations" in routes
    with TestClient(fuzzed_app, raise_server_exceptions=False) as client:
        for who in (project, other_project):
            failing = {}
            for route in routes:
                r = client.get(route, headers=who["headers"])
                if r.status_code != 200:
                    failing[route] = (r.status_code, r.text[:200])
            assert not failing, failing


@negative_schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=list(HealthCheck),
)
def test_negative_inputs_never_5xx(case, fuzzed_app, project, lists_still_answer):  # type: ignore[no-untyped-def]
    case.call_and_validate(app=fuzzed_app, headers=project["headers"], checks=[not_a_server_error])


def test_stateful_sequences_never_5xx(fuzzed_app, project, lists_still_answer):  # type: ignore[no-untyped-def]
    workflow = stateful_schema.as_state_machine()

    created: list[str] = []

    class Sequences(workflow):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"app": fuzzed_app, "headers": project["headers"]}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            if case.method == "POST" and response.status_code == 201:
                created.append(case.path)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=[not_a_server_error])

    Sequences.run(
        settings=hypothesis_settings(
            max_examples=max(EXAMPLES * 4, 10),
            stateful_step_count=8,
            deadline=None,
            derandomize=DERANDOMIZE,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
    assert created, "no sequence created anything: the run tested nothing stateful"
