"""Shapes shared by every resource: list pages and RFC 9457 problems."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class RequestModel(BaseModel):
    """The base of every request body (and the models nested in one): strict types, so ``"3"`` is not silently 3 and
    ``true`` is not 1; an integer is still accepted where a number is expected.

    FastAPI validates the parsed JSON as Python values, where strict mode wants enum members and ``Decimal`` objects:
    such fields opt out with ``Field(strict=False)``, and JSON can only give them as strings anyway.
    """

    model_config = ConfigDict(strict=True)


class Page(BaseModel, Generic[T]):
    """One page of a newest-first list. Pass ``next_cursor`` as ``after`` to get the next page."""

    object: str = "list"
    data: list[T]
    has_more: bool
    next_cursor: str | None = None


class ProblemItem(BaseModel):
    """One located problem inside a request (e.g. a dataset line)."""

    code: str
    message: str
    line: int | None = None
    field: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details with a stable machine ``code``."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", description="URI of the problem type; our types are under /problems/.")
    title: str
    status: int
    code: str = Field(description="Stable, machine-readable code.")
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[ProblemItem] | None = None


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem statuses a route can return."""
    return {code: {"model": Problem, "content": {"application/problem+json": {}}} for code in codes}
