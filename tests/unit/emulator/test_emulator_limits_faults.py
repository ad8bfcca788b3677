from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai
import pytest

from emulator import EmulatorConfig, OpenAIEmulator, RateLimit
from emulator.ratelimit import go_duration
from emulator.samples import training_jsonl

ASK = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def config() -> EmulatorConfig:
    return EmulatorConfig(
        speed=0, rate_limits={"gpt-4o-mini": RateLimit(requests_per_minute=3, tokens_per_minute=10_000)}
    )


def test_every_response_has_request_id_and_rate_limit_headers(client: openai.OpenAI) -> None:
    seen = set()
    for call in (
        lambda: client.models.with_raw_response.list(),
        lambda: client.files.with_raw_response.list(),
        lambda: client.chat.completions.with_raw_response.create(model="gpt-4.1", **ASK),
    ):
        response = call()
        assert response.headers["x-request-id"].startswith("req_")
        seen.add(response.headers["x-request-id"])
        for kind in ("requests", "tokens"):
            for field in ("limit", "remaining", "reset"):
                assert f"x-ratelimit-{field}-{kind}" in response.headers
    assert len(seen) == 3
    with pytest.raises(openai.NotFoundError) as info:
        client.files.retrieve("file-nope")
    assert info.value.response.headers["x-request-id"].startswith("req_")
    assert info.value.request_id == info.value.response.headers["x-request-id"]


def test_requests_per_minute_bucket(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    remaining = []
    for _ in range(3):
        response = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", **ASK)
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(response.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    assert response.headers["x-ratelimit-reset-requests"] == "1m0s"
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", **ASK)
    error = info.value
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert error.response.headers["retry-after"] == "20"  # one request refills in 60 s / 3
    assert error.response.headers["retry-after-ms"] == "20000"
    assert "Limit 3, Used 3, Requested 1" in error.message
    # Other models have their own buckets.
    client.chat.completions.create(model="gpt-4.1", **ASK)
    emu.advance(20)
    client.chat.completions.create(model="gpt-4o-mini", **ASK)


def test_tokens_per_minute_bucket(sdk: Callable[..., openai.OpenAI]) -> None:
    config = EmulatorConfig(speed=0, rate_limits={"gpt-4o-mini": RateLimit(1000, tokens_per_minute=40)})
    with OpenAIEmulator(config=config) as emu:
        client = sdk(emu.base_url)
        # About 25 tokens in and out: the first fits in 40, the second not until the bucket refills.
        first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", **ASK)
        used = 40 - int(first.headers["x-ratelimit-remaining-tokens"])
        assert used == first.parse().usage.total_tokens > 20
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="gpt-4o-mini", **ASK)
        assert info.value.type == "tokens"
        wait_ms = int(info.value.response.headers["retry-after-ms"])
        assert 0 < wait_ms <= 60_000
        emu.advance(wait_ms / 1000)
        client.chat.completions.create(model="gpt-4o-mini", **ASK)
        with pytest.raises(openai.RateLimitError) as too_big:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "w " * 200}])
        assert "Request too large" in too_big.value.message


def test_sdk_retries_after_429_then_succeeds(sdk: Callable[..., openai.OpenAI], emu: OpenAIEmulator) -> None:
    emu.add_fault(r"^POST /v1/chat/completions$", "429", count=2, retry_after_seconds=0.01)
    client = sdk(emu.base_url, max_retries=2)
    client.chat.completions.create(model="gpt-4.1", **ASK)
    assert emu.call_count("POST /v1/chat/completions") == 3


@pytest.mark.parametrize(("kind", "error"), [("500", openai.InternalServerError), ("503", openai.APIStatusError)])
def test_injected_server_errors(emu: OpenAIEmulator, client: openai.OpenAI, kind: str, error: type) -> None:
    emu.add_fault(r"/v1/models", kind, count=2)
    for _ in range(2):
        with pytest.raises(error) as info:
            client.models.list()
        assert info.value.status_code == int(kind)
        assert info.value.type == "server_error"
    client.models.list()


