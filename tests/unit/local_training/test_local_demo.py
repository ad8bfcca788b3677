"""`finetune demo`, the README's main command, end to end with a tiny model: upload, split, train, the evaluation the
job starts when it succeeds, and the closing call through the official openai SDK (the steps the real demo runs with
SmolLM2 and the bundled dataset, in seconds instead of minutes)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import pytest
from rich.console import Console

from helpers import serve

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("openai")


def test_the_demo_runs_to_its_closing_sdk_call(settings, worker, tiny_model_dir, memorisable, tmp_path: Path):  # type: ignore[no-untyped-def]
    from unit.local_training.conftest import COLOURS

    from service.api.app import create_app
    from service.demo import run_demo

    rows = memorisable(120)  # splits of 60 / 12 / 48: every one above the 10 examples a training file needs
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {
        "dataset": "data.jsonl",
        "base_model": str(tiny_model_dir),
        "labels": COLOURS,
        "max_new_tokens": 4,
        "params": {"n_epochs": 2, "batch_size": 4, "max_seq_length": 64, "eval_every_steps": 0},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))

    @contextlib.contextmanager
    def service(s):  # type: ignore[no-untyped-def]
        with serve(create_app(s)) as base_url:
            yield base_url

    out = io.StringIO()
    # The demo quiets the access log for its console; later tests read those loggers.
    levels = {name: logging.getLogger(name).level for name in ("uvicorn.access", "service.http")}
    try:
        code = run_demo(Console(file=out, width=200), demo_dir=tmp_path, service=service)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    text = out.getvalue()
    assert code == 0, text
    assert "held-out exact match" in text and "McNemar" in text
    assert "6. the fine-tuned model through the official openai SDK" in text
    assert 'OpenAI(base_url="http://127.0.0.1:8000/v1"' in text and 'model="ft:' in text
