"""The inference runtime of another process (the `finetune inference` role), with the in-process runtime's interface:
``get_runtime`` returns one of these when ``FINETUNE_INFERENCE_URL`` is set, and callers (the OpenAI-shaped routes,
evaluations) cannot tell the difference: same methods, same items, same errors."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import wire
from .calls import DerivedCalls
from .types import InferenceError, ModelRef, Prompt, SamplingParams, StreamItem

CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RemoteBase:
    """What ``load`` returns here: the model loaded over there; its tokenizer stays on that side."""

    tokenizer: Any = None
    encoder: Any = None
    eos_ids: frozenset[int] = field(default_factory=frozenset)


class RemoteRuntime(DerivedCalls):
    def __init__(self, url: str, token: str, *, max_batch_size: int, request_timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self._setting_batch = max_batch_size
        self._role_batch: int | None = None
        self.request_timeout_s = request_timeout_s
        self._headers = {"Authorization": f"Bearer {token}"}
        # Reads wait as long as a request may take (it queues, then streams); everything else is short.
        self._timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=request_timeout_s + 30)
        # One connection per request in flight (a stream holds its connection to the end): httpx's default pool of 100
        # would make the rest of a GPU role's batch wait, then fail with a pool timeout.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=32)
        self._client = httpx.Client(headers=self._headers, timeout=self._timeout, limits=limits)

    @classmethod
    def from_settings(cls, settings: Any) -> RemoteRuntime:
        return cls(
            settings.inference_url,
            wire.token(settings.server_secret()),
            max_batch_size=settings.inference_max_batch_size,
            request_timeout_s=settings.inference_request_timeout_s,
        )

    @property
    def max_batch_size(self) -> int:
        """The role's batch, asked once: a GPU's is sized from its memory, far above this process's setting, and
        callers (evaluations) keep that many requests in flight. This process's setting while the role cannot say."""
        if self._role_batch is None:
            try:
                response = self._client.get(f"{self.url}{wire.HEALTH_PATH}", timeout=CONNECT_TIMEOUT_S)
                if response.status_code != 200:
                    return self._setting_batch
                self._role_batch = max(1, int(response.json()["max_batch_size"]))
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return self._setting_batch
        return self._role_batch

    def _body(self, model: ModelRef, prompt: Prompt, params: SamplingParams, timeout_s: float | None) -> dict:
        return wire.encode_request(model, prompt, params, timeout_s)

    @staticmethod
    def _unreachable(exc: Exception) -> InferenceError:
        return InferenceError(f"the inference service could not be reached ({type(exc).__name__})")

    def load(self, model: ModelRef) -> RemoteBase:
        """Ask the other side to load the model now, so a model that cannot load fails here, as it does in-process."""
        try:
            response = self._client.post(
                f"{self.url}{wire.LOAD_PATH}", json=self._body(model, "", SamplingParams(), None)
            )
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code != 200:
            raise wire.decode_error(_json(response))
        return RemoteBase()

    def stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> Iterator[StreamItem]:
        body = self._body(model, prompt, params, timeout_s)
        try:
            with self._client.stream("POST", f"{self.url}{wire.PATH}", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise wire.decode_error(_json(response))
                for line in response.iter_lines():
                    if line:
                        yield wire.decode_item(json.loads(line))
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    async def aopen_stream(
        self, model: ModelRef, prompt: Prompt, params: SamplingParams, *, timeout_s: float | None = None
    ) -> AsyncGenerator[StreamItem, None]:
        """Send now (errors before the first item raise here), then stream; closing the generator closes the
        connection, which cancels the request over there."""
        # A client per request: an async client belongs to the event loop it was made in.
        client = httpx.AsyncClient(headers=self._headers, timeout=self._timeout)
        try:
            request = client.build_request(
                "POST", f"{self.url}{wire.PATH}", json=self._body(model, prompt, params, timeout_s)
            )
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await client.aclose()
            raise self._unreachable(exc) from None
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            await client.aclose()
            raise wire.decode_error(_json(response))
        return _items(client, response, self._unreachable)

    def close(self, *, drain: bool = False) -> None:
        self._client.close()


async def _items(client: httpx.AsyncClient, response: httpx.Response, unreachable: Any) -> AsyncGenerator[StreamItem]:
    try:
        async for line in response.aiter_lines():
            if line:
                yield wire.decode_item(json.loads(line))
    except httpx.HTTPError as exc:
        raise unreachable(exc) from None
    finally:
        await response.aclose()
        await client.aclose()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        return data
    return {"kind": "error", "message": f"the inference service answered {response.status_code}"}
