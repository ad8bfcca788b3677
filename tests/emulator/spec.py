"""Check JSON against the schemas of OpenAI's published OpenAPI description.

The description mixes OpenAPI 3.1 (JSON Schema 2020-12) with 3.0 idioms (`nullable: true`, boolean
`exclusiveMinimum`); both are rewritten into plain JSON Schema before validating. Needs `jsonschema` and `pyyaml`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"
CURRENT = "openai-openapi.yml"
# The last revision that still describes training-file and batch line formats.
LINE_FORMATS = "openai-openapi-2025-07.yml"


def reference_path(name: str = CURRENT) -> Path:
    return REFERENCE_DIR / name


def _plain(node: Any) -> Any:
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _plain(value) for key, value in node.items()}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        # 3.0 style `exclusiveMinimum: true` next to `minimum` becomes 2020-12's numeric `exclusiveMinimum`.
        if isinstance(out.get(bound), bool) and out.pop(bound) and limit in out:
            out[bound] = out.pop(limit)
    if out.pop("nullable", False) is True:
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list):
            out["type"] = [*kind, "null"] if "null" not in kind else kind
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


@dataclass(frozen=True)
class Difference:
    schema: str
    path: str  # dotted instance path, list indices as "*"
    message: str


class SpecValidator:
    def __init__(self, path: Path) -> None:
        with path.open("rb") as handle:
            document = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self.uri = f"urn:openai-spec:{path.name}"
        self.schemas: dict[str, Any] = document["components"]["schemas"]
        contents = {"components": {"schemas": _plain(self.schemas)}}
        self._registry = Registry().with_resource(self.uri, Resource(contents=contents, specification=DRAFT202012))

    @functools.cache  # noqa: B019 - validators live as long as the (cached) SpecValidator
    def _validator(self, schema: str) -> Draft202012Validator:
        if schema not in self.schemas:
            raise KeyError(f"no schema named {schema!r} in {self.uri}")
        return Draft202012Validator({"$ref": f"{self.uri}#/components/schemas/{schema}"}, registry=self._registry)

    def differences(self, schema: str, instance: Any) -> list[Difference]:
        found = []
        for error in self._validator(schema).iter_errors(instance):
            path = ".".join("*" if isinstance(part, int) else str(part) for part in error.absolute_path)
            found.append(Difference(schema=schema, path=path, message=error.message))
        return found


@functools.cache
def load(name: str = CURRENT) -> SpecValidator:
    return SpecValidator(reference_path(name))
