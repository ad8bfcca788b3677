"""Hostile input, as one project's key can send it: values nothing can store, loose types, schemas that reach outside
themselves, rows that cannot be shown, retried creates, evaluations without a single answer, offline docs, and dataset
files made to confuse the sniffer. Every create refuses bad input with a 422 naming the field and commits nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers import wait_for

BASE = "gpt-4.1-mini-2025-04-14"
RAW_JSON = {"content-type": "application/json"}


def _post_raw(client: Any, path: str, body: str, headers: dict[str, str]) -> Any:
    """A JSON body as raw text: the client's own encoder would refuse NaN and lone surrogates."""
    return client.post(path, content=body.encode("utf-8", "surrogatepass"), headers={**headers, **RAW_JSON})


def _job_body(**extra: Any) -> dict[str, Any]:
    return {"training_dataset_id": "ds_0", "provider": "openai", "model": BASE, **extra}


def _evaluation_body(dataset_id: str = "ds_0", **extra: Any) -> dict[str, Any]:
    return {"dataset_id": dataset_id, "candidates": [{"kind": "model", "name": "base", "model": BASE}], **extra}


def _count(settings: Any, model: Any) -> int:
    from sqlmodel import func, select

    from service.db import session_scope

    with session_scope(settings) as s:
        return s.exec(select(func.count()).select_from(model)).one()


# -- values no database or JSON response can hold ---------------------------------------------------------------------


UNSTORABLE = [
    # (route, raw body, field, problem code)
    (
        "/v1/jobs",
        '{"training_dataset_id": "ds_0", "model": "m", "metadata": {"team": "a\\ud800"}}',
        "metadata.team",
        "lone_surrogate",
    ),
    (
        "/v1/jobs",
        '{"training_dataset_id": "ds_0", "model": "m", "metadata": {"team": "a\\u0000b"}}',
        "metadata.team",
        "nul_character",
    ),
    (
        "/v1/evaluations",
        '{"dataset_id": "ds_0", "candidates": [{"kind": "model", "name": "b", "model": "m"}], '
        '"limits": {"requests_per_minute": Infinity}}',
        "limits.requests_per_minute",
        "non_finite_number",
    ),
    (
        "/v1/evaluations",
        '{"dataset_id": "ds_0", "candidates": [{"kind": "model", "name": "b", "model": "m"}], '
        '"sampling": {"temperature": NaN}}',
        "sampling.temperature",
        "non_finite_number",
    ),
    (
        "/v1/evaluations",
        '{"dataset_id": "ds_0", "candidates": [{"kind": "model", "name": "b", "model": "m"}], '
        '"limits": {"tokens_per_minute": 1e400}}',
        "limits.tokens_per_minute",
        "non_finite_number",
    ),
    (
        "/v1/jobs",
        '{"training_dataset_id": "ds_0", "model": "m", "seed": 123456789012345678901234567890}',
        "seed",
        "number_out_of_range",
    ),
    (
        "/v1/webhook-endpoints",
        '{"url": "https://hooks.example.com/x", "description": "\\udfff"}',
        "description",
        "lone_surrogate",
    ),
    ("/v1/project/api-keys", '{"name": "k\\u0000"}', "name", "nul_character"),
]


@pytest.mark.parametrize(("path", "body", "field", "code"), UNSTORABLE)
def test_unstorable_values_are_422_naming_the_field(client, project, settings, path, body, field, code):
    from service.evaluations.models import Evaluation
    from service.jobs.models import Job
    from service.projects.models import ApiKey
    from service.webhooks.models import WebhookEndpoint

    before = {m: _count(settings, m) for m in (Job, Evaluation, WebhookEndpoint, ApiKey)}
    r = _post_raw(client, path, body, project["headers"])
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "unstorable_value"
    assert {(e["field"], e["code"]) for e in problem["errors"]} == {(field, code)}
    assert {m: _count(settings, m) for m in before} == before  # nothing committed
    assert client.get("/v1/jobs", headers=project["headers"]).status_code == 200


