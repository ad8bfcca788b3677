"""The /ui pages through HTTP without a browser: sign-in, CSRF and origin checks, project scoping, escaping,
security headers. (The browser suite checks what only a browser shows: the chart updating, the rendered page.)"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from ui.conftest import csrf_of, sign_in


@pytest.fixture
def browser_client(app):  # type: ignore[no-untyped-def]
    with TestClient(app, raise_server_exceptions=True, base_url="http://testserver") as c:
        yield c


def test_pages_need_sign_in_and_come_back_after_it(browser_client, project) -> None:
    response = browser_client.get("/ui/jobs?after=job_1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fafter%3Djob_1"
    login = browser_client.get(response.headers["location"])
    assert 'name="next" value="/ui/jobs?after=job_1"' in login.text
    response = browser_client.post(
        "/ui/login",
        data={"csrf_token": csrf_of(login.text), "api_key": project["key"], "reviewer": "Ana", "next": "/ui/datasets"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/ui/datasets"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie
    assert project["key"] not in cookie
    page = browser_client.get("/ui/datasets")
    assert page.status_code == 200 and "test project" in page.text and "Ana" in page.text


def test_a_wrong_key_or_missing_name_is_refused_naming_the_field(browser_client, project) -> None:
    token = csrf_of(browser_client.get("/ui/login").text)
    bad_key = browser_client.post("/ui/login", data={"csrf_token": token, "api_key": "sk-nope", "reviewer": "Ana"})
    assert bad_key.status_code == 401 and 'data-field="api_key"' in bad_key.text
    no_name = browser_client.post("/ui/login", data={"csrf_token": token, "api_key": project["key"], "reviewer": " "})
    assert no_name.status_code == 400 and 'data-field="reviewer"' in no_name.text
    two_lines = browser_client.post(
        "/ui/login", data={"csrf_token": token, "api_key": project["key"], "reviewer": "Ana\nBo"}
    )
    assert two_lines.status_code == 400 and 'data-field="reviewer"' in two_lines.text
    assert browser_client.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_forms_need_the_session_token_and_our_origin(browser_client, project) -> None:
    token = csrf_of(browser_client.get("/ui/login").text)
    data = {"api_key": project["key"], "reviewer": "Ana"}
    assert browser_client.post("/ui/login", data=data).status_code == 403
    assert browser_client.post("/ui/login", data={**data, "csrf_token": "forged"}).status_code == 403
    cross = browser_client.post(
        "/ui/login", data={**data, "csrf_token": token}, headers={"origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    sign_in(browser_client, project["key"])
    page = browser_client.get("/ui/jobs")
    # Signing in issues a fresh token: the one from before no longer signs forms.
    assert csrf_of(page.text) != token
    assert browser_client.post("/ui/logout", data={"csrf_token": token}).status_code == 403
    out = browser_client.post("/ui/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and 'finetune_ui=""' in out.headers["set-cookie"]
    assert browser_client.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_next_never_leaves_the_ui(browser_client, project) -> None:
    token = csrf_of(browser_client.get("/ui/login").text)
    for target in ("//evil.example/ui/", "https://evil.example/", "/v1/jobs", "/ui\\@evil"):
        response = browser_client.post(
            "/ui/login",
            data={"csrf_token": token, "api_key": project["key"], "reviewer": "Ana", "next": target},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/ui/jobs", target
        token = csrf_of(browser_client.get("/ui/jobs").text)


def test_a_revoked_key_ends_its_sessions(browser_client, project, settings) -> None:
    from sqlmodel import select

    from service.db import session_scope
    from service.projects.models import ApiKey
    from service.projects.service import revoke_api_key

    sign_in(browser_client, project["key"])
    assert browser_client.get("/ui/jobs").status_code == 200
    with session_scope(settings) as session:
        key = session.exec(select(ApiKey).where(ApiKey.project_id == project["id"])).one()
        revoke_api_key(session, project["id"], key.id)
    assert browser_client.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_a_tampered_cookie_is_no_session(browser_client, project) -> None:
    sign_in(browser_client, project["key"])
    value = browser_client.cookies.get("finetune_ui")
    payload, mac = value.split(".")
    browser_client.cookies.clear()
    browser_client.cookies.set("finetune_ui", payload[:-2] + "AA." + mac, path="/ui")
    assert browser_client.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_security_headers(browser_client, project) -> None:
    sign_in(browser_client, project["key"])
    for path in ("/ui/login", "/ui/jobs", "/ui/jobs/job_missing"):
        response = browser_client.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
    static = browser_client.get("/ui/static/ui.js")
    assert static.status_code == 200 and "javascript" in static.headers["content-type"]
    assert "max-age" in static.headers["cache-control"]
    assert browser_client.get("/ui/static/..%2Fsession.py").status_code == 404


def test_pages_show_the_project_data(browser_client, project, seeded) -> None:
    sign_in(browser_client, project["key"])
    datasets = browser_client.get("/ui/datasets").text
    assert seeded.valid_dataset_id in datasets and seeded.invalid_dataset_id in datasets
    report = browser_client.get(f"/ui/datasets/{seeded.invalid_dataset_id}").text
    rows = re.findall(r'<tr class="sev-error">\s*<td class="num">(\d+)</td>', report)
    assert {"2", "3", "4"} <= set(rows), rows
    job = browser_client.get(f"/ui/jobs/{seeded.job_id}").text
    assert job.count('data-series="train loss"') == 1
    train = job.split('data-series="train loss"')[1].split("</g>")[0]
    assert train.count("<circle") == len(seeded.train_steps)
    assert 'data-active="true"' in job
    assert "<td>training started</td>" in job and "<td>step 3</td>" not in job  # metrics are the chart, not rows
    curve = browser_client.get(f"/ui/jobs/{seeded.job_id}/curve").json()
    assert curve["active"] is True and curve["points"] == len(seeded.train_steps)
    evaluation = browser_client.get(f"/ui/evaluations/{seeded.evaluation_id}?only=disagreements").text
    shown = sorted(int(k) for k in re.findall(r'data-key="test:(\d+)"', evaluation))
    assert shown == seeded.flipped
    assert "<ins>" in evaluation and "<del>" in evaluation


def test_user_content_is_text_never_markup(browser_client, project, seeded) -> None:
    sign_in(browser_client, project["key"])
    page = browser_client.get(f"/ui/evaluations/{seeded.evaluation_id}").text
    assert "<script>document.title" not in page
    assert "&lt;script&gt;document.title" in page


def test_filters_and_bad_parameters(browser_client, project, seeded) -> None:
    sign_in(browser_client, project["key"])
    failed = browser_client.get(f"/ui/evaluations/{seeded.evaluation_id}?only=failed").text
    assert "data-key=" not in failed and "No examples match this filter" in failed
    bad = browser_client.get(f"/ui/evaluations/{seeded.evaluation_id}?only=everything")
    assert bad.status_code == 400 and "only" in bad.text


def test_another_project_sees_none_of_it(browser_client, project, other_project, seeded) -> None:
    sign_in(browser_client, other_project["key"])
    for path in ("/ui/datasets", "/ui/jobs", "/ui/evaluations"):
        page = browser_client.get(path).text
        for ident in (seeded.valid_dataset_id, seeded.job_id, seeded.evaluation_id):
            assert ident not in page
    for path in (
        f"/ui/datasets/{seeded.invalid_dataset_id}",
        f"/ui/jobs/{seeded.job_id}",
        f"/ui/jobs/{seeded.job_id}/curve",
        f"/ui/evaluations/{seeded.evaluation_id}",
    ):
        assert browser_client.get(path).status_code == 404, path


def _start_review(client, evaluation_id: str, **form: str) -> str:  # type: ignore[no-untyped-def]
    page = client.get(f"/ui/evaluations/{evaluation_id}")
    data = {"csrf_token": csrf_of(page.text), "mode": "pass_fail", "size": "6", **form}
    response = client.post(f"/ui/evaluations/{evaluation_id}/review", data=data, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def test_review_queue_blind_items_ratings_and_figures(browser_client, project, other_project, seeded) -> None:
    sign_in(browser_client, project["key"], "Ana")
    queue_id = _start_review(browser_client, seeded.evaluation_id)
    page = browser_client.get(f"/ui/reviews/{queue_id}").text
    # Blind: neither candidate name appears on the queue's page.
    items = page.split('id="items"')[1]
    assert "fine-tuned" not in items and ">base<" not in items
    item_ids = re.findall(r'data-item="([^"]+)"', page)
    assert len(item_ids) == 5
    for n, (item_id, verdict) in enumerate(zip(item_ids[:3], ("pass", "fail", "pass"), strict=True), start=1):
        response = browser_client.post(
            f"/ui/reviews/{queue_id}/items/{item_id}/rating",
            data={"csrf_token": csrf_of(page), "verdict": verdict, "comment": "ok"},
            follow_redirects=False,
        )
        assert response.status_code == 303
        page = browser_client.get(f"/ui/reviews/{queue_id}").text
        assert f'<div class="value" id="n-ratings">{n}</div>' in page
        assert f'data-grader="exact" data-items="{n}"' in page
        assert item_id not in re.findall(r'data-item="([^"]+)"', page)
    listing = browser_client.get("/ui/reviews").text
    assert queue_id in listing
    # A rating without a verdict names the field it lacks.
    bad = browser_client.post(
        f"/ui/reviews/{queue_id}/items/{item_ids[3]}/rating", data={"csrf_token": csrf_of(page), "verdict": ""}
    )
    assert bad.status_code == 400 and "passed" in bad.text
    # No form without the token.
    assert (
        browser_client.post(f"/ui/reviews/{queue_id}/items/{item_ids[3]}/rating", data={"verdict": "pass"}).status_code
        == 403
    )

    browser_client.cookies.clear()
    sign_in(browser_client, other_project["key"], "Bo")
    assert queue_id not in browser_client.get("/ui/reviews").text
    assert browser_client.get(f"/ui/reviews/{queue_id}").status_code == 404
    token = csrf_of(browser_client.get("/ui/reviews").text)
    stolen = browser_client.post(
        f"/ui/reviews/{queue_id}/items/{item_ids[3]}/rating", data={"csrf_token": token, "verdict": "pass"}
    )
    assert stolen.status_code == 404


def test_starting_a_review_names_a_bad_field(browser_client, project, seeded) -> None:
    sign_in(browser_client, project["key"])
    page = browser_client.get(f"/ui/evaluations/{seeded.evaluation_id}")
    response = browser_client.post(
        f"/ui/evaluations/{seeded.evaluation_id}/review",
        data={"csrf_token": csrf_of(page.text), "mode": "pass_fail", "size": "0"},
    )
    assert response.status_code == 400 and "size" in response.text


@pytest.mark.parametrize(
    ("mode", "form", "wrong"),
    [
        ("score", {"score": "4"}, {"score": "9"}),
        ("pairwise", {"verdict": "B"}, {"verdict": "pass"}),
    ],
)
def test_score_and_pairwise_reviews(browser_client, project, seeded, mode, form, wrong) -> None:  # type: ignore[no-untyped-def]
    sign_in(browser_client, project["key"], "Ana")
    queue_id = _start_review(browser_client, seeded.evaluation_id, mode=mode)
    page = browser_client.get(f"/ui/reviews/{queue_id}").text
    item = re.findall(r'data-item="([^"]+)"', page)[0]
    if mode == "pairwise":
        assert "Answer A" in page and "Answer B" in page and 'value="tie"' in page
    else:
        assert page.count('name="score"') >= 5
    url = f"/ui/reviews/{queue_id}/items/{item}/rating"
    refused = browser_client.post(url, data={"csrf_token": csrf_of(page), **wrong})
    assert refused.status_code == 400
    assert (
        browser_client.post(url, data={"csrf_token": csrf_of(page), **form}, follow_redirects=False).status_code == 303
    )
    after = browser_client.get(f"/ui/reviews/{queue_id}").text
    assert '<div class="value" id="n-ratings">1</div>' in after


def test_two_reviewers_see_agreement_between_them(app, project, seeded) -> None:  # type: ignore[no-untyped-def]
    with (
        TestClient(app, base_url="http://testserver") as ana,
        TestClient(app, base_url="http://testserver") as bo,
    ):
        sign_in(ana, project["key"], "Ana")
        sign_in(bo, project["key"], "Bo")
        queue_id = _start_review(ana, seeded.evaluation_id, reviewers_per_item="2")
        for client, verdicts in ((ana, ("pass", "fail", "pass")), (bo, ("pass", "fail", "fail"))):
            for verdict in verdicts:
                page = client.get(f"/ui/reviews/{queue_id}").text
                item = re.findall(r'data-item="([^"]+)"', page)[0]
                response = client.post(
                    f"/ui/reviews/{queue_id}/items/{item}/rating",
                    data={"csrf_token": csrf_of(page), "verdict": verdict},
                    follow_redirects=False,
                )
                assert response.status_code == 303
        page = bo.get(f"/ui/reviews/{queue_id}").text
        assert 'Krippendorff\'s alpha (nominal) <span class="estimate">' in page and "over 3 items" in page
        assert '<div class="value" id="my-ratings">3</div>' in page
        assert '<div class="value" id="n-ratings">6</div>' in page


def test_the_cookie_is_secure_over_https(app) -> None:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url="https://testserver") as client:
        assert "Secure" in client.get("/ui/login").headers["set-cookie"]
    with TestClient(app, base_url="http://testserver") as client:
        assert "Secure" not in client.get("/ui/login").headers["set-cookie"]


def test_signed_in_pages_draw_on_the_keys_budget_not_the_addresss(settings, project) -> None:
    from service.api.app import create_app

    tight = create_app(
        settings.model_copy(update={"anonymous_rate_limit_burst": 5, "anonymous_rate_limit_per_s": 0.01})
    )
    # Its own address: on the PostgreSQL + Redis run the buckets live in Redis across tests, and this one is left
    # empty, refilling at 0.01/s, which would throttle the next test's sign-in from the shared test address.
    with TestClient(tight, base_url="http://testserver", client=("tight-budget-test", 50000)) as client:
        sign_in(client, project["key"])  # 2 anonymous requests: the form and its post
        statuses = {client.get("/ui/jobs").status_code for _ in range(20)}
        assert statuses == {200}
        client.cookies.clear()
        anonymous = [client.get("/ui/login").status_code for _ in range(6)]
        assert anonymous[-1] == 429


def _flat(routes):  # type: ignore[no-untyped-def]
    """Every route, looking inside included routers (FastAPI may keep one entry per router)."""
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            yield from _flat(candidates())
        else:
            yield route


def test_every_ui_route_with_an_object_is_404_for_another_project(app, project, other_project, seeded) -> None:  # type: ignore[no-untyped-def]
    """Like the API's isolation walk (tests/unit/ops/test_ops_isolation.py), read from the app's routes, so a new
    /ui route with a path parameter is checked as soon as it exists; signed in with a UI session instead of a key."""
    param = re.compile(r"{(\w+)}")
    with (
        TestClient(app, base_url="http://testserver") as owner,
        TestClient(app, base_url="http://testserver") as other,
    ):
        sign_in(owner, project["key"], "Ana")
        sign_in(other, other_project["key"], "Bo")
        queue_id = _start_review(owner, seeded.evaluation_id)
        item_id = re.findall(r'data-item="([^"]+)"', owner.get(f"/ui/reviews/{queue_id}").text)[0]
        objects = {
            "dataset_id": seeded.invalid_dataset_id,
            "job_id": seeded.job_id,
            "evaluation_id": seeded.evaluation_id,
            "queue_id": queue_id,
            "item_id": item_id,
        }
        token = csrf_of(other.get("/ui/jobs").text)
        checked, uncovered = [], []
        for route in _flat(app.routes):
            path = getattr(route, "path_format", None) or getattr(route, "path", "")
            if not hasattr(route, "methods") or not path.startswith("/ui/"):
                continue
            params = param.findall(path)
            if not params or path == "/ui/static/{name}":  # the same packaged files for everyone
                continue
            if any(p not in objects for p in params):
                uncovered.append(path)
                continue
            url = path.format(**objects)
            for method in sorted(route.methods - {"HEAD"}):
                data = {"csrf_token": token, "verdict": "pass", "mode": "pass_fail", "size": "2"}
                r = other.request(method, url, data=data if method == "POST" else None)
                assert r.status_code == 404, f"{method} {path} as another project: {r.status_code}"
                if method == "GET":
                    assert owner.get(url).status_code == 200, f"GET {path} as the owner"
                checked.append(f"{method} {path}")
        assert not uncovered, f"/ui routes this walk cannot make objects for: {uncovered}"
        assert len(checked) >= 7, checked
