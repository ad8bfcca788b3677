"""Shared fixtures: isolated settings per test, the app, a project with a key, an in-process worker.

The same suite runs on the embedded defaults (SQLite file, in-memory broker) and, when CI sets
``FINETUNE_TEST_DATABASE_URL`` / ``FINETUNE_TEST_BROKER_URL`` / ``FINETUNE_TEST_REDIS_URL``, on PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_DATABASE_URL = os.environ.get("FINETUNE_TEST_DATABASE_URL")
TEST_BROKER_URL = os.environ.get("FINETUNE_TEST_BROKER_URL")
TEST_REDIS_URL = os.environ.get("FINETUNE_TEST_REDIS_URL")

# The Celery app reads the broker at import; fix it for the whole session before anything imports it.
os.environ["FINETUNE_BROKER_URL"] = TEST_BROKER_URL or "memory://"
os.environ.pop("FINETUNE_DATABASE_URL", None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Derived caches (the duplicate finder's Unicode tables) go to a folder of this session, not the user's ~/.cache.
os.environ["FINETUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="finetune-test-cache-")


@pytest.fixture(scope="session", autouse=True)
def _local_models_under_the_test_tree(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The operator's model directory in tests is pytest's temporary tree, where tests build their tiny models (a
    local base model must lie in a configured directory). Tests of that rule set their own."""
    from service.settings import reset_settings_cache

    os.environ["FINETUNE_LOCAL_MODEL_DIRS"] = str(tmp_path_factory.getbasetemp())
    reset_settings_cache()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "postgres" in item.keywords and not TEST_DATABASE_URL:
            item.add_marker(pytest.mark.skip(reason="needs FINETUNE_TEST_DATABASE_URL (PostgreSQL)"))
        if "redis" in item.keywords and not (TEST_REDIS_URL or (TEST_BROKER_URL or "").startswith("redis")):
            item.add_marker(pytest.mark.skip(reason="needs FINETUNE_TEST_REDIS_URL (Redis)"))


def _reset_database(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Fresh settings, database and data directory for one test.

    Test servers (the OpenAI emulator, webhook receivers, model servers) listen on loopback over http, so outbound
    URLs may reach loopback here; tests marked ``strict_outbound`` get the production policy instead."""
    from service import clock, db, queue
    from service.settings import get_settings, reset_settings_cache

    for name in ("OUTBOUND_ALLOWLIST", "OUTBOUND_ALLOW_HTTP", "WEBHOOK_ALLOWLIST", "WEBHOOK_ALLOW_HTTP"):
        monkeypatch.delenv(f"FINETUNE_{name}", raising=False)
    if request.node.get_closest_marker("strict_outbound") is None:
        monkeypatch.setenv("FINETUNE_OUTBOUND_ALLOWLIST", "127.0.0.1/32,::1/128,localhost")
        monkeypatch.setenv("FINETUNE_OUTBOUND_ALLOW_HTTP", "true")
    monkeypatch.setenv("FINETUNE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FINETUNE_SECRET_KEY", "test-secret-key-0123456789")
    monkeypatch.setenv("FINETUNE_POLL_SCALE", "0.01")
    monkeypatch.setenv("FINETUNE_POLL_MIN_S", "0.05")
    monkeypatch.setenv("FINETUNE_REQUEUE_AFTER_S", "1")
    monkeypatch.setenv("FINETUNE_SWEEP_INTERVAL_S", "0.1")
    if TEST_DATABASE_URL:
        _reset_database(TEST_DATABASE_URL)
        monkeypatch.setenv("FINETUNE_DATABASE_URL", TEST_DATABASE_URL)
    if TEST_REDIS_URL:
        monkeypatch.setenv("FINETUNE_REDIS_URL", TEST_REDIS_URL)
    reset_settings_cache()
    db.dispose_engines()
    db._migrated.clear()
    clock.reset()
    s = get_settings()
    db.upgrade(s)
    yield s
    clock.reset()
    db.dispose_engines()
    reset_settings_cache()
    queue.reset_producer()


@pytest.fixture
def app(settings):  # type: ignore[no-untyped-def]
    from service.api.app import create_app

    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def project(settings):  # type: ignore[no-untyped-def]
    """A project and the headers that authenticate as it."""
    from service.db import session_scope
    from service.projects.service import create_project

    with session_scope(settings) as session:
        p, _key, plain = create_project(session, "test project", settings.server_secret())
    return {"id": p.id, "key": plain, "headers": {"Authorization": f"Bearer {plain}"}}


@pytest.fixture
def other_project(settings):  # type: ignore[no-untyped-def]
    from service.db import session_scope
    from service.projects.service import create_project

    with session_scope(settings) as session:
        p, _key, plain = create_project(session, "other project", settings.server_secret())
    return {"id": p.id, "key": plain, "headers": {"Authorization": f"Bearer {plain}"}}


@pytest.fixture(scope="session")
def _embedded_worker():  # type: ignore[no-untyped-def]
    from worker.embedded import embedded_workers

    # More threads than `finetune serve` uses: a task of an earlier test may still sit in a provider call that only a
    # timeout ends, and it must not delay the next test's tasks. Like serve, the train queue has one thread of its own.
    main, train = embedded_workers(6)
    main.start()
    train.start()
    yield main
    main.stop()
    train.stop()


@pytest.fixture(autouse=True)
def _no_worker_unless_asked(request, monkeypatch):  # type: ignore[no-untyped-def]
    """The in-process worker lives for the whole session, so a message sent by a test that did not ask for a worker
    would still be picked up and race the test's own calls. Such tests send nothing (a test can still capture sends
    by patching ``queue.enqueue`` itself)."""
    if "worker" not in request.fixturenames:
        from service import queue

        monkeypatch.setattr(queue, "enqueue", lambda *args, **kwargs: True)


@pytest.fixture
def worker(settings, _embedded_worker):  # type: ignore[no-untyped-def]
    """An in-process Celery worker plus a fast sweeper, like `finetune serve`."""
    from worker.sweeper import Sweeper

    if TEST_BROKER_URL and TEST_BROKER_URL.startswith("redis"):
        import redis

        redis.Redis.from_url(TEST_BROKER_URL).flushdb()
    sweeper = Sweeper(interval_s=0.1, requeue_after_s=1.0)
    sweeper.start_thread()
    yield _embedded_worker
    sweeper.stop()


@pytest.fixture
def make_resolver():  # type: ignore[no-untyped-def]
    """``make_resolver({"name": ["10.0.0.1"]}, calls)``: a DNS stand-in for ``service.net`` (see helpers)."""
    from helpers import static_resolver

    return static_resolver


@pytest.fixture
def chat_jsonl() -> bytes:
    """A small valid chat dataset (12 examples)."""
    import json

    lines = []
    for i in range(12):
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "You classify support tickets."},
                        {"role": "user", "content": f"Ticket {i}: my invoice number {1000 + i} is wrong"},
                        {"role": "assistant", "content": "billing" if i % 2 else "account"},
                    ]
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()
