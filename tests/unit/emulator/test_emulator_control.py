from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from emulator import EmulatorClock, EmulatorConfig
from emulator.samples import training_jsonl

TESTS_DIR = Path(__file__).resolve().parents[2]


def test_state_calls_and_reset_over_http(emu, client: openai.OpenAI, training_file: str) -> None:
    client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    client.fine_tuning.jobs.list()
    calls = httpx.get(f"{emu.url}/_emulator/calls").json()
    assert calls["POST /v1/fine_tuning/jobs"] == 1
    assert calls["GET /v1/fine_tuning/jobs"] == 1
    assert calls["POST /v1/files"] == 1
    state = httpx.get(f"{emu.url}/_emulator/state").json()
    assert [j["status"] for j in state["jobs"]] == ["validating_files"]
    assert len(state["files"]) == 1

    advanced = httpx.post(f"{emu.url}/_emulator/clock/advance", json={"seconds": 25}).json()
    assert advanced["now"] == pytest.approx(emu.now())
    assert client.fine_tuning.jobs.list().data[0].status == "running"
    idle = httpx.post(f"{emu.url}/_emulator/run_until_idle", json={"step": 30}).json()
    assert idle["advanced"] > 0
    assert client.fine_tuning.jobs.list().data[0].status == "succeeded"
    hooks = httpx.post(f"{emu.url}/_emulator/webhooks/drain").json()
    assert [h["event"]["type"] for h in hooks] == ["fine_tuning.job.succeeded"]

    assert httpx.post(f"{emu.url}/_emulator/reset").json() == {"reset": True}
    assert httpx.get(f"{emu.url}/_emulator/calls").json() == {}
    assert client.fine_tuning.jobs.list().data == []
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(training_file)
    assert httpx.post(f"{emu.url}/_emulator/clock/advance", json={"seconds": -1}).status_code == 400


def test_answers_can_be_set_over_http(emu, client: openai.OpenAI) -> None:
    emu_config_answers = {"2+2?": "4"}
    response = httpx.put(f"{emu.url}/_emulator/answers", json={"correct_answers": emu_config_answers})
    assert response.json() == {"correct_answers": 1}
    replies = {
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "2+2?"}])
        .choices[0]
        .message.content
    }
    assert replies <= {"4", "I am not sure."}
    assert httpx.put(f"{emu.url}/_emulator/answers", json={"correct_answers": [1]}).status_code == 400


def test_clock_speed_and_manual_advance() -> None:
    fake = [100.0]
    clock = EmulatorClock(speed=50, start=1_000.0, monotonic=lambda: fake[0])
    assert clock.now() == 1_000.0
    fake[0] += 2
    assert clock.now() == 1_100.0
    assert clock.advance(5) == 1_105.0
    assert clock.real_seconds(100) == 2.0
    frozen = EmulatorClock(speed=0, start=0.0, monotonic=lambda: fake[0])
    fake[0] += 1_000
    assert frozen.now() == 0.0
    assert frozen.real_seconds(3) == 3
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        EmulatorConfig(webhook_secret="plain")
    with pytest.raises(ValueError, match="speed"):
        EmulatorConfig(speed=-1)


def test_runs_as_a_process(sdk: Callable[..., openai.OpenAI]) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0", "--speed", "50", "--api-key", "sk-proc"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(TESTS_DIR), "PATH": ""},
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("OpenAI emulator listening on http://127.0.0.1:"), line
            base_url = line.rsplit(" ", 1)[1].strip()
            client = sdk(base_url, "sk-proc")
            upload = client.files.create(file=("t.jsonl", training_jsonl(10)), purpose="fine-tune")
            assert client.files.retrieve(upload.id).bytes == len(training_jsonl(10))
            with pytest.raises(openai.AuthenticationError):
                sdk(base_url, "sk-other").models.list()
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0
