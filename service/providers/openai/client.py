"""The one place that builds OpenAI SDK clients (sync for jobs, files and batches; async for realtime generation).

Every client dials out through the service's outbound layer, so a user-supplied base URL is checked at each
connection like any other outbound call.

Retries: reads may retry inside the SDK (``max_retries``), creating calls never do (``no_retries``): the SDK sends no
idempotency key, so its retry of a create whose answer was lost would make a second job, file or batch. Realtime
generation turns SDK retries off entirely, because its own limiter must see every 429.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
import openai
from pydantic import BaseModel, Field, SecretStr

from service import net

# Answers of the API itself are small; files we download (result CSVs, batch output) are streamed under this cap.
API_RESPONSE_BYTES = net.DEFAULT_MAX_RESPONSE_BYTES
FILE_RESPONSE_BYTES = 2 * 1024**3


class ClientConfig(BaseModel):
    """Where and how to call: any OpenAI-compatible endpoint."""

    base_url: str | None = Field(default=None, description="e.g. https://api.together.xyz/v1; None: OpenAI.")
    api_key: SecretStr = Field(description="Sent as a bearer key; local servers accept any non-empty value.")
    # Azure OpenAI's resource keys go in an ``api-key`` header; a bearer there must be an Entra token.
    auth: Literal["bearer", "api-key"] = "bearer"
    organization: str | None = None
    project: str | None = None
    timeout_s: float = Field(default=120.0, gt=0, description="Per attempt.")
    default_headers: dict[str, str] = Field(default_factory=dict)


def _sdk_kwargs(config: ClientConfig, max_retries: int) -> dict:
    return {
        "api_key": config.api_key.get_secret_value(),
        "base_url": config.base_url,
        "organization": config.organization,
        "project": config.project,
        "timeout": config.timeout_s,
        "max_retries": max_retries,
        "default_headers": config.default_headers or None,
    }


class _ApiKeyClient(openai.OpenAI):
    """Sends the key in an ``api-key`` header instead of as a bearer (and so has no Authorization header to check)."""

    @property
    def _bearer_auth(self) -> dict[str, str]:
        return {"api-key": self.api_key} if self.api_key else {}

    def _validate_headers(self, headers: Any, custom_headers: Any) -> None:
        return None


class _AsyncApiKeyClient(openai.AsyncOpenAI):
    @property
    def _bearer_auth(self) -> dict[str, str]:
        return {"api-key": self.api_key} if self.api_key else {}

    def _validate_headers(self, headers: Any, custom_headers: Any) -> None:
        return None


def sync_client(
    config: ClientConfig, *, max_retries: int = 2, max_response_bytes: int = FILE_RESPONSE_BYTES
) -> openai.OpenAI:
    http = net.sync_client(timeout=config.timeout_s, max_response_bytes=max_response_bytes)
    cls = _ApiKeyClient if config.auth == "api-key" else openai.OpenAI
    return cls(**_sdk_kwargs(config, max_retries), http_client=http)


def async_client(
    config: ClientConfig, *, max_connections: int, max_response_bytes: int = API_RESPONSE_BYTES
) -> openai.AsyncOpenAI:
    # A pool as large as the concurrency: no request waits for a connection the limiter already paid for.
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    http = net.async_client(timeout=config.timeout_s, max_response_bytes=max_response_bytes, limits=limits)
    cls = _AsyncApiKeyClient if config.auth == "api-key" else openai.AsyncOpenAI
    return cls(**_sdk_kwargs(config, 0), http_client=http)


def no_retries(client: openai.OpenAI) -> openai.OpenAI:
    """The same client for a creating call: no SDK retry."""
    return client.with_options(max_retries=0)
