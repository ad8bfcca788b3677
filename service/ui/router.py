"""The /ui pages. Each reads through the domain services and the project's ownership checks, exactly as the API
does, so another project's id is a 404 here too. Forms post back with the session's CSRF token."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Coroutine
from typing import Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from api_schemas.jobs import JobStatus
from service.api.deps import SessionDep, SettingsDep
from service.api.pagination import PageParams, paginate, select_for_project
from service.datasets import service as datasets
from service.datasets.models import Dataset
from service.datasets.views import dataset_out
from service.errors import ServiceError, Unauthorized
from service.evaluations import service as evaluations
from service.evaluations import states as evaluation_states
from service.evaluations.models import Evaluation
from service.evaluations.views import evaluation_out
from service.jobs import service as jobs
from service.jobs import states as job_states
from service.jobs.models import Job, JobCheckpoint, JobEvent
from service.jobs.views import checkpoint_out, event_out, job_out
from service.projects import service as projects
from service.ui import auth, charts, evaluation_page
from service.ui.auth import CsrfRejected, NotSignedIn, ViewerDep
from service.ui.pages import STATIC_DIR, error_page, render, secure
from service.ui.session import MAX_REVIEWER_CHARS

_STATUS_OF_KIND = {"not_found": 404, "conflict": 409, "forbidden": 403, "unauthorized": 401, "invalid": 400}


class UiRoute(APIRoute):
    """Answers of /ui routes: HTML error pages instead of problems, the sign-in page for anonymous visitors, and the
    security headers on everything."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                response = await handler(request)
            except NotSignedIn:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)
            except CsrfRejected as exc:
                response = error_page(request, 403, "Form refused", str(exc))
            except RequestValidationError as exc:
                fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) or "request" for e in exc.errors())
                response = error_page(request, 400, "Bad request", f"invalid value for {fields}")
            except ServiceError as exc:
                response = error_page(request, _STATUS_OF_KIND.get(exc.kind, 400), "Not available", exc.detail)
            return secure(response, cache=request.url.path.startswith("/ui/static/"))

        return answer


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=UiRoute)

ACTIVE_JOB = {s.value for s in JobStatus} - {s.value for s in job_states.TERMINAL}
LIST_LIMIT = 50


