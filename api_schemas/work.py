"""What the API says about an object's work in progress: the last error its worker met, and how many attempts in a row
have failed (after ``FINETUNE_MAX_STEP_ATTEMPTS`` of them the object fails with code ``step_failed``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class LastError(BaseModel):
    message: str = Field(description="The error of the last failed attempt (kept after a later success).")
    at: datetime | None = Field(default=None, description="When that attempt failed.")
