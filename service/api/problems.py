"""RFC 9457 problem responses for every error the API returns."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc as sa_exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ServiceError
from service.logs import request_id_var
from service.openai_compat.errors import is_openai_path, openai_error

log = logging.getLogger(__name__)

STATUS_BY_KIND = {
    "invalid": 422,
    "not_found": 404,
    "conflict": 409,
    "unauthorized": 401,
    "forbidden": 403,
    "too_large": 413,
    "unavailable": 503,
    "rate_limited": 429,
}


def problem(status: int, code: str, detail: str | None, request: Request | None = None, **extra: Any) -> JSONResponse:
    if request is not None and is_openai_path(request.url.path):
        return openai_error(status, code, detail, **extra)
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    rid = request_id_var.get()
    if rid:
        body["request_id"] = rid
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if "retry_after" in extra and extra["retry_after"] is not None:
        headers["Retry-After"] = str(int(extra["retry_after"]))
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        status = STATUS_BY_KIND.get(exc.kind, 400)
        return problem(status, exc.code, exc.detail, request, errors=exc.errors, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
            errors.append(
                {"code": err.get("type", "invalid"), "message": err.get("msg", ""), "field": ".".join(loc) or None}
            )
        return problem(422, "validation_error", "The request is not valid.", request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return problem(exc.status_code, code, str(exc.detail), request)

    @app.exception_handler(sa_exc.DataError)
    async def _unstorable(request: Request, exc: sa_exc.DataError) -> JSONResponse:
        # The database refused a value the schema let through (PostgreSQL: a NUL character in text or JSON, a
        # string longer than its column). That is the client's input, not our failure.
        log.info("database refused a value: %s", str(exc.orig).splitlines()[0] if exc.orig else exc)
        return problem(
            422,
            "unstorable_value",
            "A value in the request cannot be stored or compared (e.g. it contains a NUL character).",
            request,
        )

    @app.exception_handler(sa_exc.TimeoutError)
    async def _pool_exhausted(request: Request, exc: sa_exc.TimeoutError) -> JSONResponse:
        # Every database connection of this process was taken for db_pool_timeout_s: the server is busy, not broken.
        log.warning("no free database connection: %s", exc)
        return problem(
            503, "database_busy", "The server has no free database connection; retry shortly.", request, retry_after=2
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, "internal_error", "An internal error occurred; it has been logged.", request)
