"""``finetune demo``: the whole loop on a fresh machine with no keys and no network.

It starts the embedded service (API, worker, sweeper) in this process, creates a project, uploads the bundled
support-ticket dataset through the API, splits it, fine-tunes SmolLM2-135M-Instruct with the `local` provider,
then scores the base and the fine-tuned model on the held-out split and prints the comparison with confidence
intervals and a paired test.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

DEMO_DIR = Path(__file__).parent / "data" / "demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_service(settings: Any, port: int) -> tuple[Any, Any, Any]:
    import uvicorn

    from service.api.app import create_app
    from worker.embedded import EmbeddedWorker
    from worker.sweeper import Sweeper

    worker = EmbeddedWorker(concurrency=2)
    worker.start()
    sweeper = Sweeper()
    sweeper.start_thread()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None))
    threading.Thread(target=server.run, name="api", daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    return worker, sweeper, server


def _label(text: str) -> str:
    return text.strip().lower()


def run_demo(console: Console) -> int:
    from service import db
    from service.evaluations.stats import bootstrap_mean_ci, mcnemar_test
    from service.projects.service import create_project
    from service.providers.local import LocalGenerator, is_available
    from service.providers.local_provider import runs_dir
    from service.settings import get_settings
    from service.watch import watch

    settings = get_settings()
    if settings.hf_offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ok, reason = is_available()
    if not ok:
        console.print(f"[red]{reason}[/]")
        return 2
    manifest = json.loads((DEMO_DIR / "manifest.json").read_text())
    db.upgrade(settings)
    started = time.monotonic()
    port = _free_port()
    worker, sweeper, server = _start_service(settings, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        with db.session_scope(settings) as session:
            project, _, key = create_project(session, "demo", settings.server_secret())
        api = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        console.print(f"[bold]1.[/] project {project.id}; API at {base_url}")

        with (DEMO_DIR / manifest["dataset"]).open("rb") as fh:
            ds = api.post("/v1/datasets", files={"file": (manifest["dataset"], fh)}).raise_for_status().json()
        console.print(f"[bold]2.[/] dataset {ds['id']}: {ds['status']}, {ds['n_examples']} examples")

        split_req = {"fractions": {"train": 0.5, "validation": 0.1, "test": 0.4}, "seed": 0, "stratify_by": "assistant"}
        splits = api.post(f"/v1/datasets/{ds['id']}/split", json=split_req).raise_for_status().json()["splits"]
        console.print(
            "[bold]3.[/] frozen split: " + ", ".join(f"{k} {v['n_examples']} ({v['id']})" for k, v in splits.items())
        )

        job_req = {
            "training_dataset_id": splits["train"]["id"],
            "validation_dataset_id": splits["validation"]["id"],
            "provider": "local",
            "model": manifest["base_model"],
            "method": {"type": "supervised", "hyperparameters": manifest["params"]},
        }
        job = api.post("/v1/jobs", json=job_req).raise_for_status().json()
        console.print(f"[bold]4.[/] fine-tuning {manifest['base_model']} locally: job {job['id']}")
        job = watch(base_url, key, job["id"], interval=2.0, console=console)
        if job["status"] != "succeeded":
            return 1

        test_blob = settings.files_dir / splits["test"]["sha256"][:2] / splits["test"]["sha256"]
        rows = [json.loads(line) for line in test_blob.read_text().splitlines() if line.strip()]
        prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
        expected = [
            _label(next(m["content"] for m in reversed(r["messages"]) if m["role"] == "assistant")) for r in rows
        ]
        adapter = runs_dir(settings) / job["id"] / "output" / "adapter"
        cache = settings.data_dir / "cache"
        console.print(f"[bold]5.[/] scoring base and fine-tuned on {len(rows)} held-out examples (exact match)")
        scores: dict[str, list[bool]] = {}
        for name, path in (("base", None), ("fine-tuned", adapter)):
            gen = LocalGenerator(manifest["base_model"], adapter_path=path, cache_dir=cache)
            outs = gen.generate(prompts, max_new_tokens=manifest["max_new_tokens"], temperature=0.0)
            scores[name] = [_label(o.text) == e for o, e in zip(outs, expected, strict=True)]

        table = Table(title="held-out exact match")
        table.add_column("model")
        table.add_column("accuracy", justify="right")
        table.add_column("95% CI", justify="right")
        for name, passed in scores.items():
            ci = bootstrap_mean_ci([float(p) for p in passed])
            table.add_row(name, f"{ci.estimate:.1%}", f"{ci.low:.1%} – {ci.high:.1%}")
        console.print(table)
        test = mcnemar_test(scores["base"], scores["fine-tuned"])
        console.print(
            f"paired McNemar ({test.method}): fine-tuned right where base wrong {test.b_only}, "
            f"the reverse {test.a_only}, p = {test.p_value:.2g}"
        )
        console.print(f"wall time {time.monotonic() - started:.0f} s")
        console.print(
            f"See it in the API (Authorization: Bearer {key}):\n"
            f"  {base_url}/v1/jobs/{job['id']}   .../metrics   .../events   .../checkpoints\n"
            f"  {base_url}/v1/datasets/{ds['id']}/report\n"
            "The data stays in the data directory; `finetune serve` serves it after this demo ends."
        )
        return 0
    finally:
        server.should_exit = True
        sweeper.stop()
        worker.stop()
