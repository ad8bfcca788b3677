"""What a local run produced (adapter, merged model, checkpoints), and each folder as a tar archive streamed on the fly.

The archive is deterministic (sorted entries, fixed owner and modes, the files' own mtimes), so its length is known
before the first byte is sent and its SHA-256 is the checksum of the download itself. Artifacts are immutable folders
(the trainer renames each into place whole), so a checksum is computed once and cached beside the run, keyed by the
archive's headers (names, sizes, mtimes): a folder that changed gets a new checksum.

No torch here: the API lists and streams artifacts without the `local` extra's heavy imports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from .checkpoints import CHECKPOINTS_DIR, STATE_FILE, atomic_write_text
from .exports import export_path, ready_marker

ArtifactKind = Literal["adapter", "merged_model", "checkpoint", "vllm_adapter", "ollama_bundle", "gguf_model"]

ADAPTER_NAME = "adapter"
MERGED_NAME = "merged"
TAR_CONTENT_TYPE = "application/x-tar"
CHUNK_BYTES = 1 << 20
_STEP_DIR = re.compile(r"^step-(\d+)$")


class ArtifactChangedError(RuntimeError):
    """A file of an artifact changed or vanished while it was being read (e.g. an old checkpoint pruned)."""


@dataclass(frozen=True)
class _Entry:
    header: bytes
    path: Path | None  # None for a directory entry
    size: int


@dataclass(frozen=True)
class TarPlan:
    """Every header of the archive of one folder, computed from stat() alone: the archive's exact length and layout."""

    entries: tuple[_Entry, ...]
    size: int
    key: str  # changes whenever a name, size or mtime does

    def iter_bytes(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The archive, chunk by chunk; memory stays at one chunk whatever the folder's size."""
        written = 0
        for entry in self.entries:
            yield entry.header
            written += len(entry.header)
            if entry.path is None:
                continue
            remaining = entry.size
            try:
                with entry.path.open("rb") as handle:
                    while remaining:
                        chunk = handle.read(min(chunk_bytes, remaining))
                        if not chunk:
                            raise ArtifactChangedError(f"{entry.path} became shorter while it was being sent")
                        remaining -= len(chunk)
                        yield chunk
            except FileNotFoundError as exc:
                raise ArtifactChangedError(f"{entry.path} vanished while it was being sent") from exc
            written += entry.size
            if entry.size % tarfile.BLOCKSIZE:
                padding = tarfile.BLOCKSIZE - entry.size % tarfile.BLOCKSIZE
                written += padding
                yield tarfile.NUL * padding
        yield tarfile.NUL * (self.size - written)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.iter_bytes():
            digest.update(chunk)
        return digest.hexdigest()


def plan_tar(folder: Path, arcname: str) -> TarPlan:
    """The tar archive of `folder`, its members under `arcname/`. Raises ArtifactChangedError if it vanishes."""
    entries: list[_Entry] = []
    try:
        paths = [folder, *sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix())]
        for path in paths:
            stat = path.lstat()
            relative = path.relative_to(folder).as_posix()
            info = tarfile.TarInfo(arcname if relative == "." else f"{arcname}/{relative}")
            info.mtime = int(stat.st_mtime)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_symlink():
                continue  # the trainer writes no links; never follow one out of the run folder
            if path.is_dir():
                info.type, info.mode, size, source = tarfile.DIRTYPE, 0o755, 0, None
            elif path.is_file():
                info.type, info.mode, size, source = tarfile.REGTYPE, 0o644, stat.st_size, path
            else:
                continue  # sockets, fifos: nothing the trainer writes
            info.size = size
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            entries.append(_Entry(header, source, size))
    except FileNotFoundError as exc:
        raise ArtifactChangedError(f"{folder} changed while it was being listed") from exc
    body = sum(len(e.header) + e.size + (-e.size % tarfile.BLOCKSIZE) for e in entries)
    # Like tarfile.close(): two zero blocks end the archive, then zeros up to a whole record.
    end = body + 2 * tarfile.BLOCKSIZE
    total = end + (-end % tarfile.RECORDSIZE)
    key = hashlib.sha256(b"".join(e.header for e in entries)).hexdigest()
    return TarPlan(entries=tuple(entries), size=total, key=key)


def archive_filename(prefix: str, name: str) -> str:
    """The download's file name; unpacked, it is a folder named `name`."""
    return f"{prefix}-{name}.tar"


@dataclass(frozen=True)
class Artifact:
    name: str
    kind: ArtifactKind
    path: Path
    created_at: datetime
    plan: TarPlan
    sha256: str

    @property
    def size_bytes(self) -> int:
        return self.plan.size

    @property
    def content_type(self) -> str:
        return TAR_CONTENT_TYPE

    def filename(self, prefix: str) -> str:
        return archive_filename(prefix, self.name)

    def iter_bytes(self) -> Iterator[bytes]:
        return self.plan.iter_bytes()


def _candidates(output_dir: Path) -> list[tuple[str, ArtifactKind, Path]]:
    found: list[tuple[str, ArtifactKind, Path]] = []
    if (output_dir / ADAPTER_NAME / "adapter_config.json").is_file():
        found.append((ADAPTER_NAME, "adapter", output_dir / ADAPTER_NAME))
    if (output_dir / MERGED_NAME / "config.json").is_file():
        found.append((MERGED_NAME, "merged_model", output_dir / MERGED_NAME))
    # Exports are renamed into place whole, like the trainer's folders; a merged export is the folder above.
    for export, kind in (("vllm", "vllm_adapter"), ("ollama", "ollama_bundle"), ("gguf", "gguf_model")):
        folder = export_path(output_dir, export)
        if (folder / ready_marker(export)).is_file():
            found.append((export, kind, folder))
    checkpoints = output_dir / CHECKPOINTS_DIR
    if checkpoints.is_dir():
        for child in checkpoints.iterdir():
            match = _STEP_DIR.match(child.name)
            # A folder without its state file is not a checkpoint the trainer could resume from.
            if match and (child / STATE_FILE).is_file():
                found.append((f"checkpoint-{child.name}", "checkpoint", child))
    return found


def list_artifacts(output_dir: Path, *, checksum_cache: Path) -> list[Artifact]:
    """The run's artifacts, newest first. Checksums missing from `checksum_cache` are computed and stored."""
    cache = _read_cache(checksum_cache)
    fresh: dict[str, dict[str, str]] = {}
    out: list[Artifact] = []
    for name, kind, path in _candidates(Path(output_dir)):
        try:
            plan = plan_tar(path, name)
            created = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            known = cache.get(name) or {}
            digest = known.get("sha256") if known.get("key") == plan.key else None
            if digest is None:
                digest = plan.sha256()
        except (ArtifactChangedError, FileNotFoundError):
            continue  # a checkpoint pruned by the running trainer while we looked: it is gone, not broken
        fresh[name] = {"key": plan.key, "sha256": digest}
        out.append(Artifact(name=name, kind=kind, path=path, created_at=created, plan=plan, sha256=digest))
    if fresh != cache:
        # On a read-only data directory the checksums are computed again next time; nothing else is wrong.
        with contextlib.suppress(OSError):
            atomic_write_text(checksum_cache, json.dumps(fresh, indent=2, sort_keys=True))
    out.sort(key=lambda a: (a.created_at, a.name), reverse=True)
    return out


def _read_cache(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
