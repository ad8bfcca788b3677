"""Content-addressed file store: each file lives once under ``files/ab/abcdef...`` named by its sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from service.errors import TooLarge
from service.settings import Settings

CHUNK = 1024 * 1024


def blob_path(settings: Settings, sha256: str) -> Path:
    return settings.files_dir / sha256[:2] / sha256


@dataclass
class StagedFile:
    """A file written to a temporary path while being hashed; ``commit`` moves it to its content address."""

    path: Path
    sha256: str
    size: int

    def commit(self, settings: Settings) -> Path:
        dest = blob_path(settings, self.sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            self.path.unlink(missing_ok=True)
        else:
            os.replace(self.path, dest)
        return dest

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class Stager:
    """Incremental writer: feed chunks, get a hashed staged file. Enforces the size limit while streaming."""

    def __init__(self, settings: Settings, max_bytes: int | None = None) -> None:
        tmp_dir = settings.files_dir / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        self._fh = os.fdopen(fd, "wb")
        self.path = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes if max_bytes is not None else settings.max_upload_bytes

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            self.abort()
            raise TooLarge(f"the file is larger than the limit of {self.max_bytes} bytes", code="file_too_large")
        self._hash.update(data)
        self._fh.write(data)

    def finish(self) -> StagedFile:
        self._fh.close()
        return StagedFile(self.path, self._hash.hexdigest(), self.size)

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.path.unlink(missing_ok=True)


def stage_file(settings: Settings, src: Path) -> StagedFile:
    stager = Stager(settings, max_bytes=1 << 62)
    with src.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            stager.write(chunk)
    return stager.finish()


def remove_blob_if_unused(settings: Settings, sha256: str, still_used: bool) -> None:
    if not still_used:
        blob_path(settings, sha256).unlink(missing_ok=True)
