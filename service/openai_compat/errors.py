"""OpenAI's error shape on the OpenAI-shaped routes, so the SDK raises its usual exceptions.

Every error of the API is built by ``service.api.problems.problem``; it asks ``is_openai_path`` and, for these routes,
answers ``{"error": {message, type, param, code}}`` instead of an RFC 9457 problem. One decision point means a
validation error, a rate limit from the middleware and a domain error all come out the same way on these paths.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

# The paths OpenAI's SDK calls (its resources), under our /v1. Our own routes keep RFC 9457.
OPENAI_PREFIXES = ("/v1/files", "/v1/fine_tuning", "/v1/models", "/v1/chat/completions", "/v1/completions")


def is_openai_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in OPENAI_PREFIXES)


def _error_type(status: int) -> str:
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _param(extra: dict[str, Any]) -> str | None:
    if extra.get("param"):
        return str(extra["param"])
    errors = extra.get("errors") or []
    for err in errors:
        if isinstance(err, dict) and err.get("field"):
            return str(err["field"])
    return None


def _message(detail: str | None, extra: dict[str, Any]) -> str:
    errors = [e for e in (extra.get("errors") or []) if isinstance(e, dict)]
    if not errors:
        return detail or "error"
    # OpenAI's messages name the parameter and the rule in one sentence; our problems list them: join the first few.
    parts = []
    for err in errors[:3]:
        where = err.get("field") or (f"line {err['line']}" if err.get("line") else None)
        text = err.get("message") or err.get("code") or ""
        parts.append(f"{where}: {text}" if where else text)
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{detail} {'; '.join(parts)}{more}" if detail else "; ".join(parts) + more


def openai_error(status: int, code: str | None, detail: str | None, **extra: Any) -> JSONResponse:
    """The response for an error on an OpenAI-shaped route. 422 becomes 400: OpenAI reports invalid parameters as
    400 ``invalid_request_error`` and clients branch on that."""
    status = 400 if status == 422 else status
    body = {
        "error": {
            "message": _message(detail, extra),
            "type": _error_type(status),
            "param": _param(extra),
            "code": code,
        }
    }
    headers = {}
    if extra.get("retry_after") is not None:
        headers["Retry-After"] = str(int(extra["retry_after"]))
    return JSONResponse(body, status_code=status, headers=headers)


_ERROR_SCHEMA = {"$ref": "#/components/schemas/OpenAIErrorResponse"}


def document_errors(operation: dict[str, Any]) -> None:
    """In the OpenAPI description of an OpenAI-shaped operation: every error in OpenAI's shape, and the request
    validation error as the 400 it is answered with (OpenAI never answers 422)."""
    responses = operation.setdefault("responses", {})
    if "422" in responses:
        responses.setdefault("400", responses.pop("422"))
    for code, response in responses.items():
        if code.startswith(("4", "5")):
            response["content"] = {"application/json": {"schema": dict(_ERROR_SCHEMA)}}
            response["description"] = response.get("description") or "OpenAI's error shape."
