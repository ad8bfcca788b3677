"""Kill the worker (SIGKILL) at each step of a job's submission in turn, restart it, and check that the job still
succeeds with exactly one provider job and one provider file per content hash.

Real processes on PostgreSQL and Redis: ``finetune api``, ``finetune sweeper`` and ``finetune worker`` (solo pool, so
the task runs in the worker process itself). The first worker is armed with ``FINETUNE_TEST_CRASH_POINT`` and kills
itself at that point (``service.jobs.crashpoints``); its lease is left behind, nothing is rolled back by hand, and the
broker message it held is never acknowledged. A second, unarmed worker must finish the job from what the database says.

The processes use their own Redis database (``FINETUNE_TEST_CRASH_BROKER_URL``, default: the next database number
after ``FINETUNE_TEST_BROKER_URL``'s) so that an in-process test worker started by other tests never takes their
messages.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from procs import Processes, base_env, free_port, wait_http_ok

from helpers import wait_for
from service.jobs.crashpoints import ENV_VAR, SUBMISSION_POINTS

TEST_DATABASE_URL = os.environ.get("FINETUNE_TEST_DATABASE_URL")
TEST_BROKER_URL = os.environ.get("FINETUNE_TEST_BROKER_URL") or ""
TEST_REDIS_URL = os.environ.get("FINETUNE_TEST_REDIS_URL")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(
        not TEST_BROKER_URL.startswith("redis"), reason="needs FINETUNE_TEST_BROKER_URL (Redis) for separate workers"
    ),
]


def crash_broker_url() -> str:
    explicit = os.environ.get("FINETUNE_TEST_CRASH_BROKER_URL")
    if explicit:
        return explicit
    parts = urlsplit(TEST_BROKER_URL)
    db = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(db + 1) % 16}"))


@pytest.fixture
def emulator():
    from emulator import EmulatorConfig, JobTiming, OpenAIEmulator

    config = EmulatorConfig(speed=200.0, job_timing=JobTiming(validating_seconds=10, queued_seconds=10, step_seconds=2))
    with OpenAIEmulator(config) as emu:
        yield emu


def crash_processes(settings, tmp_path, **provider_env: str) -> Iterator[Processes]:
    """Real api, sweeper and worker processes on the test PostgreSQL and Redis, on a broker database of their own,
    training on the provider ``provider_env`` configures (its key, base URL, ``FINETUNE_DEFAULT_PROVIDER``). Used with
    ``yield from`` by each provider's ``processes`` fixture."""
    import redis

    broker = crash_broker_url()
    redis.Redis.from_url(broker).flushdb()
    env = base_env(
        FINETUNE_DATABASE_URL=TEST_DATABASE_URL,
        FINETUNE_BROKER_URL=broker,
        FINETUNE_REDIS_URL=TEST_REDIS_URL,
        FINETUNE_DATA_DIR=str(settings.data_dir),
        FINETUNE_SECRET_KEY=settings.secret_key.get_secret_value(),
        **provider_env,
        FINETUNE_POLL_SCALE="0.01",
        FINETUNE_POLL_MIN_S="0.05",
        # A dead worker's lease (and its upload claim, which lives as long) expires quickly, so the test is short.
        FINETUNE_LEASE_S="2",
        FINETUNE_SWEEP_INTERVAL_S="0.2",
        FINETUNE_REQUEUE_AFTER_S="1",
        FINETUNE_LOG_LEVEL="WARNING",
    )
    procs = Processes(env=env, log_dir=tmp_path)
    yield procs
    procs.stop_all()
    redis.Redis.from_url(broker).flushdb()


@pytest.fixture
def processes(settings, emulator, tmp_path):
    yield from crash_processes(
        settings,
        tmp_path,
        FINETUNE_OPENAI_API_KEY="sk-test-emulator",
        FINETUNE_OPENAI_BASE_URL=emulator.base_url,
        FINETUNE_DEFAULT_PROVIDER="openai",
    )


