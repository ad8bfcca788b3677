"""Another project's objects are 404 for every route.

The routes are read from the app, so a new route with a path parameter is checked as soon as it exists, and fails here
until this file knows how to make an object for its parameter (``MAKERS``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ops_support import flat_routes, minimal

from service.openai_compat.errors import is_openai_path

PARAM = re.compile(r"{(\w+)(?::\w+)?}")

# Path parameters that are not objects of a project, with the value to use: what they name is the same for every
# project, or is looked up inside the object of another parameter (which is what decides the 404).
FIXED_VALUES = {
    "provider": "openai",  # PUT /v1/providers/{provider}/credentials stores the caller's own credentials
    "name": "result.csv",  # a file of the job named beside it
    "export_format": "vllm",  # an export of the job named beside it
}
# Routes that do not authenticate with API keys at all: a project key is neither needed nor used there.
NOT_API_KEY_ROUTES = {
    "project_id": "provider webhooks carry the provider's signature (checked with a per-project secret) instead",
}


class World:
    """Objects of project A, made once per test, looked up by path parameter name."""

    def __init__(self, client: Any, settings: Any, owner: dict[str, Any], chat_jsonl: bytes) -> None:
        self.client, self.settings, self.owner, self.chat_jsonl = client, settings, owner, chat_jsonl
        self.made: dict[str, str] = {}

    def get(self, param: str) -> str:
        if param not in self.made:
            self.made[param] = MAKERS[param](self)
        return self.made[param]

    def session(self) -> Any:
        from service.db import session_scope

        return session_scope(self.settings)


def make_dataset(w: World) -> str:
    r = w.client.post("/v1/datasets", files={"file": ("train.jsonl", w.chat_jsonl)}, headers=w.owner["headers"])
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def make_job(w: World) -> str:
    from service.jobs.models import Job

    dataset_id = w.get("dataset_id")
    with w.session() as s:
        job = Job(
            project_id=w.owner["id"],
            provider="openai",
            base_model="gpt-4.1-mini-2025-04-14",
            method={"type": "supervised"},
            training_dataset_id=dataset_id,
            status="running",
        )
        s.add(job)
        s.flush()
        return job.id


def make_evaluation(w: World) -> str:
    body = {
        "dataset_id": w.get("dataset_id"),
        "candidates": [{"name": "remote", "kind": "endpoint", "base_url": "https://example.com/v1", "model": "m"}],
    }
    r = w.client.post("/v1/evaluations", json=body, headers=w.owner["headers"])
    assert r.status_code == 201, r.text
    return r.json()["id"]


def make_event(w: World) -> str:
    from service.events.service import record

    with w.session() as s:
        return record(s, w.owner["id"], "ping", {"object": "ping"}).id


def make_endpoint(w: World) -> str:
    r = w.client.post("/v1/webhook-endpoints", json={"url": "https://example.com/hook"}, headers=w.owner["headers"])
    assert r.status_code == 201, r.text
    return r.json()["id"]


def make_api_key(w: World) -> str:
    r = w.client.post("/v1/project/api-keys", json={"name": "second"}, headers=w.owner["headers"])
    assert r.status_code == 201, r.text
    return r.json()["id"]


def make_fine_tune(w: World) -> str:
    """A succeeded job's fine-tuned model, by the name OpenAI's SDK calls it (``/v1/models/{model}``)."""
    from service.jobs.models import Job

    with w.session() as s:
        job = Job(
            project_id=w.owner["id"],
            provider="openai",
            base_model="gpt-4.1-mini-2025-04-14",
            method={"type": "supervised"},
            training_dataset_id=w.get("dataset_id"),
            status="succeeded",
            fine_tuned_model="ft:gpt-4.1-mini-2025-04-14:team::isolated",
        )
        s.add(job)
        s.flush()
        return job.fine_tuned_model


def make_distill_run(w: World) -> str:
    from service.distill.models import DistillRun

    with w.session() as s:
        run = DistillRun(
            project_id=w.owner["id"], status="generating", source_dataset_id=w.get("dataset_id"), config={}
        )
        s.add(run)
        s.flush()
        return run.id


def make_distillation(w: World) -> str:
    from service.distill.models import Distillation

    with w.session() as s:
        row = Distillation(
            project_id=w.owner["id"],
            status="distilling",
            source_dataset_id=w.get("dataset_id"),
            config={"student": {"provider": "local", "model": "m"}},
        )
        s.add(row)
        s.flush()
        return row.id


def make_review_queue(w: World) -> str:
    """A review queue of a finished evaluation (queues are made only from finished ones), through the API."""
    from service.clock import utcnow
    from service.evaluations.models import Evaluation, EvaluationSample

    with w.session() as s:
        evaluation = Evaluation(
            project_id=w.owner["id"],
            status="succeeded",
            dataset_id=w.get("dataset_id"),
            config={
                "mode": "realtime",
                "candidates": [{"kind": "model", "name": "base", "provider": "openai", "model": "m"}],
                "graders": [{"type": "exact_match", "name": "exact"}],
                "confidence": 0.95,
                "seed": 0,
            },
            finished_at=utcnow(),
        )
        s.add(evaluation)
        s.flush()
        for i in range(4):
            s.add(
                EvaluationSample(
                    evaluation_id=evaluation.id,
                    candidate="base",
                    example_key=f"test:{i}",
                    split="test",
                    example_index=i,
                    input=[{"role": "user", "content": f"q{i}"}],
                    reference="a",
                    output="a",
                    ok=True,
                    scores={"exact": {"value": 1.0, "passed": True}},
                )
            )
        evaluation_id = evaluation.id
    r = w.client.post(f"/v1/evaluations/{evaluation_id}/review", json={"size": 4}, headers=w.owner["headers"])
    assert r.status_code == 201, r.text
    return r.json()["id"]


def make_review_item(w: World) -> str:
    queue_id = w.get("queue_id")
    r = w.client.get(f"/v1/review_queues/{queue_id}/items", headers=w.owner["headers"])
    assert r.status_code == 200, r.text
    return r.json()["data"][0]["id"]


MAKERS: dict[str, Callable[[World], str]] = {
    "dataset_id": make_dataset,
    "file_id": make_dataset,  # OpenAI's files are our datasets
    "model": make_fine_tune,
    "job_id": make_job,
    "evaluation_id": make_evaluation,
    "event_id": make_event,
    "endpoint_id": make_endpoint,
    "key_id": make_api_key,
    "run_id": make_distill_run,
    "distillation_id": make_distillation,
    "queue_id": make_review_queue,
    "item_id": make_review_item,
}


def _operation(spec: dict[str, Any], path: str, method: str) -> dict[str, Any] | None:
    return spec["paths"].get(path, {}).get(method.lower())


def _request_parts(spec: dict[str, Any], op: dict[str, Any] | None) -> dict[str, Any]:
    """Required query parameters and a minimal JSON body, so request validation passes and the lookup decides."""
    if op is None:
        return {}
    parts: dict[str, Any] = {}
    query = {
        p["name"]: minimal(spec, p.get("schema", {}))
        for p in op.get("parameters", [])
        if p.get("in") == "query" and p.get("required")
    }
    if query:
        parts["params"] = query
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        parts["json"] = minimal(spec, content["application/json"].get("schema", {}))
    return parts


def test_other_projects_objects_are_404_on_every_route(client, settings, project, other_project, chat_jsonl):
    spec = client.app.openapi()
    world = World(client, settings, project, chat_jsonl)
    checked, uncovered = [], []
    for route in flat_routes(client.app.routes):
        if not hasattr(route, "methods"):
            continue  # a mount (the docs' packaged assets) serves the same files to everyone
        path = getattr(route, "path_format", None) or getattr(route, "path", "")
        if path.startswith("/ui/"):
            continue  # the web UI signs in with a session cookie, not a key: tests/ui/test_pages.py walks its routes
        params = PARAM.findall(path)
        if not params or all(p in FIXED_VALUES for p in params) or any(p in NOT_API_KEY_ROUTES for p in params):
            continue
        missing = [p for p in params if p not in MAKERS and p not in FIXED_VALUES]
        if missing:
            uncovered.append(f"{sorted(route.methods)} {path}: {missing}")
            continue
        url = path
        for p in params:
            value = FIXED_VALUES[p] if p in FIXED_VALUES else world.get(p)
            url = re.sub(r"{" + p + r"(?::\w+)?}", value, url)
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            parts = _request_parts(spec, _operation(spec, path, method))
            r = client.request(method, url, headers=other_project["headers"], **parts)
            assert r.status_code == 404, f"{method} {path} as another project: {r.status_code} {r.text}"
            if is_openai_path(path):  # OpenAI's error shape, so the SDK raises NotFoundError
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}, (method, path)
            else:
                assert r.headers["content-type"].startswith("application/problem+json"), (method, path)
            if method == "GET" and not any(p in FIXED_VALUES for p in params):
                # The object is there for its owner: the 404 above is the project boundary, not a missing object.
                owner = client.get(url, headers=project["headers"], params=parts.get("params"))
                assert owner.status_code == 200, f"GET {path} as the owner: {owner.status_code} {owner.text}"
            checked.append(f"{method} {path}")
    assert not uncovered, (
        "routes with path parameters this test cannot make objects for (add to MAKERS):\n" + "\n".join(uncovered)
    )
    # Sanity: the walk found the routes (a broken walk would pass with nothing checked).
    assert len(checked) >= 15, checked
