"""A local base model comes only from the packaged aliases, the operator's model directories or Hugging Face ids; any
other path gets one message whether or not it exists, after symlinks and '..' are resolved."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.providers.local import BaseModelError, resolve_base_model


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def _refusal(spec: str, dirs: list[Path]) -> str:
    with pytest.raises(BaseModelError) as refused:
        resolve_base_model(spec, model_dirs=dirs)
    # The message names what was asked for; apart from that it is one text for every refusal.
    return str(refused.value).replace(spec.strip(), "<spec>")


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    allowed = tmp_path / "models"
    return {
        "allowed": allowed,
        "inside": _model(allowed / "tiny"),
        "gguf": allowed / "q.gguf",
        "outside": _model(tmp_path / "secret-project" / "merged"),
    }


def test_models_under_an_allowed_directory_by_absolute_or_relative_path(layout: dict[str, Path]) -> None:
    dirs = [layout["allowed"]]
    by_path = resolve_base_model(str(layout["inside"]), model_dirs=dirs)
    by_name = resolve_base_model("tiny", model_dirs=dirs)
    assert (by_path.kind, by_path.location) == ("folder", str(layout["inside"].resolve()))
    assert by_name.location == by_path.location
    layout["gguf"].write_bytes(b"GGUF")
    assert resolve_base_model("q.gguf", model_dirs=dirs).kind == "gguf"
    # Inside an allowed directory, what is wrong may be said.
    with pytest.raises(BaseModelError, match=r"no config\.json"):
        (layout["allowed"] / "empty").mkdir()
        resolve_base_model(str(layout["allowed"] / "empty"), model_dirs=dirs)


def test_a_path_outside_gets_the_same_message_whether_it_exists_or_not(layout: dict[str, Path]) -> None:
    dirs = [layout["allowed"]]
    existing = _refusal(str(layout["outside"]), dirs)
    missing = _refusal(str(layout["outside"].parent / "no-such-model"), dirs)
    missing_gguf = _refusal(str(layout["outside"].parent / "no-such.gguf"), dirs)
    existing_dir_no_config = _refusal(str(layout["outside"].parent), dirs)
    assert existing == missing == missing_gguf == existing_dir_no_config
    assert "neither a known alias" in existing
    # Nothing is reachable when no directory is configured.
    assert _refusal(str(layout["inside"]), []) == existing


def test_dot_dot_and_symlink_escapes_are_refused(layout: dict[str, Path]) -> None:
    dirs = [layout["allowed"]]
    expected = _refusal(str(layout["outside"].parent / "no-such-model"), dirs)
    escapes = [
        str(layout["allowed"] / ".." / "secret-project" / "merged"),
        "../secret-project/merged",
        "tiny/../../secret-project/merged",
    ]
    link = layout["allowed"] / "link-to-secret"
    link.symlink_to(layout["outside"], target_is_directory=True)
    escapes += [str(link), "link-to-secret/../link-to-secret"]
    for spec in escapes:
        assert _refusal(spec, dirs) == expected, spec
    # A bare name that is no model inside a directory can only be a Hugging Face id, never the linked folder.
    assert resolve_base_model("link-to-secret", model_dirs=dirs).kind == "hub"


def test_hugging_face_ids_are_ids_never_paths(tmp_path: Path) -> None:
    hub = resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct", model_dirs=[])
    assert (hub.kind, hub.location) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct")
    for bad in ["a/..", "../x", "a/b/c", "a--b/c", "x/.hidden", "name.gguf"]:
        _refusal(bad, [tmp_path])
    # A fine-tune's name means nothing without its project (the service resolves those): never a Hub id here.
    for name in ["job_01abc", "local:job_01abc", "ft:tiny:proj::job_01abc"]:
        _refusal(name, [tmp_path])


def test_a_resolved_source_passes_through_unchanged(layout: dict[str, Path]) -> None:
    source = resolve_base_model("tiny", model_dirs=[layout["allowed"]])
    assert resolve_base_model(source, model_dirs=[]) is source


def test_the_setting_is_the_default(layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import reset_settings_cache

    monkeypatch.setenv("FINETUNE_LOCAL_MODEL_DIRS", f"{layout['allowed']}:/nonexistent-dir")
    reset_settings_cache()
    try:
        assert resolve_base_model("tiny").kind == "folder"
        with pytest.raises(BaseModelError, match="neither a known alias"):
            resolve_base_model(str(layout["outside"]))
    finally:
        monkeypatch.undo()
        reset_settings_cache()
