"""The azure adapter's own rules, without the API: how it authenticates, its URLs, statuses, file rules, typed
hyperparameters, model names and the deployment command."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from api_schemas.jobs import JobStatus
from service.providers.azure import deployment, files
from service.providers.azure.model_names import claims_azure_model
from service.providers.azure.provider import AzureHyperparameters, AzureProvider
from service.providers.base import JobSpec, ProviderError
from service.providers.openai import client as openai_client


@pytest.fixture
def sent(monkeypatch) -> list[httpx.Request]:
    """Every request the adapter sends, answered by a fake Azure resource."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path.endswith("/fine_tuning/jobs") and request.method == "POST":
            return httpx.Response(200, json={**_job("pending"), "model": "gpt-4.1-mini-2025-04-14"})
        if request.url.path.endswith("/files") and request.method == "POST":
            return httpx.Response(
                200,
                json={
                    "id": "file-1",
                    "object": "file",
                    "bytes": 1,
                    "created_at": 1,
                    "filename": "x.jsonl",
                    "purpose": "fine-tune",
                    "status": "processed",
                },
            )
        return httpx.Response(200, json=_job("pausing"))

    transport = httpx.MockTransport(handler)
    monkeypatch.setattr(openai_client.net, "sync_client", lambda **kw: httpx.Client(transport=transport))
    return requests


def _job(status: str) -> dict:
    return {
        "id": "ftjob-1",
        "object": "fine_tuning.job",
        "status": status,
        "model": "gpt-4.1-mini-2025-04-14",
        "created_at": 1,
        "training_file": "file-1",
        "hyperparameters": {},
        "seed": 1,
        "result_files": [],
        "organization_id": "org",
        "fine_tuned_model": None,
        "finished_at": None,
        "trained_tokens": None,
        "validation_file": None,
        "error": None,
    }


def test_calls_go_to_the_v1_api_with_an_api_key_header_and_no_bearer(sent, tmp_path):
    provider = AzureProvider(endpoint="https://res.openai.azure.com/", api_key="k-123", max_retries=0)
    job = provider.create_job(
        JobSpec(
            our_job_id="job_1",
            model="gpt-4.1-mini",
            method="supervised",
            training_file="file-1",
            hyperparameters={"n_epochs": 2, "training_type": "developer"},
        )
    )
    assert job.status == JobStatus.queued and job.raw_status == "pending"
    assert provider.get_job("ftjob-1").status == JobStatus.running  # "pausing": still training until it stops
    request = sent[0]
    assert str(request.url) == "https://res.openai.azure.com/openai/v1/fine_tuning/jobs"
    assert request.headers["api-key"] == "k-123" and "authorization" not in request.headers
    body = httpx.Request("POST", "/", content=request.content).read().decode()
    assert '"trainingType":"developer"' in body.replace(" ", "") and "training_type" not in body
    assert '"finetune_job_id":"job_1"' in body.replace(" ", "")


def test_uploads_carry_a_bom_and_big_files_are_refused_before_sending(sent, tmp_path, monkeypatch):
    data = tmp_path / "train.jsonl"
    data.write_bytes(b'{"messages": []}\n')
    provider = AzureProvider(endpoint="https://res.openai.azure.com", api_key="k", max_retries=0)
    assert provider.upload_file(data, sha256="ab" * 32, purpose="fine-tune") == "file-1"
    assert b"\xef\xbb\xbf{" in sent[-1].content and f"{'ab' * 32}.jsonl".encode() in sent[-1].content
    assert data.read_bytes().startswith(b"{"), "the dataset itself is left as it was"

    monkeypatch.setattr(files, "MAX_FILE_BYTES", 10)
    n = len(sent)
    with pytest.raises(ProviderError) as refused:
        provider.upload_file(data, sha256="cd" * 32, purpose="fine-tune")
    assert not refused.value.transient and "512 MB" in refused.value.message and len(sent) == n


def test_hyperparameters_are_typed_and_unknown_ones_refused():
    assert AzureHyperparameters.model_validate({"n_epochs": 3, "training_type": "globalstandard"}).n_epochs == 3
    for bad in ({"lora_rank": 8}, {"training_type": "spot"}, {"n_epochs": 0}):
        with pytest.raises(ValidationError):
            AzureHyperparameters.model_validate(bad)


def test_names_urls_and_the_deployment_command():
    assert claims_azure_model("gpt-4.1-mini-2025-04-14.ft-0123456789abcdef0123456789abcdef")
    assert claims_azure_model("gpt-4o-2024-08-06.ft-0123456789abcdef:ckpt-step-10")
    assert not claims_azure_model("gpt-4.1-mini") and not claims_azure_model("ft:gpt-4.1-mini:org::abc")
    for endpoint in (
        "https://r.openai.azure.com",
        "https://r.openai.azure.com/openai",
        "https://r.openai.azure.com/openai/v1/",
    ):
        assert deployment.v1_base_url(endpoint) == "https://r.openai.azure.com/openai/v1"
    command = deployment.deploy_command("https://my-res.openai.azure.com", "gpt-4.1-mini.ft-abc", "job-1")
    assert command.startswith("az cognitiveservices account deployment create --resource-group <RESOURCE_GROUP>")
    assert "--name my-res --deployment-name job-1 --model-name gpt-4.1-mini.ft-abc --model-version 1" in command
    assert "--model-format OpenAI --sku-name Standard" in command
    assert deployment.resource_name("http://127.0.0.1:8080") == "<RESOURCE_NAME>"
