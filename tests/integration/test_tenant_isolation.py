"""One project cannot take what the others need: a project whose provider answers slowly fills neither the server's
request threads nor its database connections, and other projects' requests keep answering at once.

The API runs in a real uvicorn server (its own thread pool and connection pool, as in production); the slow provider is
the OpenAI emulator holding every model listing for a few seconds. Runs on SQLite and, in CI, on PostgreSQL.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

SLOW_S = 6.0
SETTLE_S = 3.0
A_CALLS = 50


@contextmanager
def _serve(app: Any) -> Iterator[str]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="tenant-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture
def small_pool(settings, monkeypatch):  # type: ignore[no-untyped-def]
    """Settings with a small connection pool: fifty requests that each held a connection would exhaust it."""
    from service import db
    from service.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("FINETUNE_DB_POOL_SIZE", "4")
    monkeypatch.setenv("FINETUNE_DB_MAX_OVERFLOW", "4")
    monkeypatch.setenv("FINETUNE_DB_POOL_TIMEOUT_S", "3")
    reset_settings_cache()
    db.dispose_engines()
    return get_settings()


def test_slow_provider_calls_of_one_project_leave_other_projects_answering(
    small_pool, emulator, project, other_project
) -> None:  # type: ignore[no-untyped-def]
    from service.api.app import create_app

    settings = small_pool
    a, b = project["headers"], other_project["headers"]
    with _serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        r = http.put(
            "/v1/providers/openai/credentials", json={"api_key": "sk-a-slow", "base_url": emulator.base_url}, headers=a
        )
        assert r.status_code == 200, r.text
        assert http.get("/v1/project", headers=b).status_code == 200
        emulator.add_fault(r"^GET /v1/models$", "act_then_timeout", probability=1.0, delay_seconds=SLOW_S)

        with ThreadPoolExecutor(A_CALLS) as pool:
            started = time.monotonic()
            futures = [pool.submit(http.get, "/v1/providers/openai/models", headers=a) for _ in range(A_CALLS)]
            while emulator.calls("GET /v1/models") < 1:
                assert time.monotonic() - started < 10, "project A's listings never reached the provider"
                time.sleep(0.01)
            # Let the burst of fifty be taken in: each of A's calls answered or waiting on the provider (on a busy
            # CI machine, parsing fifty requests alone takes a moment), or SETTLE_S at most. A's calls are held
            # SLOW_S at the provider, so B's requests below all run while they are in flight.
            settle_until = time.monotonic() + SETTLE_S
            while time.monotonic() < settle_until:
                if sum(f.done() for f in futures) + emulator.calls("GET /v1/models") >= A_CALLS:
                    break
                time.sleep(0.01)
            assert not all(f.done() for f in futures)
            latencies: list[float] = []
            answered_while_a_waited = 0
            while not all(f.done() for f in futures):
                for path in ("/v1/project", "/v1/jobs", "/v1/datasets"):
                    began = time.monotonic()
                    r = http.get(path, headers=b, timeout=10)
                    latencies.append(time.monotonic() - began)
                    assert r.status_code == 200, (path, r.status_code, r.text)
                    answered_while_a_waited += 1
                time.sleep(0.05)
            results = [f.result() for f in futures]

    statuses = Counter(r.status_code for r in results)
    # B was served the whole time A's calls were held, each answer well within a second.
    assert answered_while_a_waited >= 10, answered_while_a_waited
    assert max(latencies) < 1.0, f"slowest answer to project B: {max(latencies):.2f}s"
    # A got its share: the calls within its limit were answered, the rest refused at once with a clear problem.
    assert statuses[200] >= 1, statuses
    assert statuses[200] + statuses[429] == A_CALLS, statuses
    assert emulator.calls("GET /v1/models") <= statuses[200] + settings.outbound_per_project
    refused = [r for r in results if r.status_code == 429]
    assert refused, statuses
    assert refused[0].json()["code"] == "too_many_outbound_calls"
    assert int(refused[0].headers["Retry-After"]) >= 1
    listed = next(r for r in results if r.status_code == 200).json()
    assert listed["data"], listed


def test_an_exhausted_connection_pool_is_a_503_with_retry_after(settings, project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from service import db
    from service.api.app import create_app
    from service.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("FINETUNE_DB_POOL_SIZE", "1")
    monkeypatch.setenv("FINETUNE_DB_MAX_OVERFLOW", "0")
    monkeypatch.setenv("FINETUNE_DB_POOL_TIMEOUT_S", "0.3")
    reset_settings_cache()
    db.dispose_engines()
    settings = get_settings()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/v1/project", headers=project["headers"]).status_code == 200
        with db.get_engine(settings).connect():  # the only connection, taken elsewhere
            began = time.monotonic()
            r = client.get("/v1/project", headers=project["headers"])
            waited = time.monotonic() - began
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "database_busy"
        assert int(r.headers["Retry-After"]) >= 1
        assert waited < 2.0
        assert client.get("/v1/project", headers=project["headers"]).status_code == 200


# Local models ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def model_dirs(settings, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """An operator's model directory with one model in it, and the local provider reported available (what is tested
    here is which models a project may name, not torch)."""
    from service.providers import local
    from service.settings import get_settings, reset_settings_cache

    allowed = tmp_path / "models"
    (allowed / "tiny").mkdir(parents=True)
    (allowed / "tiny" / "config.json").write_text("{}")
    monkeypatch.setenv("FINETUNE_LOCAL_MODEL_DIRS", str(allowed))
    monkeypatch.setattr(local, "is_available", lambda: (True, None))
    reset_settings_cache()
    return {"settings": get_settings(), "allowed": allowed, "tmp": tmp_path}


def _fine_tune_of(settings, project_id: str, dataset_id: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A succeeded local fine-tune of `project_id` with a merged model and an adapter on disk (as training leaves
    them), without training one."""
    from service.db import session_scope
    from service.jobs.models import Job
    from service.providers.local_provider import output_dir

    with session_scope(settings) as s:
        job = Job(
            project_id=project_id,
            provider="local",
            base_model="tiny",
            method={"type": "supervised", "hyperparameters": {"merge_adapter": True}},
            training_dataset_id=dataset_id,
            status="succeeded",
        )
        s.add(job)
        s.flush()
        job.fine_tuned_model = f"ft:tiny:other-project::{job.id}"
        job_id, name = job.id, job.fine_tuned_model
    out = output_dir(settings, job_id)
    (out / "merged").mkdir(parents=True)
    (out / "merged" / "config.json").write_text("{}")
    (out / "adapter").mkdir()
    (out / "adapter" / "adapter_config.json").write_text("{}")
    return {"id": job_id, "name": name, "merged": str(out / "merged"), "adapter": str(out / "adapter")}


