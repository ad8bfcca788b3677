"""An OpenAI API emulator for tests and benchmarks: a real HTTP server (FastAPI + uvicorn) with in-memory state.

from emulator import EmulatorConfig, OpenAIEmulator

with OpenAIEmulator(config=EmulatorConfig(speed=0)) as emu:
    client = openai.OpenAI(base_url=emu.base_url, api_key="sk-test")
    ...
    emu.advance(600)          # move emulated time; jobs and batches progress
"""

from .clock import EmulatorClock
from .config import (
    BatchOutcomeRule,
    BatchTiming,
    EmulatorConfig,
    FaultRule,
    JobError,
    JobTiming,
    ModelSpec,
    OutcomeRule,
    RateLimit,
    default_catalog,
)
from .core import EmulatorCore
from .server import OpenAIEmulator
from .webhooks import WebhookMessage

__all__ = [
    "BatchOutcomeRule",
    "BatchTiming",
    "EmulatorClock",
    "EmulatorConfig",
    "EmulatorCore",
    "FaultRule",
    "JobError",
    "JobTiming",
    "ModelSpec",
    "OpenAIEmulator",
    "OutcomeRule",
    "RateLimit",
    "WebhookMessage",
    "default_catalog",
]
