"""The FastAPI application: routers per domain under /v1, problem+json errors, request ids."""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import FastAPI, Request, Response

from service import db
from service.api import problems
from service.api.health import router as health_router
from service.logs import request_id_var
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
    app = FastAPI(title="finetune control plane", version="0.1.0", description=API_DESCRIPTION)
    app.state.settings = settings
    problems.install(app)

    from service.datasets.router import router as datasets_router
    from service.datasets.rules_router import router as dataset_rules_router
    from service.events.router import router as events_router
    from service.jobs.router import router as jobs_router
    from service.projects.router import router as projects_router
    from service.providers.router import router as providers_router
    from service.providers.webhooks_router import router as provider_webhooks_router
    from service.webhooks.router import router as webhooks_router

    app.include_router(health_router)
    for router in (
        projects_router,
        datasets_router,
        dataset_rules_router,
        jobs_router,
        events_router,
        providers_router,
        provider_webhooks_router,
        webhooks_router,
    ):
        app.include_router(router, prefix="/v1")

    @app.middleware("http")
    async def request_context(request: Request, call_next):  # type: ignore[no-untyped-def]
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        rid = rid[:64]
        token = request_id_var.set(rid)
        start = time.perf_counter()
        try:
            response: Response = await call_next(request)
        finally:
            request_id_var.reset(token)
        response.headers["x-request-id"] = rid
        if request.url.path not in ("/healthz", "/readyz"):
            token = request_id_var.set(rid)
            log.info(
                "%s %s -> %s in %.1f ms",
                request.method,
                request.url.path,
                response.status_code,
                (time.perf_counter() - start) * 1000,
            )
            request_id_var.reset(token)
        return response

    return app
