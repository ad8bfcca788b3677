"""The ``finetune`` command: server roles, database and project administration, offline tools."""

from __future__ import annotations

import importlib
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from service import db, logs
from service.settings import get_settings

app = typer.Typer(help="Fine-tuning control plane.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database administration.", no_args_is_help=True)
projects_app = typer.Typer(help="Projects and API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
jobs_app = typer.Typer(help="Training jobs (through the API).", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
app.add_typer(jobs_app, name="jobs")


def _setup() -> None:
    s = get_settings()
    known = (s.admin_key, s.openai_api_key, s.openai_webhook_secret, s.secret_key)
    logs.configure(s.log_level, s.log_json, secrets=tuple(k.get_secret_value() for k in known if k is not None))


def _run_api(host: str | None, port: int | None) -> None:
    import uvicorn

    from service.api.app import create_app

    s = get_settings()
    uvicorn.run(
        create_app(s),
        host=host or s.host,
        port=port or s.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default FINETUNE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default FINETUNE_PORT).")] = None,
) -> None:
    """Everything in one process: API, worker and sweeper (the embedded default: SQLite + in-process broker)."""
    _setup()
    s = get_settings()
    db.upgrade(s)
    embedded = importlib.import_module("worker.embedded")
    sweeper_mod = importlib.import_module("worker.sweeper")
    workers = embedded.embedded_workers(s.worker_concurrency)  # the train queue gets its own single thread
    for worker in workers:
        worker.start()
    sweeper = sweeper_mod.Sweeper()
    sweeper.start_thread()
    typer.echo(f"finetune serving on http://{host or s.host}:{port or s.port} (data in {s.data_dir})", err=True)
    # uvicorn drains on SIGTERM, then raises it again; handled (ignored) here, it ends in the finally below: exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        _run_api(host, port)
    finally:
        sweeper.stop()
        for worker in workers:
            worker.stop()


@app.command()
def inference(
    host: Annotated[str | None, typer.Option(help="Bind address (default FINETUNE_INFERENCE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default FINETUNE_INFERENCE_PORT).")] = None,
) -> None:
    """Local models for the other roles: one process per device keeps base models resident, applies fine-tunes'
    adapters per request and batches everyone's requests (point FINETUNE_INFERENCE_URL of the API and workers here)."""
    import uvicorn

    from service.inference.server import create_inference_app

    _setup()
    s = get_settings()
    typer.echo(f"finetune inference on http://{host or s.inference_host}:{port or s.inference_port}", err=True)
    uvicorn.run(
        create_inference_app(s),
        host=host or s.inference_host,
        port=port or s.inference_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


@app.command()
def demo() -> None:
    """Fine-tune SmolLM2-135M on a bundled task, offline, and compare it with the base model on held-out data."""
    from rich.console import Console

    from service.demo import run_demo

    _setup()
    raise typer.Exit(run_demo(Console()))


@app.command()
def api(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """The HTTP API only (run workers and a sweeper separately, against PostgreSQL and Redis)."""
    _setup()
    db.upgrade(get_settings())
    _run_api(host, port)


@app.command()
def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues: default, webhooks, train.")
    ] = "default,webhooks,train",
    concurrency: Annotated[int | None, typer.Option(help="Processes (default FINETUNE_WORKER_CONCURRENCY).")] = None,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, threads, solo.")] = "prefork",
) -> None:
    """A Celery worker. Use a separate worker with ``--queues train --concurrency 1`` per training device."""
    _setup()
    s = get_settings()
    if s.embedded_broker:
        typer.echo("the in-process broker only works with `finetune serve`; set FINETUNE_BROKER_URL", err=True)
        raise typer.Exit(2)
    db.upgrade(s)
    celery_app = importlib.import_module("worker.celery_app").app
    celery_app.worker_main(
        [
            "worker",
            f"--queues={queues}",
            f"--concurrency={concurrency or s.worker_concurrency}",
            f"--pool={pool}",
            f"--loglevel={s.log_level}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
def sweeper() -> None:
    """Re-enqueue due and stuck rows from the database (one is enough; more are harmless)."""
    _setup()
    s = get_settings()
    db.upgrade(s)
    sw = importlib.import_module("worker.sweeper").Sweeper()
    signal.signal(signal.SIGTERM, lambda *_: sw.stop())
    try:
        sw.run(heartbeat=s.data_dir / "sweeper.heartbeat")
    except KeyboardInterrupt:
        sw.stop()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations."""
    _setup()
    db.upgrade(get_settings())
    typer.echo("database is up to date")


@app.command()
def openapi(
    write: Annotated[bool, typer.Option("--write", help="Write openapi.json at the repository root.")] = False,
) -> None:
    """Print the OpenAPI description generated from the app."""
    from service.api import openapi as spec

    if write:
        typer.echo(f"wrote {spec.write()}", err=True)
    else:
        typer.echo(spec.render(), nl=False)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL or CSV dataset.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base model: token limit, encoding, cost.")] = None,
    format: Annotated[str | None, typer.Option("--format", help="chat, preference, prompt_completion, csv.")] = None,
    csv_columns: Annotated[
        str | None, typer.Option(help='CSV columns as JSON, e.g. {"user": "question", "assistant": "answer"}.')
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """Check a dataset offline, with the same rules as the service. Exit status 0 when valid, 1 when not."""
    import json as _json

    from service.datasets.validation import render_report, validate_path

    csv = None
    if csv_columns:
        try:
            csv = _json.loads(csv_columns)
        except ValueError as exc:
            typer.echo(f"--csv-columns is not valid JSON: {exc}", err=True)
            raise typer.Exit(2) from exc
    try:
        report = validate_path(file, format=format, model=model, csv=csv)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        typer.echo(render_report(report, color=sys.stdout.isatty()))
    raise typer.Exit(0 if report.valid else 1)


@jobs_app.command("watch")
def jobs_watch(
    job_id: str,
    url: Annotated[str, typer.Option(envvar="FINETUNE_URL", help="The service's base URL.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str, typer.Option(envvar="FINETUNE_API_KEY", help="Project API key.")] = "",
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 2.0,
) -> None:
    """Follow a job live: status, step, loss, with a progress bar. Exit status 0 if it succeeds."""
    import httpx

    from service.watch import watch

    if not api_key:
        typer.echo("give --api-key or set FINETUNE_API_KEY", err=True)
        raise typer.Exit(2)
    try:
        job = watch(url, api_key, job_id, interval=interval)
    except httpx.HTTPStatusError as exc:
        typer.echo(f"error: {exc.response.status_code} {exc.response.text}", err=True)
        raise typer.Exit(2) from exc
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(0 if job["status"] == "succeeded" else 1)


@projects_app.command("create")
def projects_create(name: str) -> None:
    """Create a project and print its first API key (shown only once)."""
    from service.projects.service import create_project

    _setup()
    s = get_settings()
    db.upgrade(s)
    with db.session_scope(s) as session:
        project, key, plain = create_project(session, name, s.server_secret())
    typer.echo(f"project: {project.id}", err=True)
    typer.echo(f"api key ({key.prefix}...): store it now, it is not shown again", err=True)
    typer.echo(plain)


@projects_app.command("list")
def projects_list() -> None:
    from service.projects.service import list_projects

    _setup()
    s = get_settings()
    db.upgrade(s)
    with db.session_scope(s) as session:
        for p in list_projects(session):
            typer.echo(f"{p.id}\t{p.name}\t{p.created_at.isoformat()}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