def test_a_project_names_only_its_own_fine_tunes_and_the_operators_models(
    model_dirs, project, other_project, chat_jsonl
) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    settings = model_dirs["settings"]
    a, b = project["headers"], other_project["headers"]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:

        def dataset(headers: dict[str, str]) -> str:
            r = client.post("/v1/datasets", files={"file": ("t.jsonl", chat_jsonl)}, headers=headers)
            assert r.status_code == 201 and r.json()["status"] == "ready", r.text
            return r.json()["id"]

        ds_a, ds_b = dataset(a), dataset(b)
        theirs = _fine_tune_of(settings, other_project["id"], ds_b)

        def job(headers: dict[str, str], ds: str, model: str) -> Any:
            body = {"training_dataset_id": ds, "provider": "local", "model": model}
            return client.post("/v1/jobs", json=body, headers=headers)

        def evaluation(headers: dict[str, str], ds: str, model: str) -> Any:
            candidate = {"kind": "model", "name": "m", "provider": "local", "model": model}
            body = {"dataset_id": ds, "candidates": [candidate], "graders": [{"type": "exact_match", "name": "e"}]}
            return client.post("/v1/evaluations", json=body, headers=headers)

        def refusal(r: Any, model: str) -> str:
            assert r.status_code == 422, (model, r.status_code, r.text)
            assert r.json()["code"] == "base_model_unavailable", r.text
            return r.json()["detail"].replace(model, "<model>")

        outside = model_dirs["tmp"] / "elsewhere" / "model"
        outside.mkdir(parents=True)
        (outside / "config.json").write_text("{}")
        foreign = [
            theirs["merged"],  # B's merged model by its folder
            theirs["adapter"],
            theirs["id"],  # by job id
            f"local:{theirs['id']}",
            theirs["name"],  # by fine-tuned model name
            str(model_dirs["allowed"] / ".." / "elsewhere" / "model"),  # '..' out of the allowed directory
            "../elsewhere/model",
            str(outside),  # a model that exists, outside the allowed directories
            str(model_dirs["tmp"] / "no-such-model"),  # a path that exists nowhere
            "job_doesnotexist",
        ]
        messages = set()
        for model in foreign:
            messages.add(refusal(job(a, ds_a, model), model))
            messages.add(refusal(evaluation(a, ds_a, model), model))
        assert len(messages) == 1, messages  # one message: nothing tells what exists on the server
        assert client.get("/v1/jobs", headers=a).json()["data"] == []

        # B uses its own fine-tune by id and by name, for training on top of it and for evaluating it.
        for model in (theirs["id"], theirs["name"]):
            assert job(b, ds_b, model).status_code == 201, model
            assert evaluation(b, ds_b, model).status_code == 201, model
        # Once B deletes that fine-tune (DELETE /v1/models/...), it names nothing, for B too.
        from service.clock import utcnow
        from service.db import session_scope
        from service.jobs.models import Job

        with session_scope(settings) as s:
            s.get(Job, theirs["id"]).model_deleted_at = utcnow()
        for model in (theirs["id"], theirs["name"]):
            assert refusal(job(b, ds_b, model), model) in messages
        # Every project may use the operator's models, by name under the directory or by full path.
        for model in ("tiny", str(model_dirs["allowed"] / "tiny")):
            assert job(a, ds_a, model).status_code == 201, model
            assert evaluation(a, ds_a, model).status_code == 201, model


