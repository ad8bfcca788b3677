"""Integration fixtures: the OpenAI emulator, and an app + in-process worker configured to use it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@pytest.fixture
def emulator() -> Iterator[Any]:
    from emulator import EmulatorConfig, JobTiming, OpenAIEmulator

    # Fast emulated time: validating 10 s, queued 10 s, 2 s per step -> a small job takes a fraction of a second.
    config = EmulatorConfig(speed=200.0, job_timing=JobTiming(validating_seconds=10, queued_seconds=10, step_seconds=2))
    with OpenAIEmulator(config) as emu:
        yield emu


@dataclass
class Stack:
    client: Any
    headers: dict[str, str]
    project_id: str
    emulator: Any

    def upload(self, content: bytes, name: str = "train.jsonl", **fields: str) -> dict[str, Any]:
        r = self.client.post("/v1/datasets", files={"file": (name, content)}, data=fields, headers=self.headers)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        r = self.client.get(path, headers=self.headers, params=params)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def stack(settings, emulator, worker, project, monkeypatch) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """The whole service in-process (API, worker, sweeper), its OpenAI pointed at the emulator."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("FINETUNE_OPENAI_API_KEY", "sk-test-emulator")
    monkeypatch.setenv("FINETUNE_OPENAI_BASE_URL", emulator.base_url)
    reset_settings_cache()
    with TestClient(create_app(get_settings()), raise_server_exceptions=False) as client:
        yield Stack(client=client, headers=project["headers"], project_id=project["id"], emulator=emulator)
