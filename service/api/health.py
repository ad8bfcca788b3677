"""Health checks (never rate limited) and the Prometheus scrape endpoint."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, Response

from api_schemas.common import problem_responses
from service import metrics as metrics_mod
from service.api.deps import SettingsDep, admin_dep
from service.db import ping
from service.queue import producer

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz", summary="The database and the broker are reachable", responses={503: {"description": "Not ready"}}
)
def readyz(settings: SettingsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        ping(settings)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with producer().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics (admin key unless FINETUNE_METRICS_PUBLIC)",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
        **problem_responses(401, 403),
    },
)
def metrics(
    settings: SettingsDep, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Response:
    if not settings.metrics_public:
        admin_dep(settings, authorization)
    body, content_type = metrics_mod.render(settings)
    return Response(body, media_type=content_type)
