"""``finetune jobs watch``: follow a job through the API with a live status line, step progress and loss."""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

TERMINAL = {"succeeded", "failed", "cancelled"}


def watch(
    base_url: str,
    api_key: str,
    job_id: str,
    *,
    interval: float = 2.0,
    console: Console | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """Poll until the job ends; returns the final job. Raises httpx.HTTPStatusError on API errors.

    ``client``: an httpx-style client already pointing at the service (tests pass the app's test client).
    """
    console = console or Console()
    headers = {"Authorization": f"Bearer {api_key}"}
    own = client is None
    if own:
        client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=30)
    try:
        job = _follow(client, headers, job_id, interval, console)
    finally:
        if own:
            client.close()
    if job["status"] == "succeeded":
        console.print(f"[green]succeeded[/]: {job.get('fine_tuned_model')}  trained tokens {job.get('trained_tokens')}")
    elif job["status"] == "failed":
        console.print(f"[red]failed[/]: {(job.get('error') or {}).get('message')}")
    else:
        console.print(f"[yellow]{job['status']}[/]")
    return job


def _follow(client: Any, headers: dict[str, str], job_id: str, interval: float, console: Console) -> dict[str, Any]:
    columns = (
        TextColumn("[bold]{task.fields[status]:<16}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(job_id, total=None, status="…", detail="")
        while True:
            job = client.get(f"/v1/jobs/{job_id}", headers=headers).raise_for_status().json()
            points = client.get(f"/v1/jobs/{job_id}/metrics", headers=headers).raise_for_status().json()["points"]
            fields: dict[str, Any] = {"status": job["status"]}
            if points:
                point = points[-1]
                total, step, loss = point.get("total_steps"), point.get("step", 0), point.get("train_loss")
                loss_text = f"{loss:.4f}" if isinstance(loss, int | float) else "-"
                fields["detail"] = f"step {step}/{total or '?'}  loss {loss_text}"
                progress.update(task, completed=step, total=total or None, **fields)
            else:
                progress.update(task, **fields)
            if job["status"] in TERMINAL:
                return job
            time.sleep(interval)
