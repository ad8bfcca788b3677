from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api_schemas.common import RequestModel


class ProjectCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)


class ProjectOut(BaseModel):
    object: str = "project"
    id: str
    name: str
    created_at: datetime


class ApiKeyCreate(RequestModel):
    name: str = Field(default="default", min_length=1, max_length=200)


class ApiKeyOut(BaseModel):
    object: str = "api_key"
    id: str
    project_id: str
    name: str
    prefix: str = Field(description="The first characters of the key, to tell keys apart.")
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret key. Shown only in this response; store it now.")


class ProjectCreated(ProjectOut):
    api_key: ApiKeyCreated
