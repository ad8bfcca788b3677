"""``finetune demo``: the whole loop on a fresh machine with no keys and no network.

It starts the embedded service (API, worker, sweeper) in this process, creates a project, uploads the bundled
support-ticket dataset through the API, splits it, fine-tunes SmolLM2-135M-Instruct with the `local` provider,
then scores the base and the fine-tuned model on the held-out split and prints the comparison with confidence
intervals and a paired test. It ends by calling the fine-tuned model through the official ``openai`` SDK (only
``base_url`` and ``api_key`` changed) and prints those lines for the user to copy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

DEMO_DIR = Path(__file__).parent / "data" / "demo"


@contextlib.contextmanager
def embedded_service(settings: Any) -> Iterator[str]:
    """The whole service in this process, as `finetune serve` runs it, on a free port; yields its base URL."""
    import uvicorn

    from service.api.app import create_app
    from worker.embedded import embedded_workers
    from worker.sweeper import Sweeper

    # As in `finetune serve`: training on its own single thread, everything else (job steps, evaluation) beside it.
    workers = embedded_workers(2)
    for worker in workers:
        worker.start()
    sweeper = Sweeper()
    sweeper.start_thread()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None))
    threading.Thread(target=server.run, name="api", daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        sweeper.stop()
        for worker in workers:
            worker.stop()


def _with_evaluation(api: httpx.Client, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """The succeeded job once its evaluation exists: a subscriber to ``job.succeeded`` creates it just after."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = api.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job.get("evaluation_id") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def _wait_evaluation(api: httpx.Client, evaluation_id: str, console: Console) -> dict[str, Any]:
    """One progress bar over every candidate's answers (not a line per poll)."""
    columns = (TextColumn("   answering"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[detail]}"))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(evaluation_id, total=None, detail="")
        while True:
            evaluation = api.get(f"/v1/evaluations/{evaluation_id}").raise_for_status().json()
            if evaluation["status"] in ("succeeded", "failed", "cancelled"):
                return evaluation
            candidates = evaluation["progress"].get("candidates") or {}
            done = sum(p["done"] for p in candidates.values())
            total = sum(p["total"] for p in candidates.values()) or None
            detail = ", ".join(f"{name} {p['done']}/{p['total']}" for name, p in candidates.items())
            progress.update(task, completed=done, total=total, detail=detail)
            time.sleep(1.0)


SDK_SNIPPET = """from openai import OpenAI

client = OpenAI(base_url="{base_url}/v1", api_key="{key}")
answer = client.chat.completions.create(
    model="{model}",
    messages={messages},
    max_tokens={max_tokens},
    temperature=0,
)
print(answer.choices[0].message.content)"""


def _call_with_sdk(
    console: Console, base_url: str, key: str, model: str, messages: list[dict[str, str]], max_tokens: int
) -> str:
    """The fine-tuned model called the way OpenAI code calls it: the official SDK, only base_url and api_key changed."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key=key)
    answer = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    return answer.choices[0].message.content or ""


def _held_out_example(api: httpx.Client, dataset_id: str) -> list[dict[str, str]]:
    """The first held-out example's prompt (its messages up to the answer), for the closing SDK call."""
    content = api.get(f"/v1/files/{dataset_id}/content").raise_for_status().text
    messages = json.loads(content.splitlines()[0])["messages"]
    return [m for m in messages if m["role"] != "assistant"]


def _print_results(console: Console, results: dict[str, Any]) -> None:
    table = Table(title="held-out exact match")
    table.add_column("candidate")
    table.add_column("accuracy", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("macro F1", justify="right")
    table.add_column("p50 latency", justify="right")
    for c in results["candidates"]:
        ci = c["graders"]["exact_match"]["metrics"]["pass_rate"]
        f1 = c["graders"]["labels"]["metrics"].get("macro_f1")
        table.add_row(
            c["candidate"],
            f"{ci['estimate']:.1%}",
            f"{ci['low']:.1%} – {ci['high']:.1%}",
            f"{f1['estimate']:.3f}" if f1 else "-",
            f"{c['latency_p50_s']:.2f} s" if c["latency_p50_s"] is not None else "-",
        )
    console.print(table)
    for comparison in results["comparisons"]:
        exact = comparison["graders"]["exact_match"]
        diff = exact["metrics"]["pass_rate"]
        mc = exact.get("mcnemar") or {}
        console.print(
            f"{comparison['candidate']} - {comparison['baseline']}: {diff['difference']:+.1%} "
            f"(95% CI {diff['low']:+.1%} to {diff['high']:+.1%}); right where {comparison['baseline']} was wrong "
            f"{mc.get('b_only', '?')}, the reverse {mc.get('a_only', '?')}, McNemar p = {diff['p_value']:.2g}"
        )


def run_demo(
    console: Console,
    *,
    demo_dir: Path = DEMO_DIR,
    service: Callable[[Any], contextlib.AbstractContextManager[str]] = embedded_service,
) -> int:
    """``demo_dir`` (a manifest and its dataset) and ``service`` (what serves the API) let a test run the same steps
    with a tiny model."""
    from service import db
    from service.providers.local import is_available
    from service.settings import get_settings

    settings = get_settings()
    # The demo's own requests would fill the console with access lines; the steps above them say what happens.
    for name in ("uvicorn.access", "service.http"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if settings.hf_offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ok, reason = is_available()
    if not ok:
        console.print(f"[red]{reason}[/]")
        return 2
    manifest = json.loads((demo_dir / "manifest.json").read_text())
    db.upgrade(settings)
    started = time.monotonic()
    with service(settings) as base_url:
        try:
            return _steps(console, settings, manifest, demo_dir, base_url, started)
        except httpx.HTTPStatusError as exc:  # the API's problem says what went wrong; a traceback would not
            response = exc.response
            console.print(
                f"[red]{exc.request.method} {exc.request.url.path}: {response.status_code} {response.text}[/]"
            )
            return 1


def _steps(
    console: Console, settings: Any, manifest: dict[str, Any], demo_dir: Path, base_url: str, started: float
) -> int:
    from service import db
    from service.projects.service import create_project
    from service.watch import watch

    with db.session_scope(settings) as session:
        project, _, key = create_project(session, "demo", settings.server_secret())
    api = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    console.print(f"[bold]1.[/] project {project.id} (this demo serves the API on a free port until it ends)")

    with (demo_dir / manifest["dataset"]).open("rb") as fh:
        ds = api.post("/v1/datasets", files={"file": (manifest["dataset"], fh)}).raise_for_status().json()
    console.print(f"[bold]2.[/] dataset {ds['id']}: {ds['status']}, {ds['n_examples']} examples")

    split_req = {"fractions": {"train": 0.5, "validation": 0.1, "test": 0.4}, "seed": 0, "stratify_by": "assistant"}
    splits = api.post(f"/v1/datasets/{ds['id']}/split", json=split_req).raise_for_status().json()["splits"]
    console.print(
        "[bold]3.[/] frozen split: " + ", ".join(f"{k} {v['n_examples']} ({v['id']})" for k, v in splits.items())
    )

    normalization = {"ignore_case": True, "strip": True, "ignore_punctuation": True}
    job_req = {
        "training_dataset_id": splits["train"]["id"],
        "validation_dataset_id": splits["validation"]["id"],
        "provider": "local",
        "model": manifest["base_model"],
        "method": {"type": "supervised", "hyperparameters": manifest["params"]},
        # Evaluated by the service when training succeeds: base vs fine-tuned on the held-out split.
        "evaluation": {
            "dataset_id": splits["test"]["id"],
            "graders": [
                {"type": "exact_match", "name": "exact_match", "normalization": normalization},
                {
                    "type": "classification",
                    "name": "labels",
                    "labels": manifest["labels"],
                    "normalization": normalization,
                },
            ],
            "sampling": {"temperature": 0, "max_tokens": manifest["max_new_tokens"]},
        },
    }
    job = api.post("/v1/jobs", json=job_req).raise_for_status().json()
    console.print(f"[bold]4.[/] fine-tuning {manifest['base_model']} locally: job {job['id']}")
    job = watch(base_url, key, job["id"], interval=2.0, console=console)
    if job["status"] != "succeeded":
        return 1
    job = _with_evaluation(api, job["id"])

    if not job.get("evaluation_id"):
        console.print("[red]the evaluation of the fine-tuned model did not start[/]")
        return 1
    n_test = splits["test"]["n_examples"]
    console.print(f"[bold]5.[/] evaluation {job['evaluation_id']}: base and fine-tuned on {n_test} held-out examples")
    evaluation = _wait_evaluation(api, job["evaluation_id"], console)
    if evaluation["status"] != "succeeded":
        console.print(f"[red]evaluation {evaluation['status']}: {evaluation.get('error')}[/]")
        return 1
    _print_results(console, evaluation["results"])

    example = _held_out_example(api, splits["test"]["id"])
    model = job["fine_tuned_model"]
    reply = _call_with_sdk(console, base_url, key, model, example, manifest["max_new_tokens"])
    # The URLs and the snippet name `finetune serve`'s address: this demo's own server stops when it ends.
    serve_url = f"http://{settings.host}:{settings.port}"
    snippet = SDK_SNIPPET.format(
        base_url=serve_url,
        key=key,
        model=model,
        messages=json.dumps(example),
        max_tokens=manifest["max_new_tokens"],
    )
    console.print(
        f"[bold]6.[/] the fine-tuned model through the official openai SDK: {reply!r}\n"
        f"   Run `finetune serve`, then from any Python with the openai package:\n"
    )
    # Plain and unwrapped, so it copies as it is whatever the terminal's width.
    console.print(snippet, markup=False, highlight=False, soft_wrap=True)
    console.print(f"wall time {time.monotonic() - started:.0f} s")
    console.print(
        f"After `finetune serve` (Authorization: Bearer {key}):\n"
        f"  {serve_url}/v1/jobs/{job['id']}   .../metrics   .../events   .../checkpoints\n"
        f"  {serve_url}/v1/evaluations/{job['evaluation_id']}   .../samples?only=disagreements\n"
        f"  {serve_url}/v1/datasets/{ds['id']}/report\n"
        f"In a browser (sign in with the key): {serve_url}/ui/jobs/{job['id']} (the loss curve) and "
        f"{serve_url}/ui/evaluations/{job['evaluation_id']} (base and fine-tuned side by side, human review)\n"
        "The data stays in the data directory."
    )
    return 0
