"""/v1/fine_tuning/jobs and its sub-resources: events, checkpoints, cancel, pause, resume."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response

from .. import jobs
from ..errors import invalid
from ..pagination import paginate
from .common import core_of, json_body, limit_param, page, respond

router = APIRouter(prefix="/v1/fine_tuning/jobs")

_METADATA_KEY = re.compile(r"^metadata\[(.+)\]$")


def _metadata_filter(request: Request) -> tuple[dict[str, str], bool]:
    """`metadata[k]=v` pairs, and whether the literal `metadata=null` asked for jobs without metadata."""
    wanted: dict[str, str] = {}
    want_null = False
    for key, value in request.query_params.multi_items():
        if key == "metadata":
            if value != "null":
                raise invalid("Invalid 'metadata': use metadata[key]=value pairs, or metadata=null.", param="metadata")
            want_null = True
            continue
        match = _METADATA_KEY.match(key)
        if match:
            wanted[match.group(1)] = value
    if want_null and wanted:
        raise invalid("Do not combine metadata=null with metadata[key]=value filters.", param="metadata")
    return wanted, want_null


@router.post("")
async def create(request: Request) -> Response:
    core = core_of(request)
    body = await json_body(request)
    with core.store.lock:
        job = jobs.create(core, body)
        return respond(job.to_api())


@router.get("")
async def list_jobs(request: Request) -> Response:
    core = core_of(request)
    limit = limit_param(request, default=20, maximum=100)
    after = request.query_params.get("after")
    wanted, want_null = _metadata_filter(request)
    with core.store.lock:
        # Newest first; dict order is creation order, which also breaks ties within one second.
        records = [j for j in reversed(core.store.jobs.values()) if jobs.matches_metadata(j, wanted, want_null)]
        chosen, has_more = paginate(records, after, limit)
        return respond(page([j.to_api() for j in chosen], has_more, ids=False))


@router.get("/{job_id}")
async def retrieve(request: Request, job_id: str) -> Response:
    core = core_of(request)
    with core.store.lock:
        return respond(jobs.get(core, job_id).to_api())


@router.post("/{job_id}/cancel")
async def cancel(request: Request, job_id: str) -> Response:
    core = core_of(request)
    with core.store.lock:
        job = jobs.get(core, job_id)
        jobs.cancel(core, job)
        return respond(job.to_api())


@router.post("/{job_id}/pause")
async def pause(request: Request, job_id: str) -> Response:
    core = core_of(request)
    with core.store.lock:
        job = jobs.get(core, job_id)
        jobs.pause(core, job)
        return respond(job.to_api())


@router.post("/{job_id}/resume")
async def resume(request: Request, job_id: str) -> Response:
    core = core_of(request)
    with core.store.lock:
        job = jobs.get(core, job_id)
        jobs.resume(core, job)
        return respond(job.to_api())


@router.get("/{job_id}/events")
async def events(request: Request, job_id: str) -> Response:
    core = core_of(request)
    limit = limit_param(request, default=20, maximum=1000)
    after = request.query_params.get("after")
    with core.store.lock:
        job = jobs.get(core, job_id)
        newest_first = sorted(job.events, key=lambda e: (e.created_at, e.seq), reverse=True)
        chosen, has_more = paginate(newest_first, after, limit)
        return respond(page([e.to_api() for e in chosen], has_more, ids=False))


@router.get("/{job_id}/checkpoints")
async def checkpoints(request: Request, job_id: str) -> Response:
    core = core_of(request)
    limit = limit_param(request, default=10, maximum=1000)
    after = request.query_params.get("after")
    with core.store.lock:
        job = jobs.get(core, job_id)
        newest_first = sorted(job.checkpoints, key=lambda c: c.step_number, reverse=True)
        chosen, has_more = paginate(newest_first, after, limit)
        return respond(page([c.to_api() for c in chosen], has_more))
