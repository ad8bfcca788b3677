"""Following OpenAI jobs: provider calls per job-hour, and the time from the provider finishing a job to our
``succeeded``, with provider webhooks and without them (polling only, the baseline), measured in the same run.

The service runs in this process (API on a real port, Celery worker in threads, sweeper) against the OpenAI emulator.
Both sides share one accelerated clock: the emulator's emulated time and the service's ``utcnow`` run ``--speed``
times faster than real time (an emulated hour passes in 3 real minutes at the default x20), while the service keeps
its production polling cadence (``FINETUNE_POLL_SCALE=1``, ``FINETUNE_POLL_MIN_S=1``, ``FINETUNE_POLL_MAX_S=300``,
a sweep every 2 s of emulated time). Figures are in emulated time, i.e. what a deployment would see; the service's
own processing time (real milliseconds) is stretched by the speed factor too, equally in both runs.

    .venv/bin/python bench/job_following.py [--jobs 3] [--speed 20] [--train-minutes 10] [--show-webhooks]

Besides validation (2 min) and queueing (5 min), each job trains ``--train-minutes`` and is finalized for 4 minutes,
all in emulated time. With webhooks configured the worker also polls queued and training jobs 4 times less often
(``WEBHOOK_POLL_FACTOR``): the end of a job is pushed, and polls remain as the safety net for a lost webhook.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

FOLLOW_ROUTES = {
    "GET /v1/fine_tuning/jobs/{job_id}": "retrieve",
    "GET /v1/fine_tuning/jobs/{job_id}/events": "events",
    "GET /v1/fine_tuning/jobs/{job_id}/checkpoints": "checkpoints",
}


class ScaledClock:
    """Real time sped up ``speed`` times from the moment it is made; shared by the service and the emulator."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.origin = time.time()

    def now(self) -> float:
        return self.origin + (time.time() - self.origin) * self.speed


def install_service_clock(clock: ScaledClock) -> None:
    # service.clock.utcnow() reads ``datetime.now`` from its module: swap in a datetime whose now() is scaled.
    import service.clock

    class ScaledDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime.fromtimestamp(clock.now(), tz)

    service.clock.datetime = ScaledDatetime  # type: ignore[attr-defined]


def dataset(n: int = 12) -> bytes:
    import json

    lines = []
    for i in range(n):
        messages = [
            {"role": "system", "content": "You classify support tickets."},
            {"role": "user", "content": f"Ticket {i}: my invoice number {1000 + i} is wrong"},
            {"role": "assistant", "content": "billing" if i % 2 else "account"},
        ]
        lines.append(json.dumps({"messages": messages}))
    return ("\n".join(lines) + "\n").encode()


@dataclass
class ModeResult:
    name: str
    jobs: int
    succeeded: int
    job_hours: float
    calls: dict[str, int]
    lags: list[float]

    @property
    def follow_calls(self) -> int:
        return sum(v for k, v in self.calls.items() if k in FOLLOW_ROUTES)

    @property
    def all_calls(self) -> int:
        return sum(self.calls.values())


