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