def test_probability_faults_are_seeded(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    emu.add_fault(r"^GET /v1/models$", "500", probability=0.5)
    outcomes = []
    for _ in range(40):
        try:
            client.models.list()
            outcomes.append(True)
        except openai.InternalServerError:
            outcomes.append(False)
    assert 5 < outcomes.count(False) < 35
    never = OpenAIEmulator(config=EmulatorConfig(speed=0))
    never.add_fault("/v1/", "500", probability=0.0)
    assert never.core.faults.pick("GET", "/v1/models") is None


def test_read_timeout_without_acting(
    sdk: Callable[..., openai.OpenAI], emu: OpenAIEmulator, training_file: str
) -> None:
    emu.add_fault(r"^POST /v1/fine_tuning/jobs$", "timeout", delay_seconds=5)
    client = sdk(emu.base_url, timeout=0.3)
    started = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    assert time.perf_counter() - started < 2
    assert emu.state()["jobs"] == []


def test_act_then_timeout_creates_the_job(
    sdk: Callable[..., openai.OpenAI], emu: OpenAIEmulator, training_file: str
) -> None:
    emu.add_fault(r"^POST /v1/fine_tuning/jobs$", "act_then_timeout", delay_seconds=5)
    client = sdk(emu.base_url, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file, metadata={"ours": "1"})
    assert len(emu.state()["jobs"]) == 1


def test_act_then_drop_connection(emu: OpenAIEmulator, client: openai.OpenAI, training_file: str) -> None:
    emu.add_fault(r"^POST /v1/fine_tuning/jobs$", "act_then_drop")
    with pytest.raises(openai.APIConnectionError):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file, metadata={"ours": "job_7"})
    # The job exists although the client never heard back: reconcile by listing on our own tag.
    assert emu.call_count("POST /v1/fine_tuning/jobs") == 1
    (found,) = client.fine_tuning.jobs.list(metadata={"ours": "job_7"})
    assert found.status == "validating_files"
    assert len(emu.state()["jobs"]) == 1


def test_act_then_500_and_sdk_retry_creates_two_jobs(
    sdk: Callable[..., openai.OpenAI], emu: OpenAIEmulator, training_file: str
) -> None:
    emu.add_fault(r"^POST /v1/fine_tuning/jobs$", "act_then_500")
    retrying = sdk(emu.base_url, max_retries=1)
    retrying.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    # Why the service must create with retries off: the SDK's own retry duplicated the job.
    assert len(emu.state()["jobs"]) == 2


def test_faults_through_the_control_endpoint(emu: OpenAIEmulator, client: openai.OpenAI) -> None:
    response = httpx.post(f"{emu.url}/_emulator/faults", json={"route": "^POST /v1/files$", "kind": "503", "count": 1})
    assert response.status_code == 200
    assert response.json()[0]["kind"] == "503"
    with pytest.raises(openai.APIStatusError) as info:
        client.files.create(file=("t.jsonl", training_jsonl(10)), purpose="fine-tune")
    assert info.value.status_code == 503
    client.files.create(file=("t.jsonl", training_jsonl(10)), purpose="fine-tune")
    bad = httpx.post(f"{emu.url}/_emulator/faults", json={"route": "x", "kind": "explode"})
    assert bad.status_code == 400
    assert "explode" in bad.json()["error"]["message"]
    assert httpx.delete(f"{emu.url}/_emulator/faults").json() == []


def test_auth_requires_a_bearer_key(emu: OpenAIEmulator) -> None:
    response = httpx.get(f"{emu.base_url}/models")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "You didn't provide an API key" in response.json()["error"]["message"]
    assert response.headers["x-request-id"].startswith("req_")


def test_configured_keys_reject_others(sdk: Callable[..., openai.OpenAI]) -> None:
    with OpenAIEmulator(config=EmulatorConfig(speed=0, api_keys=["sk-good-key-123"])) as emu:
        good = sdk(emu.base_url, "sk-good-key-123")
        good.models.list()
        bad = sdk(emu.base_url, "sk-wrong-key-456")
        with pytest.raises(openai.AuthenticationError) as info:
            bad.models.list()
        assert info.value.code == "invalid_api_key"
        assert "sk-wrong-key-456" not in info.value.message  # masked like OpenAI does


def test_unknown_route_is_an_openai_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.get("/no/such/thing", cast_to=object)
    assert info.value.body["message"] == "Invalid URL (GET /v1/no/such/thing)"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.012, "12ms"), (0.0004, "1ms"), (1.5, "1.5s"), (20, "20s"), (360, "6m0s"), (3725.25, "1h2m5.25s")],
)
def test_go_duration_format(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
