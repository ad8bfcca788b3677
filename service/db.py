"""Engine, sessions, column types and migrations.

SQLite (the embedded default) is used from several threads at once (API, worker, sweeper), so it runs in WAL mode with a
busy timeout; PostgreSQL needs nothing special.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, create_engine

from service.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class UTCDateTime(sa.TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, settings: Settings | None = None) -> Engine:
    """An engine whose pool is sized by the settings. A caller that finds every connection taken waits at most
    ``db_pool_timeout_s``, then gets ``sqlalchemy.exc.TimeoutError`` (the API answers 503 with Retry-After)."""
    settings = settings or get_settings()
    pool = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_s,
    }
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        in_memory = not path or path == ":memory:"
        if not in_memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # An in-memory database lives in one connection (a singleton pool, no sizes).
            **({} if in_memory else pool),
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def get_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    url = settings.sqlalchemy_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url, settings)
        return engine


@sa.event.listens_for(OrmSession, "after_flush")
def _flushed(session: OrmSession, _context: Any) -> None:
    session.info["_flushed_writes"] = True


@sa.event.listens_for(OrmSession, "after_transaction_end")
def _transaction_ended(session: OrmSession, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop("_flushed_writes", None)


def release_if_clean(session: Session) -> bool:
    """Give the session's connection back to the pool if that loses nothing: no unsaved changes and none flushed but
    uncommitted (ending the transaction would commit those). True when the session now holds no connection."""
    if session.new or session.dirty or session.deleted or session.info.get("_flushed_writes"):
        return False
    if session.in_transaction():
        session.commit()  # a transaction that only read: ending it writes nothing
    return True


class ReleasingCalls:
    """Wraps an object whose methods call outside the process (a provider client used by a worker step): before each
    call, the step's session gives its connection back when that loses nothing (``release_if_clean``), so a slow
    provider holds no pooled connection and no open transaction. A session with pending writes keeps its connection
    (ending its transaction early would commit half a step)."""

    def __init__(self, target: Any, session: Session) -> None:
        self._target, self._session = target, session

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            release_if_clean(self._session)
            return attr(*args, **kwargs)

        return call


def release_connection(session: Session) -> None:
    """End the session's transaction so its connection goes back to the pool before a slow call outside the process
    (a provider, a user's URL). Only for a session that has written nothing yet: committing here is then a no-op
    for the data, and the session reconnects when it is used again."""
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("release_connection on a session with unsaved changes; save or discard them first")
    session.commit()


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error: one unit of work."""
    with Session(get_engine(settings), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(settings: Settings | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", (settings or get_settings()).sqlalchemy_url.replace("%", "%%"))
    return cfg


_migrated: set[str] = set()


def upgrade(settings: Settings | None = None) -> None:
    """Apply all migrations (idempotent; safe to call from every process at start)."""
    from alembic import command

    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several processes start at once in compose; one migrates, the others wait.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(720431)"))
        cfg = alembic_config(settings)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    _migrated.add(settings.sqlalchemy_url)


def ensure_migrated(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    if settings.sqlalchemy_url not in _migrated:
        upgrade(settings)


def ping(settings: Settings | None = None) -> None:
    with get_engine(settings).connect() as conn:
        conn.execute(sa.text("SELECT 1"))
