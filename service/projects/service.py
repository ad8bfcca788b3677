from __future__ import annotations

from sqlmodel import Session, select

from service.clock import utcnow
from service.errors import NotFound, Unauthorized
from service.projects.keys import display_prefix, generate_key, hash_key
from service.projects.models import ApiKey, Project
from service.tenancy import get_owned


def create_project(session: Session, name: str, server_secret: bytes) -> tuple[Project, ApiKey, str]:
    """A project and its first API key; the plain key is returned once and never stored."""
    project = Project(name=name)
    session.add(project)
    session.flush()
    key, plain = create_api_key(session, project.id, "default", server_secret)
    return project, key, plain


def create_api_key(session: Session, project_id: str, name: str, server_secret: bytes) -> tuple[ApiKey, str]:
    plain = generate_key()
    key = ApiKey(
        project_id=project_id, name=name, prefix=display_prefix(plain), key_hash=hash_key(plain, server_secret)
    )
    session.add(key)
    session.flush()
    return key, plain


def authenticate(session: Session, plain: str, server_secret: bytes) -> ApiKey:
    key = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(plain, server_secret))).first()
    if key is None or key.revoked_at is not None:
        raise Unauthorized("invalid or revoked API key", code="invalid_api_key")
    now = utcnow()
    # Writing on every request would serialise SQLite; a minute of precision is enough for "last used".
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        key.last_used_at = now
        session.add(key)
    return key


def get_project(session: Session, project_id: str) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound("project", project_id)
    return project


def list_projects(session: Session) -> list[Project]:
    return list(session.exec(select(Project).order_by(Project.id.desc())))


def revoke_api_key(session: Session, project_id: str, key_id: str) -> ApiKey:
    key = get_owned(session, ApiKey, key_id, project_id, "api_key")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
    return key