def test_nul_in_an_upload_form_is_422(client, project, chat_jsonl, settings):
    from service.datasets.models import Dataset

    h = project["headers"]
    r = client.post("/v1/datasets", files={"file": ("t.jsonl", chat_jsonl)}, data={"format": "chat\x00"}, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "unstorable_value" and r.json()["errors"][0]["field"] == "format"
    # Written by hand: HTTP clients percent-encode a NUL in a file name.
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="t\x00.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + chat_jsonl + b"\r\n--b--\r\n"
    )
    r = client.post("/v1/datasets", content=body, headers={**h, "content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "unstorable_value" and r.json()["errors"][0]["field"] == "filename"
    assert _count(settings, Dataset) == 0


def test_deep_nesting_is_422_not_500(client, project):
    deep = "[" * 900 + "]" * 900
    body = '{"training_dataset_id": "ds_0", "model": "m", "method": {"hyperparameters": {"x": ' + deep + "}}}"
    r = _post_raw(client, "/v1/jobs", body, project["headers"])
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["code"] == "too_deep"
    assert r.json()["errors"][0]["field"].startswith("method.hyperparameters.x.0.0")
    # Deeper than Python's own parser goes: still a problem, not a crash.
    r = _post_raw(client, "/v1/jobs", "[" * 100_000 + "]" * 100_000, project["headers"])
    assert r.status_code == 422, r.text


# -- strict types on the public contract ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_evaluation_body(limits={"max_concurrency": "3"}), "limits.max_concurrency"),
        (_evaluation_body(limits={"max_concurrency": True}), "limits.max_concurrency"),
        (_evaluation_body(sampling={"max_tokens": 3.5}), "sampling.max_tokens"),
        (_evaluation_body(sampling={"temperature": "0.5"}), "sampling.temperature"),
        (_evaluation_body(limits={"requests_per_minute": 1e300}), "limits.requests_per_minute"),
        (_evaluation_body(max_examples="10"), "max_examples"),
        (
            _evaluation_body(candidates=[{"kind": "model", "name": "b", "model": BASE, "params": {"messages": []}}]),
            "candidates.0.model.params",
        ),
        (
            _evaluation_body(candidates=[{"kind": "model", "name": "b", "model": BASE, "params": {"n": 2}}]),
            "candidates.0.model.params",
        ),
        (
            _evaluation_body(graders=[{"type": "exact_match", "normalization": {"strip": 1}}]),
            "graders.0.exact_match.normalization.strip",
        ),
    ],
)
def test_loose_types_are_not_coerced_on_evaluations(client, project, body, field):
    r = client.post("/v1/evaluations", json=body, headers=project["headers"])
    assert r.status_code == 422, r.text
    assert field in {e["field"] for e in r.json()["errors"]}, r.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_job_body(seed="3"), "seed"),
        (_job_body(seed=True), "seed"),
        (_job_body(suffix=3), "suffix"),
        (_job_body(metadata={"a": 1}), "metadata.a"),
        (_job_body(max_cost_usd=1e300), "max_cost_usd"),
    ],
)
def test_loose_types_are_not_coerced_on_jobs(client, project, body, field):
    r = client.post("/v1/jobs", json=body, headers=project["headers"])
    assert r.status_code == 422, r.text
    assert field in {e["field"] for e in r.json()["errors"]}, r.json()


def test_numbers_and_strings_where_the_contract_allows_them(client, project):
    """Strictness refuses coercion, not the JSON forms the contract documents: an integer where a number is expected,
    enum values and decimal amounts as strings."""
    body = _evaluation_body(limits={"requests_per_minute": 60}, sampling={"temperature": 1}, mode="batch")
    r = client.post("/v1/evaluations", json=body, headers=project["headers"])
    assert r.status_code == 404, r.text  # valid: it gets as far as looking the dataset up
    r = client.post("/v1/jobs", json=_job_body(max_cost_usd="12.50"), headers=project["headers"])
    assert r.status_code == 404, r.text


