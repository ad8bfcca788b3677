"""The committed API description and the migrations must match the code."""

from __future__ import annotations

import json

from service.openai_compat.errors import is_openai_path


def test_openapi_json_is_current():
    from service.api.openapi import ROOT_SPEC, render

    assert ROOT_SPEC.exists(), "openapi.json is missing: run `finetune openapi --write`"
    current = render()
    assert json.loads(ROOT_SPEC.read_text()) == json.loads(current), (
        "openapi.json is stale: run `finetune openapi --write`"
    )


def test_every_operation_documents_problems():
    spec = json.loads(__import__("service.api.openapi", fromlist=["render"]).render())
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path in ("/healthz", "/readyz"):
                continue
            assert any(code.startswith(("4", "5")) for code in op["responses"]), f"{method.upper()} {path}"


def test_migrations_match_models(settings):
    """Autogenerate against the migrated database finds nothing to do."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.db import get_engine
    from service.tables import metadata

    with get_engine(settings).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
    assert diff == [], diff


def test_error_responses_are_documented_as_problems():
    """Request validation answers a problem, not FastAPI's HTTPValidationError; the description must say so, and every
    operation but health documents the rate limit's 429."""
    spec = json.loads(__import__("service.api.openapi", fromlist=["render"]).render())
    for path, ops in spec["paths"].items():
        if path in ("/healthz", "/readyz"):
            continue  # readiness answers its checks, not a problem
        for method, op in ops.items():
            assert "429" in op["responses"], f"{method.upper()} {path}"
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")):
                    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                    # The OpenAI-shaped routes answer OpenAI's error shape, so the SDK raises its usual exceptions.
                    expected = "OpenAIErrorResponse" if is_openai_path(path) else "Problem"
                    assert schema.get("$ref") == f"#/components/schemas/{expected}", f"{method.upper()} {path} {code}"
