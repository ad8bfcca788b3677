from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from service.ids import new_id
from service.modelbase import Timestamps, ts_field


class Project(Timestamps, SQLModel, table=True):
    __tablename__ = "projects"

    id: str = Field(default_factory=lambda: new_id("project"), primary_key=True, max_length=40)
    name: str = Field(max_length=200)


class ApiKey(SQLModel, table=True):
    """A project API key. Only an HMAC of the key is stored; ``prefix`` lets people tell keys apart."""

    __tablename__ = "api_keys"

    id: str = Field(default_factory=lambda: new_id("api_key"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    name: str = Field(default="default", max_length=200)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(max_length=128, unique=True)
    created_at: datetime = ts_field(default_now=True)
    last_used_at: datetime | None = ts_field(nullable=True)
    revoked_at: datetime | None = ts_field(nullable=True)
