from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from api_schemas.common import Page, problem_responses
from api_schemas.events import EventOut
from service.api.deps import CallerDep, SessionDep
from service.api.pagination import PageParams, page_params, paginate, select_for_project
from service.events.models import Event
from service.events.service import envelope
from service.tenancy import get_owned

router = APIRouter(prefix="/events", tags=["events"])


def event_out(ev: Event) -> EventOut:
    return EventOut.model_validate(envelope(ev))


@router.get("", response_model=Page[EventOut], responses=problem_responses(401))
def list_events(
    caller: CallerDep,
    session: SessionDep,
    page: PageParams = Depends(page_params),
    type: str | None = Query(None, max_length=64, description="Only events of this type."),
) -> Page[EventOut]:
    stmt = select_for_project(Event, caller.project_id)
    if type:
        stmt = stmt.where(Event.type == type)
    return paginate(session, stmt, Event, page, event_out)


@router.get("/{event_id}", response_model=EventOut, responses=problem_responses(401, 404))
def get_event(event_id: str, caller: CallerDep, session: SessionDep) -> EventOut:
    return event_out(get_owned(session, Event, event_id, caller.project_id, "event"))
