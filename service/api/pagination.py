"""Cursor pagination, newest first. Ids are time-ordered, so the last id of a page is the cursor."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlmodel import Session, select

from api_schemas.common import Page

T = TypeVar("T", bound=BaseModel)

log = logging.getLogger(__name__)


class PageParams(BaseModel):
    limit: int
    after: str | None


def page_params(
    limit: int = Query(20, ge=1, le=100, description="Page size."),
    after: str | None = Query(
        None, max_length=100, pattern=r"^[A-Za-z0-9_]+$", description="Cursor: `next_cursor` of the previous page."
    ),
) -> PageParams:
    return PageParams(limit=limit, after=after)


def readable(row: Any, to_out: Callable[[Any], T]) -> T | None:
    """``to_out(row)`` when it can be sent as JSON; otherwise None, logged.

    A stored value the response cannot carry (a lone surrogate saved before bodies were checked, a shape an older
    version wrote) must cost that one item, not the whole list for every later call. The check serialises the item
    as FastAPI's response path does (pydantic's JSON serialiser).
    """
    try:
        item = to_out(row)
        item.model_dump_json()
    except Exception:
        log.exception("%s %s cannot be shown; left out of the list", type(row).__name__, getattr(row, "id", "?"))
        return None
    return item


def paginate(session: Session, stmt: Any, model: Any, params: PageParams, to_out: Callable[[Any], T]) -> Page[T]:
    if params.after:
        stmt = stmt.where(model.id < params.after)
    rows = list(session.exec(stmt.order_by(model.id.desc()).limit(params.limit + 1)))
    has_more = len(rows) > params.limit
    rows = rows[: params.limit]
    # The cursor is the last row read, shown or not, so a left-out row never stops the paging.
    items = [item for item in (readable(r, to_out) for r in rows) if item is not None]
    return Page[T](data=items, has_more=has_more, next_cursor=rows[-1].id if has_more else None)


def select_for_project(model: Any, project_id: str) -> Any:
    return select(model).where(model.project_id == project_id)