def test_hyperparameters_are_strict_too(client, project, chat_jsonl, worker):
    ds = client.post("/v1/datasets", files={"file": ("t.jsonl", chat_jsonl)}, headers=project["headers"]).json()
    wait_for(lambda: client.get(f"/v1/datasets/{ds['id']}", headers=project["headers"]).json()["status"] == "ready")
    body = _job_body(training_dataset_id=ds["id"], method={"hyperparameters": {"n_epochs": "3"}})
    r = client.post("/v1/jobs", json=body, headers=project["headers"])
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_hyperparameters"


# -- schemas resolve only references inside themselves ----------------------------------------------------------------


def test_json_schema_references_outside_the_schema_are_refused(client, project, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"nested": {"enum": ["the-secret-value"]}}))
    for ref in (f"file://{secret}#/nested", "http://127.0.0.1:9/schema.json", "other.json#/x", "#/$defs/missing"):
        grader = {"type": "json_schema", "json_schema": {"properties": {"a": {"$ref": ref}}}}
        r = client.post("/v1/evaluations", json=_evaluation_body(graders=[grader]), headers=project["headers"])
        assert r.status_code == 422, r.text
        (error,) = r.json()["errors"]
        assert error["field"] == "graders.0.json_schema.json_schema"
        assert ref in error["message"] and "the-secret-value" not in r.text
    inside = {"$defs": {"x": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/x"}}}
    grader = {"type": "json_schema", "json_schema": inside}
    r = client.post("/v1/evaluations", json=_evaluation_body(graders=[grader]), headers=project["headers"])
    assert r.status_code == 404, r.text  # the schema is fine; the dataset ds_0 does not exist


def test_json_schema_grader_never_reads_a_file_even_from_a_stored_spec(tmp_path):
    """A spec stored before references were checked (built here without validation) still reads nothing."""
    from api_schemas.graders import JsonSchemaGraderSpec
    from service.evaluations.graders.base import Sample
    from service.evaluations.graders.json_graders import JsonSchemaGrader

    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"nested": {"enum": ["the-secret-value"]}}))
    schema = {"properties": {"a": {"$ref": f"file://{secret}#/nested"}}}
    grader = JsonSchemaGrader(JsonSchemaGraderSpec.model_construct(name="s", json_schema=schema, strip_code_fence=True))
    score = grader.grade(Sample(output='{"a": 1}', reference=None, messages=[], key="test:0"))
    assert "the-secret-value" not in json.dumps(score.model_dump())
    assert score.value is None and score.error


def test_a_served_answer_with_lone_surrogates_or_nul_is_stored_readable():
    """A hostile endpoint's answer ("\\ud800" is a valid JSON escape) must not fail the sample's insert on every
    retry, nor every later read of the samples."""
    from service.evaluations.generation.types import GenResult

    result = GenResult(key="k", ok=True, output="a\ud800b\x00c", model="m\udfff", total_s=0.0, attempts=1)
    assert result.output is not None and result.model is not None
    result.output.encode("utf-8")  # raises if a surrogate is left
    result.model.encode("utf-8")
    assert "\x00" not in result.output and result.output.startswith("a") and result.output.endswith("c")


# -- reading survives stored values -----------------------------------------------------------------------------------


def test_a_row_that_cannot_be_shown_does_not_break_its_list(client, project, settings):
    from service.db import session_scope
    from service.webhooks.models import WebhookEndpoint

    h = project["headers"]
    ids = []
    for i in range(3):
        r = client.post("/v1/webhook-endpoints", json={"url": f"https://hooks.example.com/{i}"}, headers=h)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    with session_scope(settings) as s:  # a shape no version of the API writes
        row = s.get(WebhookEndpoint, ids[1])
        row.event_types = {"not": "a list"}
        s.add(row)
    r = client.get("/v1/webhook-endpoints", headers=h)
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()["data"]] == [ids[2], ids[0]]
    # Paging walks past it too.
    first = client.get("/v1/webhook-endpoints", params={"limit": 2}, headers=h).json()
    rest = client.get("/v1/webhook-endpoints", params={"limit": 2, "after": first["next_cursor"]}, headers=h).json()
    assert [e["id"] for e in first["data"] + rest["data"]] == [ids[2], ids[0]]


