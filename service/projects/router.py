from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from api_schemas.common import problem_responses
from api_schemas.projects import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, ProjectCreate, ProjectCreated, ProjectOut
from service.api.creating import respond_created
from service.api.deps import AdminDep, CallerDep, IdempotencyKey, SessionDep, SettingsDep
from service.api.pagination import readable
from service.idempotency.service import fingerprint
from service.projects import service
from service.projects.models import ApiKey, Project

router = APIRouter(tags=["projects"])


def project_out(p: Project) -> ProjectOut:
    return ProjectOut(id=p.id, name=p.name, created_at=p.created_at)


def key_out(k: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=k.id,
        project_id=k.project_id,
        name=k.name,
        prefix=k.prefix,
        created_at=k.created_at,
        last_used_at=k.last_used_at,
        revoked_at=k.revoked_at,
    )


@router.post(
    "/projects",
    status_code=status.HTTP_201_CREATED,
    response_model=ProjectCreated,
    responses=problem_responses(401, 403, 422),
    summary="Create a project (admin key)",
)
def create_project(body: ProjectCreate, _: AdminDep, session: SessionDep, settings: SettingsDep) -> ProjectCreated:
    project, key, plain = service.create_project(session, body.name, settings.server_secret())
    return ProjectCreated(
        **project_out(project).model_dump(), api_key=ApiKeyCreated(**key_out(key).model_dump(), key=plain)
    )


@router.get("/project", response_model=ProjectOut, responses=problem_responses(401), summary="The caller's project")
def current_project(caller: CallerDep, session: SessionDep) -> ProjectOut:
    return project_out(service.get_project(session, caller.project_id))


@router.get("/project/api-keys", response_model=list[ApiKeyOut], responses=problem_responses(401))
def list_keys(caller: CallerDep, session: SessionDep) -> list[ApiKeyOut]:
    from sqlmodel import select

    keys = session.exec(select(ApiKey).where(ApiKey.project_id == caller.project_id).order_by(ApiKey.id.desc()))
    return [out for out in (readable(k, key_out) for k in keys) if out is not None]


@router.post(
    "/project/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=problem_responses(401, 409, 422),
    summary="Create an API key; the key is returned once (again for a replay of the same Idempotency-Key)",
)
def create_key(
    body: ApiKeyCreate,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    def create() -> tuple[int, dict[str, Any]]:
        key, plain = service.create_api_key(session, caller.project_id, body.name, settings.server_secret())
        return 201, ApiKeyCreated(**key_out(key).model_dump(), key=plain).model_dump(mode="json")

    return respond_created(
        session,
        caller,
        idempotency_key=idempotency_key,
        route="POST /v1/project/api-keys",
        request_fingerprint=fingerprint(body.model_dump(mode="json")),
        create=create,
    )


@router.delete("/project/api-keys/{key_id}", response_model=ApiKeyOut, responses=problem_responses(401, 404))
def revoke_key(key_id: str, caller: CallerDep, session: SessionDep) -> ApiKeyOut:
    return key_out(service.revoke_api_key(session, caller.project_id, key_id))
