"""The emulator's Azure mode against OpenAI's published description (../shared/reference/openai-openapi.yml): Azure's
v1 API is OpenAI's surface, so its answers must match OpenAI's schemas except for the differences Azure documents,
listed here with their reason (and the test fails when a listed one no longer occurs, so the list stays honest).

Azure's documented differences (Microsoft Learn: "Azure OpenAI v1 API", "Customize a model with fine-tuning",
"Deploy a fine-tuned model"), what the emulator does for each, and where it is checked:
- base URL ``{endpoint}/openai/v1``; ``/v1`` alone is 404 in Azure's error shape            (this test)
- ``api-key`` header; 401 ``{"error": {"code": "401", "message"}}``, no ``type`` / ``param``  (this test)
- training files: JSONL in UTF-8 with a byte-order mark                                    (this test)
- job status ``pending`` where OpenAI says ``queued``                                      (this test)
- fine-tunes named ``<base>.ft-<hex>``, checkpoints ``...:ckpt-step-N``                    (this test)
- ``trainingType``: standard | globalstandard | developer                                  (this test)
- fine-tunes answer only through a deployment; else 404 ``DeploymentNotFound``              (this test)
- its own model list (gpt-4o-mini: supervised only)                                        (test_azure_provider)
"""

from __future__ import annotations

import httpx
import openai
import pytest
from openai_contract import Recorder, differences

from emulator import EmulatorConfig, JobTiming, OpenAIEmulator
from emulator.samples import training_jsonl

spec = pytest.importorskip("emulator.spec", reason="needs jsonschema and pyyaml")
pytestmark = pytest.mark.skipif(
    not spec.reference_path().exists(), reason=f"no OpenAI reference description at {spec.REFERENCE_DIR}"
)

KEY = "azure-test-key"
_AZURE_ERROR = "Azure's own error shape ({code, message}: no type or param) for auth, routes and deployments"
AZURE_DIFFERENCES: dict[tuple[str, str], str] = {
    ("FineTuningJob", "status"): "Azure says 'pending' where OpenAI says 'queued' (and 'paused' is not in the enum)",
    ("ErrorResponse", "error"): _AZURE_ERROR,
    ("OpenAIFile", "expires_at"): "null for files that never expire (as OpenAI's own API)",
    ("OpenAIFile", "status_details"): "deprecated field sent as null (as OpenAI's own API)",
    ("ListFilesResponse", "data.*.expires_at"): "null for files that never expire (as OpenAI's own API)",
    ("ListFilesResponse", "data.*.status_details"): "deprecated field sent as null (as OpenAI's own API)",
}


@pytest.fixture
def emu():
    config = EmulatorConfig.azure_resource(speed=0, api_keys=[KEY], job_timing=JobTiming())
    with OpenAIEmulator(config) as e:
        yield e


def _client(emu: OpenAIEmulator, recorder: Recorder, key: str = KEY) -> openai.OpenAI:
    http = httpx.Client(event_hooks={"response": [recorder]})
    return openai.OpenAI(
        base_url=emu.base_url, api_key=key, default_headers={"api-key": key}, http_client=http, max_retries=0
    )


def test_azure_answers_match_openais_description_but_for_the_documented_differences(emu):
    recorder = Recorder()
    client = _client(emu, recorder)
    content = training_jsonl(12)

    with pytest.raises(openai.BadRequestError) as no_bom:
        client.files.create(file=("train.jsonl", content), purpose="fine-tune")
    assert "byte-order mark" in str(no_bom.value)
    file = client.files.create(file=("train.jsonl", b"\xef\xbb\xbf" + content), purpose="fine-tune")
    client.files.list(purpose="fine-tune")

    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(model="gpt-4.1-mini", training_file=file.id, extra_body={"trainingType": "spot"})
    job = client.fine_tuning.jobs.create(
        model="gpt-4.1-mini",
        training_file=file.id,
        suffix="az",
        seed=3,
        metadata={"finetune_job_id": "job_x"},
        extra_body={"trainingType": "globalstandard"},
    )
    emu.advance(15)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "pending"
    emu.run_until_idle()
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model.startswith("gpt-4.1-mini-2025-04-14.ft-")
    client.fine_tuning.jobs.list(metadata={"finetune_job_id": "job_x"})
    client.fine_tuning.jobs.list_events(job.id)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert all(c.fine_tuned_model_checkpoint.startswith(f"{done.fine_tuned_model}:ckpt-step-") for c in checkpoints)
    client.models.list()

    messages = [{"role": "user", "content": "hello"}]
    with pytest.raises(openai.NotFoundError) as undeployed:
        client.chat.completions.create(model=done.fine_tuned_model, messages=messages)
    assert undeployed.value.body["code"] == "DeploymentNotFound"
    emu.deploy("my-deployment", done.fine_tuned_model)
    answer = client.chat.completions.create(model="my-deployment", messages=messages)
    assert answer.model == done.fine_tuned_model

    with pytest.raises(openai.AuthenticationError) as denied:
        _client(emu, recorder, key="wrong").models.list()
    assert denied.value.body == {"code": "401", "message": denied.value.body["message"]}
    assert httpx.get(f"{emu.url}/v1/models", headers={"api-key": KEY}).status_code == 404

    problems, used = differences(recorder.seen, AZURE_DIFFERENCES)
    assert problems == []
    assert used == set(AZURE_DIFFERENCES), f"listed but not seen: {set(AZURE_DIFFERENCES) - used}"
