"""Evaluation generation throughput against the OpenAI emulator, beside the sequential loop of OpenAI's guide.

    .venv/bin/python bench/eval_throughput.py [--samples 1000] [--baseline-samples 100] [--fresh]

The emulator runs in its own process (so it does not share a GIL with the client) with a fixed latency per chat
completion and a requests-per-minute limit enforced as a token bucket, with OpenAI's headers and 429s. By default the
provider's bucket is emptied before each measured run, as it is after earlier traffic: throughput is then bounded by
the refill rate, which is what "sustained" means, and a client that exceeds it meets real 429s. ``--fresh`` starts
from a full bucket instead (a minute's allowance available at once).

Both candidates are measured in the same run against the same server:
- ours: ``generate_all`` (concurrency, limiter learning from headers, our retries);
- baseline: ``for sample: client.chat.completions.create(...)`` with the SDK defaults (max_retries=2), as in OpenAI's
  guide. It runs ``--baseline-samples`` samples (default 100): its rate is the same per sample, and 1,000 would take
  over three minutes; pass ``--baseline-samples 1000`` for the full count.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

MODEL = "gpt-4o-mini"
MODEL_ID = "gpt-4o-mini-2024-07-18"


def _serve(conn: Any, latency: float, rpm: int) -> None:
    """Child process: run the emulator until told to stop; on "drain", spend the model's whole request bucket."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from emulator import EmulatorConfig, OpenAIEmulator, RateLimit
    from emulator.errors import ApiError

    limit = RateLimit(requests_per_minute=rpm)
    config = EmulatorConfig(chat_latency_seconds=latency, default_rate_limit=limit, rate_limits={MODEL_ID: limit})
    with OpenAIEmulator(config=config) as emu:
        conn.send(emu.base_url)
        while (command := conn.recv()) != "stop":
            if command == "drain":
                spent = 0
                try:
                    while True:
                        emu.core.limiter.take(MODEL_ID)
                        spent += 1
                except ApiError:
                    pass
                conn.send(spent)


def _messages(i: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": f"Evaluation question number {i}: what is {i} + {i}?"},
    ]


def run_ours(base_url: str, samples: int, concurrency: int) -> dict[str, Any]:
    import os

    from service.evaluations.generation import ClientConfig, GenRequest, GenResult, RateLimits, generate_all_sync
    from service.settings import reset_settings_cache

    # The emulator is this run's configured OpenAI: a loopback address the outbound layer trusts only as such.
    os.environ["FINETUNE_OPENAI_BASE_URL"] = base_url
    reset_settings_cache()

    requests = (
        GenRequest(key=f"s{i}", model=MODEL, messages=_messages(i), params={"temperature": 0, "max_tokens": 64})
        for i in range(samples)
    )
    results: list[GenResult] = []
    started = time.monotonic()
    stats = generate_all_sync(
        requests,
        on_result=results.append,
        client_config=ClientConfig(base_url=base_url, api_key="sk-bench"),
        limits=RateLimits(max_concurrency=concurrency),
    )
    elapsed = time.monotonic() - started
    ok = sum(r.ok for r in results)
    return {
        "samples": samples,
        "done": ok,
        "failed": samples - ok,
        "seconds": elapsed,
        "seen_429": stats.rate_limited,
        "unretried_429": stats.rate_limited_unretried,
        "p50": stats.latency_p50_s,
        "p95": stats.latency_p95_s,
        "max_in_flight": stats.max_in_flight,
        "learned_rpm": stats.limits.get(MODEL, {}).get("requests_per_minute"),
    }


def run_service(base_url: str, samples: int, concurrency: int) -> dict[str, Any]:
    """The whole service path: POST /v1/evaluations, then the worker's run (answers stored per sample in SQLite as
    they arrive, graded, summarised with intervals), timed from the run's start to the evaluation's end."""
    import json
    import os
    import tempfile

    data_dir = tempfile.mkdtemp(prefix="bench-eval-")
    os.environ.update(
        FINETUNE_DATA_DIR=data_dir,
        FINETUNE_OPENAI_API_KEY="sk-bench",
        FINETUNE_OPENAI_BASE_URL=base_url,
        FINETUNE_LOG_LEVEL="WARNING",
    )
    from fastapi.testclient import TestClient

    from service import db
    from service.api.app import create_app
    from service.evaluations.run import run
    from service.projects.service import create_project
    from service.settings import get_settings, reset_settings_cache

    reset_settings_cache()
    settings = get_settings()
    db.upgrade(settings)
    with db.session_scope(settings) as session:
        _, _, key = create_project(session, "bench", settings.server_secret())
    headers = {"Authorization": f"Bearer {key}"}
    lines = "".join(
        json.dumps({"messages": [*_messages(i), {"role": "assistant", "content": f"{2 * i}."}]}) + "\n"
        for i in range(samples)
    )
    with TestClient(create_app(settings)) as client:
        ds = client.post("/v1/datasets", files={"file": ("test.jsonl", lines.encode())}, headers=headers).json()
        if ds["status"] != "ready":  # large files are checked by a worker; do it here
            from service.datasets.service import validate_task

            validate_task(ds["id"], settings)
        body = {
            "dataset_id": ds["id"],
            "candidates": [{"kind": "model", "name": "model", "provider": "openai", "model": MODEL}],
            "graders": [{"type": "exact_match", "name": "exact"}, {"type": "chrf", "name": "chrf"}],
            "sampling": {"temperature": 0, "max_tokens": 64},
            "limits": {"max_concurrency": concurrency},
        }
        created = client.post("/v1/evaluations", json=body, headers=headers).json()
        started = time.monotonic()
        run(created["id"])
        elapsed = time.monotonic() - started
        ev = client.get(f"/v1/evaluations/{created['id']}", headers=headers).json()
    result = ev["results"]["candidates"][0]
    return {
        "samples": samples,
        "done": result["n"] - result["n_failed"],
        "failed": result["n_failed"] + (samples - result["n"]),
        "seconds": elapsed,
        "seen_429": None,
        "unretried_429": None,
        "p50": result["latency_p50_s"],
        "p95": result["latency_p95_s"],
        "status": ev["status"],
    }


