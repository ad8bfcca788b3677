"""FastAPI dependencies: settings, a database session per request, the caller's project."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlmodel import Session

from service.db import get_engine
from service.errors import Forbidden, Unauthorized
from service.projects import service as projects
from service.settings import Settings, get_settings


def settings_dep(request: Request) -> Settings:
    return getattr(request.app.state, "settings", None) or get_settings()


SettingsDep = Annotated[Settings, Depends(settings_dep)]


def session_dep(settings: SettingsDep) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns normally."""
    with Session(get_engine(settings), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(session_dep)]


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <api key>", code="missing_api_key")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <api key>'", code="invalid_authorization")
    return token.strip()


@dataclass(frozen=True)
class Caller:
    project_id: str
    api_key_id: str


def caller_dep(
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Caller:
    key = projects.authenticate(session, _bearer(authorization), settings.server_secret())
    if session.dirty:
        # The key's last_used_at changed (about once a minute): commit it now, so the key's row is not locked for
        # the rest of the request while every other request with this key waits for it.
        session.commit()
    request.state.project_id = key.project_id
    return Caller(project_id=key.project_id, api_key_id=key.id)


CallerDep = Annotated[Caller, Depends(caller_dep)]


def admin_dep(
    settings: SettingsDep, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> None:
    if settings.admin_key is None:
        raise Forbidden(
            "the admin API is off; set FINETUNE_ADMIN_KEY, or use `finetune projects create`", code="admin_disabled"
        )
    token = _bearer(authorization)
    if not hmac.compare_digest(token.encode(), settings.admin_key.get_secret_value().encode()):
        raise Unauthorized("invalid admin key", code="invalid_admin_key")


AdminDep = Annotated[None, Depends(admin_dep)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=255, description="Replays return the first result instead of a copy."),
]
