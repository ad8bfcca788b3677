"""Kill the worker (SIGKILL) at each step of a Together job's submission in turn, restart it, and check that the job
still succeeds with exactly one Together job and one Together file per content hash.

Together keeps no metadata on a job, so the reconciliation that makes this hold is the provider's own: files are found
by their content-hash name in ``GET /files``, jobs by our id in their ``suffix`` in ``GET /fine-tunes``. Real processes
on PostgreSQL and Redis, as in ``test_crash_submission`` (whose fixtures' helpers are reused); the Together emulator
runs in this process and the workers reach it over loopback.
"""

from __future__ import annotations

import signal

import httpx
import pytest
from procs import free_port, wait_http_ok
from test_crash_submission import TEST_BROKER_URL, _check_crash_state, _job_row, crash_processes

from helpers import wait_for
from service.jobs.crashpoints import ENV_VAR, SUBMISSION_POINTS
from service.providers.together.provider import job_tag

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(
        not TEST_BROKER_URL.startswith("redis"), reason="needs FINETUNE_TEST_BROKER_URL (Redis) for separate workers"
    ),
]
BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


@pytest.fixture
def together():
    from together_emulator import JobTiming, TogetherEmulator

    with TogetherEmulator(speed=200.0, timing=JobTiming()) as emu:
        yield emu


@pytest.fixture
def processes(settings, together, tmp_path):
    yield from crash_processes(
        settings,
        tmp_path,
        FINETUNE_TOGETHER_API_KEY=together.api_key,
        FINETUNE_TOGETHER_BASE_URL=together.base_url,
        FINETUNE_DEFAULT_PROVIDER="together",
    )


def _together_view(together, our_job_id: str) -> tuple[list[dict], list[dict]]:
    state = together.dump()
    jobs = [j for j in state["jobs"] if job_tag(our_job_id) in (j.get("suffix") or "")]
    files = [f for f in state["files"] if f["purpose"] == "fine-tune"]
    return jobs, files


@pytest.mark.parametrize("point", SUBMISSION_POINTS)
def test_worker_killed_during_together_submission(point, settings, project, together, processes, chat_jsonl):
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
            datasets.append(r.json()["id"])
        r = client.post(
            "/v1/jobs",
            json={
                "training_dataset_id": datasets[0],
                "validation_dataset_id": datasets[1],
                "provider": "together",
                "model": BASE,
                "suffix": "crash",
            },
        )
        assert r.status_code == 201, f"{r.text}\napi log:\n{api.log()[-6000:]}"
        job_id = r.json()["id"]

        assert armed.wait_exit(timeout=90) == -signal.SIGKILL, armed.log()[-4000:]
        assert f"crash point {point} reached" in armed.log()
        job, file_rows = _job_row(settings, job_id)
        provider_jobs, provider_files = _together_view(together, job_id)
        _check_crash_state(point, job, file_rows, provider_jobs, provider_files)
        if point != "create.committed":
            assert job.lease_owner is not None, "the killed worker's lease is left behind, as after a real crash"

        processes.worker("worker-restarted")

        def finished():
            body = client.get(f"/v1/jobs/{job_id}").json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        done = wait_for(finished, timeout=120, interval=0.2)
        assert done["status"] == "succeeded", done

    provider_jobs, provider_files = _together_view(together, job_id)
    assert len(provider_jobs) == 1, provider_jobs
    assert done["provider_job_id"] == provider_jobs[0]["id"]
    assert together.calls("POST /v1/fine-tunes") == 1
    names = [f["filename"] for f in provider_files]
    assert len(names) == 2 and len(set(names)) == 2, names
    assert together.calls("POST /v1/files/upload") == 2