def _provider_view(emulator, our_job_id: str) -> tuple[list[dict], list[dict]]:
    state = emulator.state()
    jobs = [j for j in state["jobs"] if (j.get("metadata") or {}).get("finetune_job_id") == our_job_id]
    files = [f for f in state["files"] if f["purpose"] == "fine-tune"]
    return jobs, files


def _job_row(settings, job_id: str):
    from sqlmodel import select

    from service.db import session_scope
    from service.jobs.models import Job
    from service.providers.models import ProviderFile

    with session_scope(settings) as s:
        job = s.get(Job, job_id)
        files = list(s.exec(select(ProviderFile)))
        s.expunge_all()
    return job, files


def _check_crash_state(point: str, job, file_rows, provider_jobs, provider_files) -> None:
    """What the database and the provider hold at the moment of the crash: the window each point opens."""
    if point == "upload.claimed":
        assert provider_files == [] and [r.status for r in file_rows] == ["uploading"]
    elif point == "upload.sent":
        assert len(provider_files) == 1 and [r.status for r in file_rows] == ["uploading"]
    elif point == "upload.recorded":
        assert len(provider_files) == 2 and {r.status for r in file_rows} == {"ready"}
        assert provider_jobs == [] and job.status == "uploading"
    elif point == "create.sent":
        assert len(provider_jobs) == 1 and job.provider_job_id is None and job.status == "uploading"
    elif point == "create.committed":
        assert len(provider_jobs) == 1 and job.provider_job_id == provider_jobs[0]["id"]
        assert job.status not in ("created", "uploading")
    else:  # a point added to SUBMISSION_POINTS needs its expected state here
        raise AssertionError(f"no expectation for crash point {point}")


@pytest.mark.parametrize("point", SUBMISSION_POINTS)
def test_worker_killed_during_submission(point, settings, project, emulator, processes, chat_jsonl):
    port = free_port()
    api = processes.start("api", "api", "--port", str(port))
    processes.start("sweeper", "sweeper")
    armed = processes.worker("worker-armed", extra_env={ENV_VAR: point})
    base = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{base}/readyz", api)

    with httpx.Client(base_url=base, headers=project["headers"], timeout=30) as client:
        datasets = []
        for content in (chat_jsonl, chat_jsonl.replace(b"Ticket", b"Case")):
            r = client.post("/v1/datasets", files={"file": ("data.jsonl", content)})
            assert r.status_code in (200, 201), f"{r.text}\napi log:\n{api.log()[-6000:]}"
            assert r.json()["status"] == "ready", r.json()
            datasets.append(r.json()["id"])
        r = client.post(
            "/v1/jobs",
            json={
                "training_dataset_id": datasets[0],
                "validation_dataset_id": datasets[1],
                "provider": "openai",
                "model": "gpt-4.1-mini-2025-04-14",
            },
        )
        assert r.status_code == 201, f"{r.text}\napi log:\n{api.log()[-6000:]}"
        job_id = r.json()["id"]

        # The armed worker takes the job and kills itself at the point.
        assert armed.wait_exit(timeout=90) == -signal.SIGKILL, armed.log()[-4000:]
        assert f"crash point {point} reached" in armed.log()
        job, file_rows = _job_row(settings, job_id)
        provider_jobs, provider_files = _provider_view(emulator, job_id)
        _check_crash_state(point, job, file_rows, provider_jobs, provider_files)
        if point != "create.committed":  # the others die inside the step, holding the job
            assert job.lease_owner is not None, "the killed worker's lease is left behind, as after a real crash"

        processes.worker("worker-restarted")

        def finished():
            body = client.get(f"/v1/jobs/{job_id}").json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        done = wait_for(finished, timeout=120, interval=0.2)
        assert done["status"] == "succeeded", done

    provider_jobs, provider_files = _provider_view(emulator, job_id)
    assert len(provider_jobs) == 1, provider_jobs
    assert done["provider_job_id"] == provider_jobs[0]["id"]
    assert emulator.calls("POST /v1/fine_tuning/jobs") == 1
    # One provider file per content hash (files are named by hash), and no second upload of either.
    names = [f["filename"] for f in provider_files]
    assert len(names) == 2 and len(set(names)) == 2, names
    assert emulator.calls("POST /v1/files") == 2
