"""The FastAPI application: routes, OpenAI-shaped errors, and the cross-cutting middleware."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .core import EmulatorCore
from .errors import ApiError, server_error
from .middleware import EmulatorMiddleware
from .routes import batches, chat, control, files, fine_tuning, models


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def create_app(core: EmulatorCore) -> FastAPI:
    app = FastAPI(title="OpenAI API emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.core = core
    routes = []
    for module in (files, fine_tuning, models, chat, batches, control):
        app.include_router(module.router)
        routes.extend(module.router.routes)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error_response(ApiError(400, f"Invalid request: {first.get('msg', 'malformed')}", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            message = f"Invalid URL ({request.method} {request.url.path})"
            return _error_response(ApiError(404, message))
        return _error_response(ApiError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        return _error_response(server_error(f"The OpenAI emulator failed: {type(exc).__name__}: {exc}"))

    app.add_middleware(EmulatorMiddleware, core=core, routes=routes)
    return app
