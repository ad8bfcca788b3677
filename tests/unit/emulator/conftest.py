"""Fixtures for the emulator's own tests: a frozen-clock emulator and an SDK client without retries.

One server per test module, reset before each test: starting and stopping uvicorn costs more than the tests.
A module may override `config` (module-scoped) to run its tests against another configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest

from emulator import EmulatorConfig, OpenAIEmulator
from emulator.samples import training_jsonl


@pytest.fixture(scope="module")
def config() -> EmulatorConfig:
    return EmulatorConfig(speed=0)


@pytest.fixture(scope="module")
def shared_emulator(config: EmulatorConfig) -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(config=config) as emulator:
        yield emulator


@pytest.fixture
def emu(shared_emulator: OpenAIEmulator) -> OpenAIEmulator:
    shared_emulator.reset()
    return shared_emulator


@pytest.fixture
def client(emu: OpenAIEmulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0, timeout=10) as sdk:
        yield sdk


@pytest.fixture
def training_file(client: openai.OpenAI) -> str:
    return client.files.create(file=("train.jsonl", training_jsonl(12)), purpose="fine-tune").id


@pytest.fixture
def sdk() -> Iterator[Callable[..., openai.OpenAI]]:
    """Makes SDK clients (no retries unless asked) and closes them after the test."""
    made: list[openai.OpenAI] = []

    def make(base_url: str, api_key: str = "sk-test", *, max_retries: int = 0, **options: object) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, **options))
        return made[-1]

    yield make
    for client in made:
        client.close()
