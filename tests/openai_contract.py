"""Check what our OpenAI-shaped routes answer against OpenAI's published description, as the SDK receives it.

``Recorder`` is an httpx event hook for the SDK's own HTTP client: it keeps every JSON answer (and every SSE chunk) of
the routes below, each with the schema OpenAI documents for it. ``differences`` validates them (``emulator.spec``) and
leaves out the deviations a test allows by name, with their reason, so the list stays honest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

# (method, path pattern after /v1) -> schema of a 2xx answer. Errors are ErrorResponse everywhere.
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), s)
    for m, p, s in (
        ("POST", r"^/files$", "OpenAIFile"),
        ("GET", r"^/files$", "ListFilesResponse"),
        ("GET", r"^/files/[^/]+$", "OpenAIFile"),
        ("DELETE", r"^/files/[^/]+$", "DeleteFileResponse"),
        ("POST", r"^/fine_tuning/jobs$", "FineTuningJob"),
        ("GET", r"^/fine_tuning/jobs$", "ListPaginatedFineTuningJobsResponse"),
        ("GET", r"^/fine_tuning/jobs/[^/]+$", "FineTuningJob"),
        ("POST", r"^/fine_tuning/jobs/[^/]+/(cancel|pause|resume)$", "FineTuningJob"),
        ("GET", r"^/fine_tuning/jobs/[^/]+/events$", "ListFineTuningJobEventsResponse"),
        ("GET", r"^/fine_tuning/jobs/[^/]+/checkpoints$", "ListFineTuningJobCheckpointsResponse"),
        ("GET", r"^/models$", "ListModelsResponse"),
        ("GET", r"^/models/.+$", "Model"),
        ("DELETE", r"^/models/.+$", "DeleteModelResponse"),
        ("POST", r"^/chat/completions$", "CreateChatCompletionResponse"),
        ("POST", r"^/completions$", "CreateCompletionResponse"),
    )
]
STREAM_SCHEMAS = {"CreateChatCompletionResponse": "CreateChatCompletionStreamResponse"}


@dataclass
class Recorder:
    """``httpx.Client(event_hooks={"response": [recorder]})`` for ``openai.OpenAI(http_client=...)``."""

    seen: list[tuple[str, Any]] = field(default_factory=list)

    def __call__(self, response: httpx.Response) -> None:
        path = response.request.url.path
        path = path[path.index("/v1") + 3 :] if "/v1" in path else path
        schema = next((s for m, p, s in ROUTES if m == response.request.method and p.match(path)), None)
        if schema is None or response.status_code == 204:
            return
        response.read()
        if response.status_code >= 400:
            self.seen.append(("ErrorResponse", response.json()))
            return
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            # A stream's chunks: the chat chunk schema; legacy completions stream their own full objects.
            chunk_schema = STREAM_SCHEMAS.get(schema, schema)
            for line in response.text.splitlines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    self.seen.append((chunk_schema, json.loads(line[6:])))
            return
        if response.headers.get("content-type", "").startswith("application/json"):
            self.seen.append((schema, response.json()))


def differences(
    seen: list[tuple[str, Any]], allowed: dict[tuple[str, str], str]
) -> tuple[list[str], set[tuple[str, str]]]:
    """(differences not in ``allowed``, the allowed ones that occurred). Keys are (schema, dotted path with list
    indices as ``*``), e.g. ``("ListPaginatedFineTuningJobsResponse", "data.*.status")``."""
    from emulator import spec

    validator = spec.load()
    problems: list[str] = []
    used: set[tuple[str, str]] = set()
    for schema, body in seen:
        for diff in validator.differences(schema, body):
            key = (schema, diff.path)
            if key in allowed:
                used.add(key)
            else:
                problems.append(f"{schema} {diff.path}: {diff.message}")
    return problems, used
