"""Every OpenAI-shaped route, mounted under /v1 beside our own."""

from __future__ import annotations

from fastapi import APIRouter

from service.openai_compat import files, fine_tuning, inference, models

router = APIRouter()
for module in (files, fine_tuning, models, inference):
    router.include_router(module.router)
