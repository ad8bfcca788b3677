"""Service roles as real processes for integration tests: ``finetune api``, ``finetune worker``, ``finetune sweeper``.

Each process gets its own environment (database, broker, data directory, provider URL) and a log file; everything
started here is stopped (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def finetune_command() -> list[str]:
    script = Path(sys.executable).with_name("finetune")
    if script.exists():
        return [str(script)]
    found = shutil.which("finetune")
    if found:
        return [found]
    raise RuntimeError("the finetune command is not installed next to this Python (pip install -e .)")


def _die_with_parent() -> None:
    """Runs in the child before exec: on Linux, have the kernel send SIGTERM when the test process dies, so a killed
    pytest run leaves no worker or sweeper behind to take the next run's rows from the shared test database."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout}s; log:\n{self.log()[-4000:]}") from None

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


@dataclass
class Processes:
    env: dict[str, str]
    log_dir: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> Proc:
        env = {**self.env, **(extra_env or {})}
        log_path = self.log_dir / f"{name}-{len(self.started)}.log"
        fh = log_path.open("wb")
        popen = subprocess.Popen(
            [*finetune_command(), *args],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        fh.close()
        proc = Proc(name=name, popen=popen, log_path=log_path)
        self.started.append(proc)
        return proc

    def worker(self, name: str, extra_env: dict[str, str] | None = None) -> Proc:
        # The solo pool runs tasks in the worker process itself, so a crash point kills the worker, not a child.
        return self.start(
            name, "worker", "--queues", "default,webhooks", "--concurrency", "1", "--pool", "solo", extra_env=extra_env
        )

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


def wait_http_ok(url: str, proc: Proc, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}; log:\n{proc.log()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready within {timeout}s; log:\n{proc.log()[-4000:]}")


def base_env(**overrides: str | None) -> dict[str, str]:
    """This process's environment without any FINETUNE_ setting, plus ``overrides`` (None drops a name)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINETUNE_")}
    for key, value in overrides.items():
        if value is not None:
            env[key] = value
    return env