def _safe_next(target: str | None) -> str:
    """Only a path of this UI, never another host (``//evil``) or scheme."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/jobs"


# --- static files and sign-in -------------------------------------------------------------------------------------

_STATIC = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = _STATIC.get(name)
    if path is None:
        return Response(status_code=404, content=b"not found", media_type="text/plain")
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"cache-control": "public, max-age=86400"})


@router.get("")
@router.get("/")
def home() -> Response:
    return RedirectResponse("/ui/jobs", status_code=303)


@router.get("/login")
def login_form(request: Request, settings: SettingsDep, next: str | None = Query(None, max_length=2000)) -> Response:
    session = auth.read_session(request, settings) or auth.new_anonymous(settings)
    response = render(request, "login.html", csrf=session.csrf, next=_safe_next(next), error=None, reviewer="")
    auth.store(response, request, settings, session)
    return response


@router.post("/login")
async def login(request: Request, db: SessionDep, settings: SettingsDep) -> Response:
    session = auth.read_session(request, settings)
    fields = await auth.check_form(request, session)
    reviewer = (fields.get("reviewer") or "").strip()
    api_key = (fields.get("api_key") or "").strip()
    target = _safe_next(fields.get("next"))

    def again(status: int, field: str, message: str) -> Response:
        assert session is not None
        return render(
            request,
            "login.html",
            status_code=status,
            csrf=session.csrf,
            next=target,
            error={"field": field, "message": message},
            reviewer=reviewer[:MAX_REVIEWER_CHARS],
        )

    if not api_key:
        return again(400, "api_key", "enter the project's API key")
    # The name signs review ratings, whose contract refuses line breaks and other control characters.
    if not reviewer or len(reviewer) > MAX_REVIEWER_CHARS or not reviewer.isprintable():
        return again(
            400,
            "reviewer",
            f"enter your name (1 to {MAX_REVIEWER_CHARS} printable characters): reviews are signed with it",
        )
    try:
        key = projects.authenticate(db, api_key, settings.server_secret())
    except Unauthorized:
        return again(401, "api_key", "this API key is not valid (or was revoked)")
    db.commit()
    response = RedirectResponse(target, status_code=303)
    auth.store(response, request, settings, auth.new_signed_in(settings, key, reviewer))
    return response


@router.post("/logout")
async def logout(request: Request, settings: SettingsDep) -> Response:
    await auth.check_form(request, auth.read_session(request, settings))
    response = RedirectResponse("/ui/login", status_code=303)
    auth.clear(response, request)
    return response


# --- datasets ------------------------------------------------------------------------------------------------------


@router.get("/datasets")
def dataset_list(
    request: Request, viewer: ViewerDep, db: SessionDep, after: str | None = Query(None, pattern=r"^[A-Za-z0-9_]+$")
) -> Response:
    page = paginate(
        db,
        select_for_project(Dataset, viewer.project_id),
        Dataset,
        PageParams(limit=LIST_LIMIT, after=after),
        dataset_out,
    )
    return render(request, "datasets.html", ui=viewer, nav="datasets", page=page)


@router.get("/datasets/{dataset_id}")
def dataset_detail(
    request: Request,
    dataset_id: str,
    viewer: ViewerDep,
    db: SessionDep,
    severity: Literal["error", "warning"] | None = Query(None),
) -> Response:
    ds = datasets.get_dataset(db, viewer.project_id, dataset_id)
    report = ds.report or {}
    issues = [i for i in report.get("issues") or [] if severity is None or i.get("severity") == severity]
    issues.sort(key=lambda i: (i.get("line") or 0, i.get("field") or ""))
    return render(
        request,
        "dataset.html",
        ui=viewer,
        nav="datasets",
        ds=dataset_out(ds),
        report=report,
        issues=issues[:1000],
        n_issues=len(issues),
        severity=severity,
    )


# --- jobs ----------------------------------------------------------------------------------------------------------


@router.get("/jobs")
def job_list(
    request: Request, viewer: ViewerDep, db: SessionDep, after: str | None = Query(None, pattern=r"^[A-Za-z0-9_]+$")
) -> Response:
    page = paginate(
        db, select_for_project(Job, viewer.project_id), Job, PageParams(limit=LIST_LIMIT, after=after), job_out
    )
    return render(request, "jobs.html", ui=viewer, nav="jobs", page=page)


def _curve(db: Any, job: Job) -> tuple[Any, int]:
    metrics = jobs.job_metrics(db, job)
    return charts.loss_curve(metrics["points"]), len(metrics["points"])


@router.get("/jobs/{job_id}")
def job_detail(request: Request, job_id: str, viewer: ViewerDep, db: SessionDep) -> Response:
    from sqlmodel import select

    job = jobs.get_job(db, viewer.project_id, job_id)
    chart, n_points = _curve(db, job)
    events = paginate(
        db,
        # Metrics events are the chart's points; the table keeps what people read (status changes, messages).
        select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type != "metrics"),
        JobEvent,
        PageParams(limit=100, after=None),
        event_out,
    )
    checkpoints = paginate(
        db,
        select(JobCheckpoint).where(JobCheckpoint.job_id == job.id),
        JobCheckpoint,
        PageParams(limit=100, after=None),
        checkpoint_out,
    )
    base_url = str(request.base_url).rstrip("/") + "/v1"
    return render(
        request,
        "job.html",
        ui=viewer,
        nav="jobs",
        job=job_out(job),
        chart=chart,
        n_points=n_points,
        active=job.status in ACTIVE_JOB,
        events=events.data,
        checkpoints=checkpoints.data,
        base_url=base_url,
    )


@router.get("/jobs/{job_id}/curve")
def job_curve(job_id: str, viewer: ViewerDep, db: SessionDep) -> Response:
    """The loss chart again, for the job page to swap in while the job is active."""
    job = jobs.get_job(db, viewer.project_id, job_id)
    chart, n_points = _curve(db, job)
    return JSONResponse(
        {"status": job.status, "active": job.status in ACTIVE_JOB, "points": n_points, "svg": str(chart)}
    )


# --- evaluations ---------------------------------------------------------------------------------------------------


@router.get("/evaluations")
def evaluation_list(
    request: Request, viewer: ViewerDep, db: SessionDep, after: str | None = Query(None, pattern=r"^[A-Za-z0-9_]+$")
) -> Response:
    page = paginate(
        db,
        select_for_project(Evaluation, viewer.project_id),
        Evaluation,
        PageParams(limit=LIST_LIMIT, after=after),
        evaluation_out,
    )
    return render(request, "evaluations.html", ui=viewer, nav="evaluations", page=page)


@router.get("/evaluations/{evaluation_id}")
def evaluation_detail(
    request: Request,
    evaluation_id: str,
    viewer: ViewerDep,
    db: SessionDep,
    candidate: str | None = Query(None, max_length=64),
    only: Literal["disagreements", "failed"] | None = Query(None),
    page: int = Query(1, ge=1, le=100000),
) -> Response:
    evaluation = evaluations.get_evaluation(db, viewer.project_id, evaluation_id)
    out = evaluation_out(evaluation)
    shown = evaluation_page.examples(db, evaluation, candidate, only, page)

    def link(**changes: Any) -> str:
        params = {"candidate": shown.candidate, "only": shown.only, "page": None, **changes}
        query = urlencode({k: v for k, v in params.items() if v not in (None, "", 1)})
        return f"/ui/evaluations/{evaluation.id}" + (f"?{query}" if query else "") + "#examples"

    return render(
        request,
        "evaluation.html",
        ui=viewer,
        nav="evaluations",
        ev=out,
        results=out.model_dump(mode="json")["results"] or {},
        active=evaluation.status not in {s.value for s in evaluation_states.TERMINAL},
        examples=shown,
        link=link,
    )


# --- human review --------------------------------------------------------------------------------------------------

REVIEW_MODES = ("pass_fail", "score", "pairwise")


def _field_problem(exc: Exception) -> str:
    """A validation error as one line naming the field."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors())
    errors = getattr(exc, "errors", None) or []
    fields = ", ".join(str(e.get("field")) for e in errors if isinstance(e, dict) and e.get("field"))
    return f"{fields}: {exc}" if fields else str(exc)


