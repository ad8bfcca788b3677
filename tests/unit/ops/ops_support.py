"""Helpers for the operations tests: the app's routes flattened, and minimal valid values for OpenAPI schemas."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def flat_routes(routes: list[Any]) -> Iterator[Any]:
    """Every route of the app, looking inside included routers (FastAPI keeps them as one entry per router)."""
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            yield from flat_routes(candidates())
        else:
            yield route


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def minimal(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """The smallest instance that satisfies ``schema`` (required members only), enough to pass request validation."""
    schema = resolve(spec, schema)
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            options = [o for o in schema[combinator] if resolve(spec, o).get("type") != "null"]
            return minimal(spec, (options or schema[combinator])[0])
    if "allOf" in schema:
        out: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = minimal(spec, part)
            if isinstance(value, dict):
                out.update(value)
        return out
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: minimal(spec, props[name]) for name in schema.get("required", []) if name in props}
    if kind == "array":
        return [minimal(spec, schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    return None
