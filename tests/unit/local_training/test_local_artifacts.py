"""A run's artifacts: which folders count, the streamed tar archive (exact length, readable, chunked), the checksum
cache, and a file that vanishes mid-download. No torch needed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from service.providers.local.artifacts import ArtifactChangedError, list_artifacts, plan_tar


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def test_tar_stream_has_the_planned_length_reads_back_whole_and_comes_in_bounded_chunks(tmp_path: Path) -> None:
    files = {
        "adapter_model.safetensors": os.urandom(5000),
        "adapter_config.json": b'{"r": 4}',
        "nested/tokenizer.json": b"{}",
        "a-file-with-a-rather-long-name-" + "x" * 90 + ".bin": b"long names need pax headers",
    }
    folder = _tree(tmp_path / "adapter", files)
    plan = plan_tar(folder, "adapter")
    chunks = list(plan.iter_bytes(chunk_bytes=1024))
    body = b"".join(chunks)
    assert len(body) == plan.size and plan.size % tarfile.RECORDSIZE == 0
    # Memory stays bounded whatever the folder's size: a chunk, a header, or the final padding to a whole record.
    assert max(len(c) for c in chunks) <= tarfile.RECORDSIZE and len(chunks) > 5000 // 1024
    assert plan.sha256() == hashlib.sha256(body).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        read = {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert read == {f"adapter/{name}": content for name, content in files.items()}
    assert plan_tar(folder, "adapter").key == plan.key  # the same folder plans the same archive


def test_listing_kinds_order_and_checksum_cache(tmp_path: Path) -> None:
    out = tmp_path / "output"
    _tree(out / "adapter", {"adapter_config.json": b"{}", "adapter_model.safetensors": b"a"})
    _tree(out / "merged", {"config.json": b"{}", "model.safetensors": b"m"})
    _tree(out / "checkpoints" / "step-3", {"trainer_state.json": b"{}", "adapter_model.safetensors": b"c"})
    _tree(out / "checkpoints" / "step-9", {"adapter_model.safetensors": b"half written"})  # no state: not one
    _tree(out / "checkpoints" / ".tmp-step-12-abcd", {"trainer_state.json": b"{}"})
    _tree(out / "stray", {"config.json": b"{}"})
    # Oldest first on disk: the checkpoint, then the adapter, then the merged model.
    for age, name in ((30, "checkpoints/step-3"), (20, "adapter"), (10, "merged")):
        stamp = (out / name).stat().st_mtime - age
        os.utime(out / name, (stamp, stamp))
    cache = tmp_path / "artifacts.json"

    listed = list_artifacts(out, checksum_cache=cache)
    assert [(a.name, a.kind) for a in listed] == [
        ("merged", "merged_model"),
        ("adapter", "adapter"),
        ("checkpoint-step-3", "checkpoint"),
    ]
    for artifact in listed:
        assert artifact.sha256 == hashlib.sha256(b"".join(artifact.iter_bytes())).hexdigest()
    stored = json.loads(cache.read_text())
    assert {name: entry["sha256"] for name, entry in stored.items()} == {a.name: a.sha256 for a in listed}

    # A cached checksum is used as long as the archive's headers are unchanged; a changed file gets a new one.
    stored["adapter"]["sha256"] = "cached"
    cache.write_text(json.dumps(stored))
    assert next(a for a in list_artifacts(out, checksum_cache=cache) if a.name == "adapter").sha256 == "cached"
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"retrained")
    again = next(a for a in list_artifacts(out, checksum_cache=cache) if a.name == "adapter")
    assert again.sha256 == hashlib.sha256(b"".join(again.iter_bytes())).hexdigest() != "cached"

    assert list_artifacts(tmp_path / "nothing-here", checksum_cache=tmp_path / "c.json") == []


def test_a_file_that_vanishes_mid_download_fails_the_stream(tmp_path: Path) -> None:
    folder = _tree(tmp_path / "checkpoint", {"a.bin": b"a" * 10, "b.bin": b"b" * 10})
    stream = plan_tar(folder, "checkpoint-step-1").iter_bytes()
    next(stream)  # the first header is out: the trainer now prunes this checkpoint
    (folder / "b.bin").unlink()
    with pytest.raises(ArtifactChangedError, match="vanished"):
        list(stream)