@router.post("/evaluations/{evaluation_id}/review")
async def start_review(request: Request, evaluation_id: str, viewer: ViewerDep, db: SessionDep) -> Response:
    from pydantic import ValidationError

    from api_schemas.reviews import ReviewQueueCreate
    from service.errors import InvalidInput
    from service.reviews import service as reviews

    fields = await auth.check_form(request, viewer.session)
    try:
        body = ReviewQueueCreate.model_validate(
            {
                "mode": fields.get("mode") or "pass_fail",
                "size": int(fields.get("size") or 20),
                "reviewers_per_item": int(fields.get("reviewers_per_item") or 1),
            }
        )
        queue = reviews.create_queue(db, viewer.project_id, evaluation_id, body)
    except (ValidationError, ValueError, InvalidInput) as exc:
        return error_page(request, 400, "The review could not start", _field_problem(exc), ui=viewer)
    db.commit()
    return RedirectResponse(f"/ui/reviews/{queue.id}", status_code=303)


@router.get("/reviews")
def review_list(
    request: Request, viewer: ViewerDep, db: SessionDep, after: str | None = Query(None, pattern=r"^[A-Za-z0-9_]+$")
) -> Response:
    from service.reviews import service as reviews
    from service.reviews.models import ReviewQueue

    page = paginate(
        db,
        select_for_project(ReviewQueue, viewer.project_id),
        ReviewQueue,
        PageParams(limit=LIST_LIMIT, after=after),
        lambda q: reviews.queue_view(db, q),
    )
    return render(request, "reviews.html", ui=viewer, nav="reviews", page=page)


@router.get("/reviews/{queue_id}")
def review_queue(request: Request, queue_id: str, viewer: ViewerDep, db: SessionDep) -> Response:
    from service.reviews import service as reviews

    queue = reviews.get_queue(db, viewer.project_id, queue_id)
    items, more = reviews.next_items(db, viewer.project_id, queue.id, viewer.reviewer, limit=5)
    summary = reviews.queue_summary(db, viewer.project_id, queue.id)
    return render(
        request,
        "review.html",
        ui=viewer,
        nav="reviews",
        queue=reviews.queue_view(db, queue),
        items=items,
        more=more,
        summary=summary,
    )


@router.post("/reviews/{queue_id}/items/{item_id}/rating")
async def rate_item(request: Request, queue_id: str, item_id: str, viewer: ViewerDep, db: SessionDep) -> Response:
    from pydantic import ValidationError

    from api_schemas.reviews import ReviewRatingCreate
    from service.errors import InvalidInput
    from service.reviews import service as reviews

    fields = await auth.check_form(request, viewer.session)
    verdict = fields.get("verdict") or ""
    body: dict[str, Any] = {"reviewer": viewer.reviewer, "comment": (fields.get("comment") or "").strip() or None}
    if verdict in ("pass", "fail"):
        body["passed"] = verdict == "pass"
    elif verdict in ("A", "B", "tie"):
        body["preference"] = verdict
    elif fields.get("score"):
        body["score"] = int(fields["score"]) if fields["score"].isdigit() else fields["score"]
    try:
        reviews.submit_rating(db, viewer.project_id, queue_id, item_id, ReviewRatingCreate.model_validate(body))
    except (ValidationError, InvalidInput) as exc:
        return error_page(request, 400, "Rating not saved", _field_problem(exc), ui=viewer)
    db.commit()
    return RedirectResponse(f"/ui/reviews/{queue_id}#figures", status_code=303)
