from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.ids import new_id
from service.modelbase import ts_field


class ProviderFile(SQLModel, table=True):
    """A dataset file uploaded to a provider account: uploaded once per content hash, account and purpose.

    The row is inserted (``uploading``) before the upload starts, so of several jobs wanting the same file only one
    uploads; the others wait for ``ready``. A claim older than ``upload_claim_ttl`` is taken over (its worker died)."""

    __tablename__ = "provider_files"
    __table_args__ = (
        sa.UniqueConstraint("provider", "account", "sha256", "purpose", name="uq_provider_files_content"),
    )

    id: str = Field(default_factory=lambda: new_id("provider_file"), primary_key=True, max_length=40)
    provider: str = Field(max_length=32)
    account: str = Field(max_length=64, description="Hash of base URL + credential: files are per account.")
    sha256: str = Field(max_length=64)
    purpose: str = Field(max_length=32)
    provider_file_id: str | None = Field(default=None, max_length=200)
    status: str = Field(default="uploading", max_length=16, description="uploading | ready")
    claimed_at: datetime = ts_field(default_now=True)
    created_at: datetime = ts_field(default_now=True)


class ProviderCredential(SQLModel, table=True):
    """A project's key for a provider, encrypted at rest."""

    __tablename__ = "provider_credentials"
    __table_args__ = (sa.UniqueConstraint("project_id", "provider", name="uq_provider_credentials_project"),)

    id: str = Field(default_factory=lambda: new_id("credential"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    provider: str = Field(max_length=32)
    base_url: str | None = Field(default=None, max_length=500)
    secret_ciphertext: str
    hint: str = Field(default="", max_length=16, description="Last characters of the key, to recognise it.")
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)