def run_sequential(base_url: str, samples: int) -> dict[str, Any]:
    """The loop from OpenAI's guide, with the SDK's default retries; 429s counted on the wire."""
    import httpx
    import openai

    seen_429 = 0

    def count(response: httpx.Response) -> None:
        nonlocal seen_429
        seen_429 += response.status_code == 429

    http = httpx.Client(event_hooks={"response": [count]}, timeout=600)
    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", http_client=http)
    failed = unretried = 0
    latencies = []
    started = time.monotonic()
    for i in range(samples):
        t0 = time.monotonic()
        try:
            client.chat.completions.create(model=MODEL, messages=_messages(i), temperature=0, max_tokens=64)
            latencies.append(time.monotonic() - t0)
        except openai.RateLimitError:
            failed += 1
            unretried += 1
        except openai.APIError:
            failed += 1
    elapsed = time.monotonic() - started
    client.close()
    latencies.sort()
    return {
        "samples": samples,
        "done": samples - failed,
        "failed": failed,
        "seconds": elapsed,
        "seen_429": seen_429,
        "unretried_429": unretried,
        "p50": latencies[len(latencies) // 2] if latencies else None,
        "p95": latencies[int(len(latencies) * 0.95)] if latencies else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--baseline-samples", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.2, help="emulator seconds per chat completion")
    parser.add_argument("--rpm", type=int, default=3000, help="emulator requests per minute")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--fresh", action="store_true", help="start from a full provider bucket")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child, args.latency, args.rpm), daemon=True)
    server.start()
    base_url = parent.recv()
    limit_per_s = args.rpm / 60.0

    def prepare() -> str:
        if args.fresh:
            return "full bucket"
        parent.send("drain")
        return f"bucket emptied ({parent.recv()} requests spent first)"

    try:
        state = prepare()
        ours = run_ours(base_url, args.samples, args.concurrency)
        prepare()
        service = run_service(base_url, args.samples, args.concurrency)
        prepare()
        base = run_sequential(base_url, args.baseline_samples)
    finally:
        parent.send("stop")
        server.join(timeout=10)

    print(
        f"Evaluation throughput: emulator latency {args.latency * 1000:.0f} ms, limit {args.rpm} requests/min "
        f"({limit_per_s:.1f}/s), {state} before each run, Python {sys.version.split()[0]}"
    )
    header = (
        f"{'':34}{'samples':>8}{'seconds':>9}{'samples/s':>11}{'% of limit':>12}{'failed':>8}"
        f"{'429s seen':>11}{'429s unretried':>16}{'p50 ms':>8}{'p95 ms':>8}"
    )
    print(header)
    rates = {}
    for name, r in (
        (f"generate_all, concurrency {args.concurrency}", ours),
        ("service evaluation (stored, graded)", service),
        ("sequential SDK loop (guide)", base),
    ):
        rate = r["done"] / r["seconds"]
        rates[name] = rate
        seen = "-" if r["seen_429"] is None else r["seen_429"]
        unretried = "-" if r["unretried_429"] is None else r["unretried_429"]
        print(
            f"{name:34}{r['samples']:>8}{r['seconds']:>9.1f}{rate:>11.1f}{100 * rate / limit_per_s:>11.1f}%"
            f"{r['failed']:>8}{seen:>11}{unretried:>16}"
            f"{(r['p50'] or 0) * 1000:>8.0f}{(r['p95'] or 0) * 1000:>8.0f}"
        )
    ours_rate, service_rate, base_rate = rates.values()
    print(
        f"speed-up over the sequential loop: {ours_rate / base_rate:.1f}x; limit learned from headers: "
        f"{ours['learned_rpm']} requests/min; most requests in flight: {ours['max_in_flight']}"
    )
    print(f"the service path (per-sample rows, grading, bootstrap summary) ran at {service_rate / ours_rate:.0%} of it")
    sustained = 100 * ours_rate / limit_per_s
    passed = (
        sustained >= 90
        and ours["failed"] == 0
        and ours["unretried_429"] == 0
        and service["failed"] == 0
        and 100 * service_rate / limit_per_s >= 90
    )
    print(
        f"target: >= 90% of the limit sustained, 0 failed samples, 0 unretried 429s -> "
        f"{sustained:.1f}%, {ours['failed']} failed, {ours['unretried_429']} unretried: {'PASS' if passed else 'FAIL'}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