def test_a_job_step_holds_no_database_connection_while_the_provider_answers(
    settings, emulator, project, chat_jsonl, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The worker's side: a step waiting on the provider holds no pooled connection (nor an open transaction) while
    it has written nothing, so slow providers cannot drain the pool the API and other steps share."""
    from fastapi.testclient import TestClient

    from service import db
    from service.api.app import create_app
    from service.jobs.steps import advance
    from service.providers.openai.provider import OpenAIProvider
    from service.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("FINETUNE_OPENAI_API_KEY", "sk-test-emulator")
    monkeypatch.setenv("FINETUNE_OPENAI_BASE_URL", emulator.base_url)
    reset_settings_cache()
    settings = get_settings()
    # Connections checked out by this thread (the one running the steps): other threads of the test session (an
    # embedded worker left by an earlier test) may use the same pool meanwhile.
    mine = threading.local()
    pool = db.get_engine(settings).pool

    def on_checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
        record.info["thread"] = threading.get_ident()
        mine.n = getattr(mine, "n", 0) + 1  # thread-local: counts what the checking-out thread holds

    def on_checkin(_dbapi: Any, record: Any) -> None:
        if record.info.pop("thread", None) == threading.get_ident():
            mine.n -= 1

    sa.event.listen(pool, "checkout", on_checkout)
    sa.event.listen(pool, "checkin", on_checkin)
    held: dict[str, list[int]] = {}
    for name in ("find_file", "upload_file", "find_job", "get_job", "list_events", "list_checkpoints"):
        original = getattr(OpenAIProvider, name)

        def measured(self, *args, _name=name, _original=original, **kwargs):  # type: ignore[no-untyped-def]
            held.setdefault(_name, []).append(getattr(mine, "n", 0))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(OpenAIProvider, name, measured)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        h = project["headers"]
        ds = client.post("/v1/datasets", files={"file": ("t.jsonl", chat_jsonl)}, headers=h).json()
        body = {"training_dataset_id": ds["id"], "provider": "openai", "model": "gpt-4.1-mini-2025-04-14"}
        r = client.post("/v1/jobs", json=body, headers=h)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{job_id}", headers=h).json()["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, held
            advance(job_id)
            time.sleep(0.05)
    sa.event.remove(pool, "checkout", on_checkout)
    sa.event.remove(pool, "checkin", on_checkin)
    assert held.get("get_job") and held.get("upload_file"), held
    # Before: one connection held during every call. A step that has stored events before asking for checkpoints
    # keeps its connection for that call (ending its transaction there would commit half a step).
    for name in ("find_file", "upload_file", "find_job", "get_job", "list_events"):
        assert held[name] and all(n == 0 for n in held[name]), (name, held)
