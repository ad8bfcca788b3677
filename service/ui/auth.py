"""Who is looking at a /ui page: the session cookie, checked against the API key it was made from.

Sign-in checks the key with ``projects.authenticate``, the same check as ``Authorization: Bearer`` on the API. Each
later request loads that key by id, so a revoked key signs its UI sessions out at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlmodel import Session

from service.api.deps import SessionDep, SettingsDep
from service.clock import utcnow
from service.projects.models import ApiKey, Project
from service.settings import Settings
from service.ui import session as ui_session
from service.ui.session import UiSession


class NotSignedIn(Exception):
    """The page needs a signed-in session; the router answers with the sign-in page."""


class CsrfRejected(Exception):
    """A form post without this session's token, or from another origin."""


@dataclass(frozen=True)
class Viewer:
    session: UiSession
    project: Project
    api_key_id: str

    @property
    def project_id(self) -> str:
        return self.project.id

    @property
    def reviewer(self) -> str:
        return self.session.reviewer or ""

    @property
    def csrf(self) -> str:
        return self.session.csrf


def _now() -> float:
    return utcnow().timestamp()


def read_session(request: Request, settings: Settings) -> UiSession | None:
    key = ui_session.session_key(settings.server_secret())
    return ui_session.decode(request.cookies.get(ui_session.COOKIE), key, _now())


def new_anonymous(settings: Settings) -> UiSession:
    return ui_session.anonymous(_now(), settings.ui_session_ttl_s)


def new_signed_in(settings: Settings, key: ApiKey, reviewer: str) -> UiSession:
    return ui_session.sign_in(key.project_id, key.id, reviewer, _now(), settings.ui_session_ttl_s)


def store(response: Response, request: Request, settings: Settings, session: UiSession) -> None:
    response.set_cookie(
        ui_session.COOKIE,
        ui_session.encode(session, ui_session.session_key(settings.server_secret())),
        max_age=max(int(session.expires_at - _now()), 0),
        path=ui_session.PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def clear(response: Response, request: Request) -> None:
    response.delete_cookie(
        ui_session.COOKIE, path=ui_session.PATH, httponly=True, samesite="lax", secure=request.url.scheme == "https"
    )


def viewer_of(db: Session, session: UiSession | None) -> Viewer | None:
    if session is None or not session.signed_in:
        return None
    key = db.get(ApiKey, session.api_key_id)
    if key is None or key.revoked_at is not None or key.project_id != session.project_id:
        return None
    project = db.get(Project, key.project_id)
    return Viewer(session=session, project=project, api_key_id=key.id) if project is not None else None


def viewer_dep(request: Request, db: SessionDep, settings: SettingsDep) -> Viewer:
    viewer = viewer_of(db, read_session(request, settings))
    if viewer is None:
        raise NotSignedIn()
    request.state.project_id = viewer.project_id
    return viewer


ViewerDep = Annotated[Viewer, Depends(viewer_dep)]


async def check_form(request: Request, session: UiSession | None) -> dict[str, str]:
    """The posted form's fields, once its origin and CSRF token are checked."""
    if not ui_session.same_origin(
        request.headers.get("origin"), request.headers.get("referer"), request.url.scheme, request.headers.get("host")
    ):
        raise CsrfRejected("the form was posted from another site")
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not ui_session.csrf_ok(session, fields.get("csrf_token")):
        raise CsrfRejected("the form's session token is missing or stale; reload the page and try again")
    return fields
