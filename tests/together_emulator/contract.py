"""Check what the emulator answers against Together's published OpenAPI description.

``Recorder`` is an httpx response hook: it keeps every JSON answer of the routes below with the schema Together
documents for it; ``differences`` validates them with ``emulator.spec`` (YAML loaded, ``$ref``s resolved, OpenAPI
3.0 idioms rewritten, jsonschema). Tests skip when ``/work/shared/reference`` is absent, as the OpenAI checks do."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from emulator.spec import REFERENCE_DIR, SpecValidator

TOGETHER_SPEC = REFERENCE_DIR / "together-openapi.yaml"

ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), s)
    for m, p, s in (
        ("POST", r"^/files/upload$", "FileResponse"),
        ("GET", r"^/files$", "FileList"),
        ("GET", r"^/files/[^/]+$", "FileResponse"),
        ("POST", r"^/fine-tunes$", "FinetuneResponseTruncated"),
        ("GET", r"^/fine-tunes$", "FinetuneTruncatedList"),
        ("GET", r"^/fine-tunes/[^/]+/events$", "FinetuneListEvents"),
        ("GET", r"^/fine-tunes/[^/]+/checkpoints$", "FinetuneListCheckpoints"),
        ("POST", r"^/fine-tunes/[^/]+/cancel$", "FinetuneResponseTruncated"),
        ("POST", r"^/chat/completions$", "ChatCompletionResponse"),
        ("GET", r"^/fine-tunes/(?!models/)[^/]+$", "FinetuneResponse"),
    )
]
# Inline schemas of the description (no component name): checked against the path's response schema.
INLINE: dict[tuple[str, str], str] = {
    ("POST", "/fine-tunes/estimate-price"): "EstimatePriceResponse",
    ("GET", "/fine-tunes/models/supported"): "SupportedModelsResponse",
}


# Request bodies we send, checked against the path's requestBody schema.
REQUESTS: dict[tuple[str, str], str] = {
    ("POST", "/fine-tunes"): "CreateFineTuneRequest",
    ("POST", "/fine-tunes/estimate-price"): "EstimatePriceRequest",
}


def available() -> bool:
    return TOGETHER_SPEC.exists()


@dataclass
class Recorder:
    seen: list[tuple[str, Any]] = field(default_factory=list)

    def __call__(self, response: httpx.Response) -> None:
        path = response.request.url.path
        path = path[path.index("/v1") + 3 :] if "/v1" in path else path
        method = response.request.method
        if (method, path) in REQUESTS:
            self.seen.append((REQUESTS[(method, path)], json.loads(response.request.content)))
        response.read()
        if not response.headers.get("content-type", "").startswith("application/json"):
            return
        if response.status_code >= 400:
            self.seen.append(("ErrorData", response.json()))
            return
        if (method, path) in INLINE:
            self.seen.append((INLINE[(method, path)], response.json()))
            return
        schema = next((s for m, p, s in ROUTES if m == method and p.match(path)), None)
        if schema is not None:
            self.seen.append((schema, response.json()))

    def schemas(self) -> set[str]:
        return {s for s, _ in self.seen}


class TogetherSpec(SpecValidator):
    """``SpecValidator`` over Together's description, plus the inline response schemas of some paths."""

    def __init__(self) -> None:
        super().__init__(TOGETHER_SPEC)
        import yaml

        with TOGETHER_SPEC.open("rb") as handle:
            document = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        for (method, path), name in INLINE.items():
            op = document["paths"][path][method.lower()]
            self.schemas[name] = op["responses"]["200"]["content"]["application/json"]["schema"]
        for (method, path), name in REQUESTS.items():
            op = document["paths"][path][method.lower()]
            self.schemas[name] = op["requestBody"]["content"]["application/json"]["schema"]
        # Rebuild the registry with the added schemas.
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        from emulator.spec import _plain

        contents = {"components": {"schemas": _plain(self.schemas)}}
        self._registry = Registry().with_resource(self.uri, Resource(contents=contents, specification=DRAFT202012))


def differences(seen: list[tuple[str, Any]]) -> list[str]:
    validator = TogetherSpec()
    return [f"{schema} {d.path}: {d.message}" for schema, body in seen for d in validator.differences(schema, body)]
