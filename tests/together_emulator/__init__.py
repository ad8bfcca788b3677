"""A Together API emulator for tests: a real HTTP server (FastAPI + uvicorn) with in-memory state, speaking the parts
of Together's API this service uses (files, fine-tunes, events, checkpoints, cancel, price estimates, adapter
downloads, OpenAI-compatible chat completions), with emulated time and faults on demand.

from together_emulator import TogetherEmulator

with TogetherEmulator(speed=0) as emu:
    ... base_url=emu.base_url ...
    emu.advance(600)          # move emulated time; jobs progress
"""

from .server import TogetherEmulator
from .state import JobTiming, TogetherState

__all__ = ["JobTiming", "TogetherEmulator", "TogetherState"]
