"""A worker step gives its database connection back before calling a provider, but never by committing half a step."""

from __future__ import annotations

from types import SimpleNamespace

from sqlmodel import Session, select


def test_a_clean_session_gives_its_connection_back_before_each_call(settings) -> None:  # type: ignore[no-untyped-def]
    from service.db import ReleasingCalls, get_engine
    from service.projects.models import Project

    engine = get_engine(settings)
    seen: list[int] = []
    with Session(engine, expire_on_commit=False) as session:
        provider = ReleasingCalls(
            SimpleNamespace(name="p", call=lambda: seen.append(engine.pool.checkedout())), session
        )
        list(session.exec(select(Project)))
        assert session.in_transaction() and engine.pool.checkedout() == 1
        provider.call()
        assert seen == [0] and not session.in_transaction()
        assert provider.name == "p"  # attributes pass through

        # Pending or flushed writes keep the connection: ending the transaction there would commit half a step.
        project = Project(name="half a step")
        session.add(project)
        provider.call()  # pending: not flushed, not committed
        session.flush()
        provider.call()  # flushed: the transaction (and its connection) stays open
        assert seen[-1] == 1 and session.in_transaction()
        session.rollback()
        provider.call()
        assert seen[-1] == 0
    with Session(engine) as other:
        assert other.get(Project, project.id) is None
