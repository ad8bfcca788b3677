"""The FastAPI application: routers per domain under /v1, problem+json errors, request ids, limits and metrics.

Middlewares, outermost first: request context (request id, access log, latency metric), rate limit, body size limit,
the check of JSON bodies for values nothing can store.
The rate limit runs before the body limit so a flood of oversized bodies is refused for its rate, cheaply.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import db, metrics
from service.api import docs, problems
from service.api.bodylimit import BodyLimitMiddleware, BodyTooLarge
from service.api.health import router as health_router
from service.api.jsonbody import JsonBodyMiddleware
from service.api.ratelimit import EXEMPT_PATHS, RateLimiter, RateLimitMiddleware
from service.logs import request_id_var
from service.openai_compat.errors import document_errors, is_openai_path
from service.settings import Settings, get_settings

log = logging.getLogger("service.http")

API_DESCRIPTION = """Control plane for fine-tuning language models: check datasets, run training jobs on providers
(`openai`, `local`), follow them, evaluate the results, and receive signed webhooks.

Authenticate with `Authorization: Bearer <project API key>`. Errors are RFC 9457 `application/problem+json` with a stable
`code`. Lists are newest first and paged with `limit` and the `next_cursor` of the previous page passed as `after`.
Creating requests accept an `Idempotency-Key` header."""


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    settings = settings or get_settings()
    if migrate:
        db.ensure_migrated(settings)
    app = FastAPI(
        title="finetune control plane",
        version="0.1.0",
        description=API_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    docs.install(app)  # /docs and /redoc with packaged assets, not a CDN
    problems.install(app)

    from service.datasets.router import router as datasets_router
    from service.datasets.rules_router import router as dataset_rules_router
    from service.deployments.router import router as deployments_router
    from service.distill.router import router as distill_router
    from service.evaluations.router import router as evaluations_router
    from service.events.router import router as events_router
    from service.jobs.artifacts_router import router as job_artifacts_router
    from service.jobs.router import router as jobs_router
    from service.openai_compat.router import router as openai_compat_router
    from service.projects.router import router as projects_router
    from service.providers.router import router as providers_router
    from service.providers.webhooks_router import router as provider_webhooks_router
    from service.reviews.router import router as reviews_router
    from service.webhooks.router import router as webhooks_router

    app.include_router(health_router)
    for router in (
        projects_router,
        distill_router,  # before datasets: /datasets/distill is not a dataset id
        datasets_router,
        dataset_rules_router,
        jobs_router,
        job_artifacts_router,
        deployments_router,
        evaluations_router,
        reviews_router,
        events_router,
        providers_router,
        provider_webhooks_router,
        webhooks_router,
        openai_compat_router,
    ):
        app.include_router(router, prefix="/v1")

    from service import ui

    ui.install(app)  # the web dashboard at /ui (same process, same domain services)

    @app.exception_handler(BodyTooLarge)
    async def _body_too_large(request: Request, exc: BodyTooLarge):  # type: ignore[no-untyped-def]
        response = problems.problem(
            413, "payload_too_large", str(exc.detail), request, max_bytes=settings.max_body_bytes
        )
        response.headers["connection"] = "close"
        return response

    # Added innermost first.
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    limiter = RateLimiter.from_settings(settings)
    app.state.rate_limiter = limiter
    if limiter is not None:
        app.add_middleware(RateLimitMiddleware, limiter=limiter)
    app.add_middleware(RequestContextMiddleware)

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI caches the generated spec; adding the limits' responses again is a no-op.
        return document_limits(generate())

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/jobs/{job_id}``) for metric labels; never the raw path."""
    ctx = (scope.get("fastapi") or {}).get("effective_route_context")
    template = getattr(ctx, "path_format", None)
    if template is None and scope.get("route") is not None:
        template = getattr(scope["route"], "path_format", None)
    return template or "unmatched"


class RequestContextMiddleware:
    """Request id (taken from ``x-request-id`` or made), one access log line, and the latency histogram."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = (Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex)[:64]
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering
        status_sent = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status, status_sent = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status_sent:
                raise
            # Answered here rather than by Starlette's outermost handler, so the log line and the problem carry the
            # request id (the outer handler runs after this middleware has left the request's context).
            log.exception("unhandled error")
            response = problems.problem(
                500, "internal_error", "An internal error occurred; it has been logged.", Request(scope)
            )
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            metrics.observe_request(scope["method"], route_template(scope), status, elapsed)
            if scope["path"] not in EXEMPT_PATHS:
                log.info("%s %s -> %s in %.1f ms", scope["method"], scope["path"], status, elapsed * 1000)
            request_id_var.reset(token)


def _problem_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Problem"}},
            "application/problem+json": {},
        },
    }
    if headers:
        out["headers"] = headers
    return out


_INT_HEADER = {"schema": {"type": "integer"}}
TOO_MANY_REQUESTS = _problem_response(
    "Too Many Requests: the API key's (or, without a valid key, the client address's) rate limit is used up",
    {
        "Retry-After": {"description": "Seconds until a request is allowed again.", **_INT_HEADER},
        "X-RateLimit-Limit": {"description": "Requests the bucket holds (the burst).", **_INT_HEADER},
        "X-RateLimit-Remaining": {"description": "Requests left now.", **_INT_HEADER},
        "X-RateLimit-Reset": {"description": "Seconds until the bucket is full again.", **_INT_HEADER},
    },
)
CONTENT_TOO_LARGE = _problem_response("Content Too Large: the request body is above FINETUNE_MAX_BODY_BYTES")


UNPARSABLE_BODY = _problem_response("Bad Request: the body could not be read as its content type (e.g. not UTF-8)")
VALIDATION_PROBLEM = _problem_response("Validation Error: the problem's `errors` name each invalid field")


def _is_fastapi_validation_error(response: dict[str, Any] | None) -> bool:
    schema = ((response or {}).get("content", {}).get("application/json") or {}).get("schema") or {}
    return schema.get("$ref", "").endswith("/HTTPValidationError")


def document_limits(spec: dict[str, Any]) -> dict[str, Any]:
    """What the middlewares and handlers answer, in the description: 429 on every operation but health, 413 and 400
    (unreadable) on every one with a body, and request validation errors as the problems they are."""
    for path, operations in spec.get("paths", {}).items():
        if path in EXEMPT_PATHS:
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            # A route that documents 429 itself keeps its description and gains the headers.
            responses.setdefault("429", copy.deepcopy(TOO_MANY_REQUESTS)).setdefault(
                "headers", copy.deepcopy(TOO_MANY_REQUESTS["headers"])
            )
            if "requestBody" in operation:
                responses.setdefault("413", copy.deepcopy(CONTENT_TOO_LARGE))
                responses.setdefault("400", copy.deepcopy(UNPARSABLE_BODY))
            # FastAPI documents request validation as its own HTTPValidationError JSON; ours is a problem.
            if _is_fastapi_validation_error(responses.get("422")):
                responses["422"] = copy.deepcopy(VALIDATION_PROBLEM)
            if is_openai_path(path):
                document_errors(operation)
    return spec
