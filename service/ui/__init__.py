"""The web dashboard at /ui: server-rendered pages over the same domain services as the API.

``install(app)`` adds its routes; pages sign in with a project API key and keep a signed session cookie.
"""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    from service.ui.router import router

    app.include_router(router)