def test_a_stored_lone_surrogate_does_not_break_the_job_list(client, project, settings, chat_jsonl):
    """What the issue saw: a job saved with a lone surrogate in its metadata made every GET /v1/jobs a 500."""
    import sqlalchemy as sa

    from service.db import session_scope
    from service.jobs.models import Job

    h = project["headers"]
    if (settings.database_url or "").startswith("postgresql"):
        pytest.skip("PostgreSQL cannot store a lone surrogate at all")
    ds = client.post("/v1/datasets", files={"file": ("t.jsonl", chat_jsonl)}, headers=h).json()
    with session_scope(settings) as s:
        job = Job(
            project_id=project["id"],
            provider="openai",
            base_model=BASE,
            training_dataset_id=ds["id"],
            method={"type": "supervised", "hyperparameters": {}},
            status="failed",
            metadata_={"team": "a\ud800"},
        )
        s.add(job)
    with session_scope(settings) as s:
        assert s.exec(sa.select(sa.func.count()).select_from(Job)).one()[0] == 1
    r = client.get("/v1/jobs", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == []


def test_an_answer_that_cannot_be_sent_commits_nothing():
    """The issue's ghost evaluation: the create committed, then its answer failed to render (Infinity) and the
    client got a 500 for an object that was running. The answer is rendered before the commit now."""
    from service.api.creating import respond_created
    from service.api.deps import Caller

    class Session:
        commits = 0

        def commit(self) -> None:
            self.commits += 1

    session = Session()
    with pytest.raises(ValueError):
        respond_created(
            session,  # type: ignore[arg-type]
            Caller(project_id="proj_x", api_key_id="key_x"),
            idempotency_key=None,
            route="POST /v1/things",
            request_fingerprint="f",
            create=lambda: (201, {"requests_per_minute": float("inf")}),
        )
    assert session.commits == 0


# -- retried creates --------------------------------------------------------------------------------------------------


def test_api_key_create_honours_idempotency_key(client, project, settings):
    from service.projects.models import ApiKey

    h = {**project["headers"], "Idempotency-Key": "key-1"}
    first = client.post("/v1/project/api-keys", json={"name": "ci"}, headers=h)
    again = client.post("/v1/project/api-keys", json={"name": "ci"}, headers=h)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json()
    assert _count(settings, ApiKey) == 2  # the project's own key and this one
    other = client.post("/v1/project/api-keys", json={"name": "other"}, headers=h)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"


def test_webhook_secret_rotation_and_test_honour_idempotency_key(client, project):
    h = project["headers"]
    ep = client.post("/v1/webhook-endpoints", json={"url": "https://hooks.example.com/x"}, headers=h).json()
    hk = {**h, "Idempotency-Key": "rotate-1"}
    a = client.post(f"/v1/webhook-endpoints/{ep['id']}/rotate-secret", headers=hk)
    b = client.post(f"/v1/webhook-endpoints/{ep['id']}/rotate-secret", headers=hk)
    assert a.status_code == b.status_code == 200 and a.json()["secret"] == b.json()["secret"] != ep["secret"]
    ht = {**h, "Idempotency-Key": "test-1"}
    a = client.post(f"/v1/webhook-endpoints/{ep['id']}/test", headers=ht)
    b = client.post(f"/v1/webhook-endpoints/{ep['id']}/test", headers=ht)
    assert a.status_code == b.status_code == 202 and a.json() == b.json()
    hr = {**h, "Idempotency-Key": "redeliver-1"}
    event_id = a.json()["event_id"]
    a = client.post(f"/v1/events/{event_id}/redeliver", headers=hr)
    b = client.post(f"/v1/events/{event_id}/redeliver", headers=hr)
    assert a.status_code == b.status_code == 202 and a.json() == b.json() and a.json()["deliveries"]


# -- evaluations: the judge path, and no answers ----------------------------------------------------------------------


def _ready_dataset(stack: Any, content: bytes) -> dict[str, Any]:
    ds = stack.upload(content, "test.jsonl")
    return wait_for(lambda: (d := stack.get(f"/v1/datasets/{ds['id']}"))["status"] == "ready" and d, timeout=60)


def test_judge_is_accepted_on_evaluations(stack, chat_jsonl):
    ds = _ready_dataset(stack, chat_jsonl)
    rubric = {"type": "llm_rubric", "name": "rubric", "model": BASE, "rubric": "Is the label right?"}
    for judge in ({}, {"base_url": "https://judge.example.com/v1", "api_key": "sk-judge"}):
        body = _evaluation_body(ds["id"], graders=[rubric], judge=judge, max_examples=2)
        r = stack.client.post("/v1/evaluations", json=body, headers=stack.headers)
        assert r.status_code in (201, 422), r.text
        if r.status_code == 422:  # the outbound guard may refuse a host it cannot resolve offline; never a 500
            assert r.json()["code"] == "url_not_allowed", r.text
        else:
            assert "sk-judge" not in r.text
    r = stack.client.post(
        "/v1/evaluations", json=_evaluation_body(ds["id"], judge={"base_url": "ftp://x"}), headers=stack.headers
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "judge.base_url", r.text


def test_an_evaluation_without_a_single_answer_fails(stack, chat_jsonl):
    ds = _ready_dataset(stack, chat_jsonl)
    body = {
        "dataset_id": ds["id"],
        # The server refuses every request of this candidate (400, temperature out of range): each sample fails.
        "candidates": [{"kind": "model", "name": "ghost", "model": BASE, "params": {"temperature": 5}}],
        "max_examples": 3,
    }
    r = stack.client.post("/v1/evaluations", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    done = wait_for(
        lambda: (e := stack.get(f"/v1/evaluations/{r.json()['id']}"))["status"] in {"succeeded", "failed"} and e,
        timeout=90,
    )
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "no_successful_samples"
    (result,) = done["results"]["candidates"]
    assert result["status"] == "failed" and result["n_failed"] == result["n"] == 3


def test_candidate_status_in_results_when_some_answered(stack, chat_jsonl):
    ds = _ready_dataset(stack, chat_jsonl)
    body = {
        "dataset_id": ds["id"],
        "candidates": [
            {"kind": "model", "name": "base", "model": BASE},
            {"kind": "model", "name": "ghost", "model": BASE, "params": {"temperature": 5}},
        ],
        "max_examples": 3,
    }
    r = stack.client.post("/v1/evaluations", json=body, headers=stack.headers)
    assert r.status_code == 201, r.text
    done = wait_for(
        lambda: (e := stack.get(f"/v1/evaluations/{r.json()['id']}"))["status"] in {"succeeded", "failed"} and e,
        timeout=90,
    )
    assert done["status"] == "succeeded", done
    statuses = {c["candidate"]: c["status"] for c in done["results"]["candidates"]}
    assert statuses == {"base": "complete", "ghost": "failed"}


# -- dataset messages -------------------------------------------------------------------------------------------------


def test_dataset_messages_say_what_is_wrong(tmp_path):
    from service.datasets.validation import ValidationOptions, validate_path

    options = ValidationOptions(min_examples=0, duplicates=False)
    nul = tmp_path / "nul.jsonl"
    nul.write_bytes(b"\x00" * 4096)
    report = validate_path(nul, options=options)
    (issue,) = [i for i in report.issues if i.severity == "error"]
    assert issue.code == "binary_file" and "NUL" in issue.message and "UTF-16" not in issue.message

    deep = tmp_path / "deep.jsonl"
    deep.write_bytes(b"[" * 2000 + b"]" * 2000 + b"\n")
    report = validate_path(deep, options=options)
    codes = {i.code for i in report.issues}
    assert "too_deep" in codes and "not_jsonl" not in codes, report.issues


# -- docs on an offline machine ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_nothing_from_other_hosts(client, page):
    import re

    r = client.get(page)
    assert r.status_code == 200, r.text
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""", r.text)
    assets = [u for pair in urls for u in pair if u]
    assert assets, r.text
    assert not [u for u in assets if "//" in u], assets  # every asset is on this server
    for url in assets:
        assert client.get(url).status_code == 200, url
