"""Rows are reached through their project: one project never sees another's objects.

An object of another project answers exactly as a missing one (404 with the same code and detail), so ids cannot
be probed across projects.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlmodel import Session

from service.errors import NotFound


class _Owned(Protocol):
    project_id: Any


T = TypeVar("T", bound=_Owned)


def find_owned(session: Session, model: type[T], ident: str, project_id: str) -> T | None:
    """The ``model`` row ``ident`` of project ``project_id``, or None (missing, or another project's)."""
    row = session.get(model, ident)
    return row if row is not None and row.project_id == project_id else None


def get_owned(session: Session, model: type[T], ident: str, project_id: str, what: str) -> T:
    """The ``model`` row ``ident`` of project ``project_id``; ``NotFound(what, ident)`` when there is none."""
    row = find_owned(session, model, ident, project_id)
    if row is None:
        raise NotFound(what, ident)
    return row
