"""Uploading a dataset to a provider once per content hash and account, however many jobs and workers want it: a
claim row decides who uploads, and the provider is asked by hash before any upload (a dead uploader may have finished)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import select

from service.clock import utcnow
from service.datasets.models import Dataset
from service.datasets.storage import blob_path
from service.db import session_scope
from service.jobs.crashpoints import crash_point
from service.providers.base import ProviderError, TrainingProvider
from service.providers.models import ProviderFile
from service.settings import Settings

# An upload claim belongs to a step that holds its job's lease; a claim older than the lease plus the time the upload
# could take at a slow 1 MiB/s belongs to a dead worker and is taken over.
UPLOAD_MIN_BYTES_PER_S = 1024**2


def upload_claim_ttl(settings: Settings, size_bytes: int) -> timedelta:
    return timedelta(seconds=settings.lease_s + size_bytes / UPLOAD_MIN_BYTES_PER_S)


def _file_filter(provider: TrainingProvider, sha256: str, purpose: str) -> tuple[Any, ...]:
    return (
        ProviderFile.provider == provider.name,
        ProviderFile.account == provider.account,
        ProviderFile.sha256 == sha256,
        ProviderFile.purpose == purpose,
    )


def _claim_upload(
    provider: TrainingProvider, sha256: str, purpose: str, ttl: timedelta
) -> tuple[datetime | None, str | None]:
    """Returns ``(our_claim_time, ready_file_id)``: the file is ready, or we now own the upload (claimed at that time),
    or someone else does (both None)."""
    now = utcnow()
    with session_scope() as s:
        row = s.exec(select(ProviderFile).where(*_file_filter(provider, sha256, purpose))).first()
        if row is None:
            s.add(
                ProviderFile(
                    provider=provider.name, account=provider.account, sha256=sha256, purpose=purpose, claimed_at=now
                )
            )
            try:
                s.flush()
                return now, None
            except sa.exc.IntegrityError:
                s.rollback()
                return None, None
        if row.status == "ready":
            return None, row.provider_file_id
        if row.claimed_at > now - ttl:
            return None, None
        res = s.execute(
            sa.update(ProviderFile)
            .where(ProviderFile.id == row.id, ProviderFile.claimed_at == row.claimed_at)
            .values(claimed_at=now)
        )
        return (now if res.rowcount == 1 else None), None


def _release_claim(provider: TrainingProvider, sha256: str, purpose: str, claimed_at: datetime) -> None:
    """Give up our claim after a failed upload so the next attempt (ours or another job's) starts at once.

    The failed call may still have created the file (an answer lost after the provider acted): the next claimant
    looks it up by name before uploading, so releasing never leads to a second copy. A claim someone else has taken
    over since (ours had expired) is left alone."""
    with session_scope() as s:
        s.execute(
            sa.delete(ProviderFile).where(
                *_file_filter(provider, sha256, purpose),
                ProviderFile.status != "ready",
                ProviderFile.claimed_at == claimed_at,
            )
        )


def ensure_file(provider: TrainingProvider, dataset: Dataset, settings: Settings) -> str | None:
    """The provider's id of this dataset's file, uploading it if needed; None while another worker uploads it."""
    purpose = "fine-tune"
    ttl = upload_claim_ttl(settings, dataset.size_bytes or 0)
    claimed_at, file_id = _claim_upload(provider, dataset.sha256, purpose, ttl)
    if file_id is not None or claimed_at is None:
        return file_id
    crash_point("upload.claimed")
    try:
        # A previous owner may have uploaded and died before recording it: the provider knows the file by its hash.
        file_id = provider.find_file(sha256=dataset.sha256, purpose=purpose)
        if file_id is None:
            file_id = provider.upload_file(blob_path(settings, dataset.sha256), sha256=dataset.sha256, purpose=purpose)
    except ProviderError:
        _release_claim(provider, dataset.sha256, purpose, claimed_at)
        raise
    crash_point("upload.sent")
    with session_scope() as s:
        s.execute(
            sa.update(ProviderFile)
            .where(*_file_filter(provider, dataset.sha256, purpose))
            .values(provider_file_id=file_id, status="ready")
        )
    return file_id
