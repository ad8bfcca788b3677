"""Cursor pagination, newest first. Ids are time-ordered, so the last id of a page is the cursor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlmodel import Session, select

from api_schemas.common import Page

T = TypeVar("T", bound=BaseModel)


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


def paginate(session: Session, stmt: Any, model: Any, params: PageParams, to_out: Callable[[Any], T]) -> Page[T]:
    if params.after:
        stmt = stmt.where(model.id < params.after)
    rows = list(session.exec(stmt.order_by(model.id.desc()).limit(params.limit + 1)))
    has_more = len(rows) > params.limit
    rows = rows[: params.limit]
    return Page[T](data=[to_out(r) for r in rows], has_more=has_more, next_cursor=rows[-1].id if has_more else None)


def select_for_project(model: Any, project_id: str) -> Any:
    return select(model).where(model.project_id == project_id)
