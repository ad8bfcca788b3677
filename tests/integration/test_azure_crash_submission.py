"""The worker killed (SIGKILL) at each step of an azure job's submission, then restarted: still exactly one file per
content hash and one job at the Azure resource. The same processes, points and expectations as the openai provider's
test (``test_crash_submission``), against the emulator's Azure mode."""

from __future__ import annotations

import signal

import httpx
import pytest
from procs import free_port, wait_http_ok
from test_crash_submission import _check_crash_state, _job_row, crash_processes
from test_crash_submission import pytestmark as _crash_marks

from helpers import wait_for
from service.jobs.crashpoints import ENV_VAR, SUBMISSION_POINTS

pytestmark = _crash_marks
KEY = "azure-key-crash-0123456789"


@pytest.fixture
def emulator():
    from emulator import EmulatorConfig, JobTiming, OpenAIEmulator

    config = EmulatorConfig.azure_resource(
        speed=200.0, api_keys=[KEY], job_timing=JobTiming(validating_seconds=10, queued_seconds=10, step_seconds=2)
    )
    with OpenAIEmulator(config) as emu:
        yield emu


@pytest.fixture
def processes(settings, emulator, tmp_path):
    yield from crash_processes(
        settings,
        tmp_path,
        FINETUNE_AZURE_OPENAI_ENDPOINT=emulator.endpoint,
        FINETUNE_AZURE_OPENAI_API_KEY=KEY,
        FINETUNE_OUTBOUND_ALLOWLIST="127.0.0.1/32,::1/128,localhost",
        FINETUNE_OUTBOUND_ALLOW_HTTP="true",
        FINETUNE_DEFAULT_PROVIDER="azure",
    )


def _provider_view(emulator, our_job_id: str) -> tuple[list[dict], list[dict]]:
    state = emulator.state()
    jobs = [j for j in state["jobs"] if (j.get("metadata") or {}).get("finetune_job_id") == our_job_id]
    return jobs, [f for f in state["files"] if f["purpose"] == "fine-tune"]


@pytest.mark.parametrize("point", SUBMISSION_POINTS)
def test_azure_worker_killed_during_submission(point, settings, project, emulator, processes, chat_jsonl):
    port = free_port()
    api = processes.start("api", "api", "--port", str(port))
    processes.start("sweeper", "sweeper")
    armed = processes.worker("worker-armed", extra_env={ENV_VAR: point})
    wait_http_ok(f"http://127.0.0.1:{port}/readyz", api)

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=project["headers"], timeout=30) as client:
        datasets = []
        for content in (chat_jsonl, chat_jsonl.replace(b"Ticket", b"Case")):
            r = client.post("/v1/datasets", files={"file": ("data.jsonl", content)})
            assert r.status_code in (200, 201) and r.json()["status"] == "ready", r.text
            datasets.append(r.json()["id"])
        r = client.post(
            "/v1/jobs",
            json={
                "training_dataset_id": datasets[0],
                "validation_dataset_id": datasets[1],
                "provider": "azure",
                "model": "gpt-4.1-mini-2025-04-14",
            },
        )
        assert r.status_code == 201, f"{r.text}\napi log:\n{api.log()[-6000:]}"
        job_id = r.json()["id"]

        assert armed.wait_exit(timeout=90) == -signal.SIGKILL, armed.log()[-4000:]
        assert f"crash point {point} reached" in armed.log()
        job, file_rows = _job_row(settings, job_id)
        _check_crash_state(point, job, file_rows, *_provider_view(emulator, job_id))

        restarted = processes.worker("worker-restarted")

        def finished():
            body = client.get(f"/v1/jobs/{job_id}").json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        try:
            done = wait_for(finished, timeout=120, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\njob: {client.get(f'/v1/jobs/{job_id}').text}\n{restarted.log()[-4000:]}"
            ) from None
        assert done["status"] == "succeeded", done

    provider_jobs, provider_files = _provider_view(emulator, job_id)
    assert len(provider_jobs) == 1 and done["provider_job_id"] == provider_jobs[0]["id"]
    assert emulator.calls("POST /v1/fine_tuning/jobs") == 1
    names = [f["filename"] for f in provider_files]
    assert len(names) == 2 and len(set(names)) == 2, names
    assert emulator.calls("POST /v1/files") == 2
