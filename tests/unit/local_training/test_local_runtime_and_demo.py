"""Thread and device choice, and the bundled demo dataset (reproducible from its script, valid, balanced)."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from service.providers.local.chat_data import parse_chat_example

DEMO = Path(__file__).resolve().parents[3] / "service" / "data" / "demo"


def _generator_module():
    spec = importlib.util.spec_from_file_location("generate_support_tickets", DEMO / "generate_support_tickets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_demo_data_is_what_the_script_generates() -> None:
    manifest = json.loads((DEMO / "manifest.json").read_text())
    generator = _generator_module()
    rows = generator.generate(560, 20250101)
    shipped = (DEMO / manifest["dataset"]).read_text(encoding="utf-8")
    assert shipped == "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    assert len(shipped.encode()) < 300_000
    assert manifest["labels"] == generator.LABELS


def test_demo_examples_are_valid_chat_and_balanced() -> None:
    manifest = json.loads((DEMO / "manifest.json").read_text())
    lines = (DEMO / manifest["dataset"]).read_text().splitlines()
    answers = Counter()
    for number, line in enumerate(lines, start=1):
        example = parse_chat_example(json.loads(line), line=number)
        assert [m["role"] for m in example.messages] == ["system", "user", "assistant"]
        answers[example.messages[-1]["content"]] += 1
    assert set(answers) == set(manifest["labels"])
    assert max(answers.values()) - min(answers.values()) <= 1
    split = manifest["split"]
    assert split["train"] + split["validation"] + split["test"] <= len(lines)
    test_answers = Counter(json.loads(line)["messages"][-1]["content"] for line in lines[-split["test"] :])
    assert set(test_answers) == set(manifest["labels"])  # every label is scored


def test_threads_follow_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from service.providers.local import runtime

    monkeypatch.setattr(runtime, "available_cpus", lambda: 8)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert runtime.idle_cpus() == 8
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    assert runtime.idle_cpus() == 5
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (12.0, 0.0, 0.0))
    assert runtime.idle_cpus() == 1


def test_device_and_precision_choice() -> None:
    torch = pytest.importorskip("torch")
    from service.providers.local import LocalTrainingError
    from service.providers.local.runtime import select_device, select_precision

    assert select_device("cpu") == torch.device("cpu")
    assert select_precision("auto", torch.device("cpu")) == ("fp32", torch.float32)
    assert select_precision("bf16", torch.device("cpu")) == ("bf16", torch.bfloat16)
    with pytest.raises(LocalTrainingError, match="Unknown device"):
        select_device("tpu-9000")
    if not torch.cuda.is_available():
        assert select_device("auto") == torch.device("cpu")
        with pytest.raises(LocalTrainingError, match="CUDA is not available"):
            select_device("cuda")