def run_mode(
    name: str,
    *,
    webhooks: bool,
    args: argparse.Namespace,
    clock: ScaledClock,
    api_url: str,
    headers: dict[str, str],
    dataset_id: str,
    secret: str,
) -> ModeResult:
    import httpx
    from sqlmodel import select

    from emulator import EmulatorConfig, JobTiming, OpenAIEmulator
    from emulator.clock import EmulatorClock
    from service.db import session_scope
    from service.jobs.models import JobEvent
    from service.settings import reset_settings_cache

    steps = 12 * args.epochs  # 12 examples, batch size 1
    timing = JobTiming(
        validating_seconds=120,
        queued_seconds=300,
        step_seconds=args.train_minutes * 60 / steps,
        finalizing_seconds=240,
    )
    config = EmulatorConfig(
        speed=args.speed,
        job_timing=timing,
        webhook_url=f"{api_url}/v1/provider-webhooks/openai" if webhooks else None,
        webhook_secret=secret,
        tick_interval=0.01,
    )
    emu = OpenAIEmulator(config, clock=EmulatorClock(speed=args.speed, start=clock.now()))
    emu.start()
    os.environ["FINETUNE_OPENAI_BASE_URL"] = emu.base_url
    # The worker relaxes its polling when webhooks are configured, so the baseline runs without a secret at all.
    if webhooks:
        os.environ["FINETUNE_OPENAI_WEBHOOK_SECRET"] = secret
    else:
        os.environ.pop("FINETUNE_OPENAI_WEBHOOK_SECRET", None)
    reset_settings_cache()
    try:
        ids = []
        with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
            for _ in range(args.jobs):
                r = client.post(
                    "/v1/jobs",
                    json={
                        "training_dataset_id": dataset_id,
                        "provider": "openai",
                        "model": "gpt-4.1-mini-2025-04-14",
                        "method": {"type": "supervised", "hyperparameters": {"n_epochs": args.epochs}},
                    },
                )
                r.raise_for_status()
                ids.append(r.json()["id"])
            deadline = time.monotonic() + 600
            while True:
                statuses = [client.get(f"/v1/jobs/{i}").json()["status"] for i in ids]
                if all(s in ("succeeded", "failed", "cancelled") for s in statuses):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name}: jobs did not finish: {statuses}")
                time.sleep(0.2)
        state = emu.state()
        if args.show_webhooks:
            for m in state["webhooks"]:
                emitted = clock.origin + (m["event"]["created_at"] - clock.origin) / clock.speed
                delays = [round((a["at"] - emitted) * 1000) for a in m["attempts"]]
                print("webhook", m["event"]["type"], "attempts (real ms after the event):", delays, flush=True)
        by_ours = {(j.get("metadata") or {}).get("finetune_job_id"): j for j in state["jobs"]}
        lags = []
        job_hours = 0.0
        with session_scope() as s:
            for our_id in ids:
                pj = by_ours[our_id]
                job_hours += (pj["finished_at"] - pj["created_at"]) / 3600
                ev = s.exec(select(JobEvent).where(JobEvent.job_id == our_id, JobEvent.type == "status")).all()
                done = [e.created_at for e in ev if e.data.get("to") == "succeeded"]
                if done:
                    ours_at = done[0].replace(tzinfo=UTC) if done[0].tzinfo is None else done[0]
                    lags.append(ours_at.timestamp() - pj["finished_at"])
        return ModeResult(
            name=name,
            jobs=len(ids),
            succeeded=sum(s == "succeeded" for s in statuses),
            job_hours=job_hours,
            calls=emu.calls(),
            lags=lags,
        )
    finally:
        emu.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3, help="jobs per run")
    parser.add_argument("--speed", type=float, default=20.0, help="emulated seconds per real second")
    parser.add_argument("--train-minutes", type=float, default=10.0, help="training time of each job (emulated)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--show-webhooks", action="store_true", help="print each webhook's delivery delay")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-job-following-"))
    from service.webhooks.signing import generate_secret

    secret = generate_secret()
    os.environ.update(
        FINETUNE_DATA_DIR=str(tmp / "data"),
        FINETUNE_SECRET_KEY="bench-secret-key-0123456789",
        FINETUNE_BROKER_URL="memory://",
        FINETUNE_OPENAI_API_KEY="sk-bench",
        FINETUNE_OPENAI_WEBHOOK_SECRET=secret,
        FINETUNE_POLL_SCALE="1",
        FINETUNE_POLL_MIN_S="1",
        FINETUNE_POLL_MAX_S="300",
        FINETUNE_LOG_LEVEL="WARNING",
    )
    for name in ("FINETUNE_DATABASE_URL", "FINETUNE_REDIS_URL"):
        os.environ.pop(name, None)
    clock = ScaledClock(args.speed)
    install_service_clock(clock)

    import httpx
    import uvicorn

    from service import db
    from service.api.app import create_app
    from service.projects.service import create_project
    from service.settings import get_settings
    from worker.embedded import EmbeddedWorker
    from worker.sweeper import Sweeper

    settings = get_settings()
    db.upgrade(settings)
    with db.session_scope(settings) as session:
        _, _, key = create_project(session, "bench", settings.server_secret())
    headers = {"Authorization": f"Bearer {key}"}

    # The in-process broker is polled (kombu's default: once a second, 60 s of emulated time here); Redis would push.
    from worker.celery_app import app as celery_app

    celery_app.conf.broker_transport_options = {
        **(celery_app.conf.broker_transport_options or {}),
        "polling_interval": 0.2 / args.speed,
    }
    worker = EmbeddedWorker(concurrency=4)
    worker.start()
    # Production sweeps every 2 s and re-sends after 60 s; in emulated time that is 2/speed and 60/speed real seconds.
    sweeper = Sweeper(interval_s=2.0 / args.speed, requeue_after_s=60.0 / args.speed)
    sweeper.start_thread()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    api_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", access_log=False))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)

    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        r = client.post("/v1/datasets", files={"file": ("train.jsonl", dataset())})
        r.raise_for_status()
        dataset_id = r.json()["id"]

    print(
        f"{args.jobs} jobs per run, {args.train_minutes:g} min of training each, speed x{args.speed:g} "
        f"(production polling cadence, emulated time)",
        flush=True,
    )
    results = []
    for name, webhooks in (("polling only (baseline)", False), ("webhooks + polling", True)):
        started = time.monotonic()
        results.append(
            run_mode(
                name,
                webhooks=webhooks,
                args=args,
                clock=clock,
                api_url=api_url,
                headers=headers,
                dataset_id=dataset_id,
                secret=secret,
            )
        )
        print(f"  {name}: done in {time.monotonic() - started:.1f} s real", flush=True)

    server.should_exit = True
    sweeper.stop()
    worker.stop()

    def row(label: str, fn: Any) -> str:
        return f"{label:<44}" + "".join(f"{fn(r):>26}" for r in results)

    print()
    print(f"{'':<44}" + "".join(f"{r.name:>26}" for r in results))
    print(row("jobs succeeded", lambda r: f"{r.succeeded}/{r.jobs}"))
    print(row("provider job-hours (emulated)", lambda r: f"{r.job_hours:.2f}"))
    print(row("following calls per job-hour", lambda r: f"{r.follow_calls / r.job_hours:.1f}"))
    for route, short in FOLLOW_ROUTES.items():
        print(row(f"  {short} per job-hour", lambda r, k=route: f"{r.calls.get(k, 0) / r.job_hours:.1f}"))
    print(row("all provider calls per job-hour", lambda r: f"{r.all_calls / r.job_hours:.1f}"))
    print(row("provider done -> our succeeded, median s", lambda r: f"{statistics.median(r.lags):.1f}"))
    print(row("provider done -> our succeeded, max s", lambda r: f"{max(r.lags):.1f}"))
    print(row("provider done -> our succeeded, mean s", lambda r: f"{statistics.fmean(r.lags):.1f}"))


if __name__ == "__main__":
    main()
