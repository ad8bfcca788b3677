"""JSON graders: validity, JSON Schema validation, and equality of selected fields."""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from referencing.exceptions import Unresolvable

from api_schemas.graders import (
    JsonFieldMatchGraderSpec,
    JsonSchemaGraderSpec,
    JsonValidGraderSpec,
    Score,
    closed_schema_registry,
)
from service.evaluations.graders.base import Grader, GradingError, Sample
from service.evaluations.graders.registry import register_grader
from service.evaluations.graders.text import JsonParseError, json_equal, normalize, parse_json_strict, strip_code_fence

_MAX_ERRORS = 5
_KINDS = {"object": dict, "array": list}


def _parse_output(text: str, strip_fence: bool) -> tuple[Any, str | None]:
    try:
        return parse_json_strict(strip_code_fence(text) if strip_fence else text), None
    except JsonParseError as exc:
        return None, f"output is not valid JSON: {exc}"


@register_grader
class JsonValidGrader(Grader[JsonValidGraderSpec]):
    spec_type = JsonValidGraderSpec
    description = "1 when the output is valid JSON (RFC 8259; optionally a required top-level object or array)."
    needs_reference = False
    always_binary = True

    def _grade(self, sample: Sample) -> Score:
        value, error = _parse_output(sample.output or "", self.spec.strip_code_fence)
        if error is None and self.spec.require != "any" and not isinstance(value, _KINDS[self.spec.require]):
            error = f"output is JSON but not an {self.spec.require}"
        ok = error is None
        return Score(value=1.0 if ok else 0.0, passed=ok, details={} if ok else {"reason": error})


@register_grader
class JsonSchemaGrader(Grader[JsonSchemaGraderSpec]):
    spec_type = JsonSchemaGraderSpec
    description = "1 when the output is JSON valid against the JSON Schema (formats are checked too)."
    needs_reference = False
    always_binary = True

    def __init__(self, spec: JsonSchemaGraderSpec) -> None:
        super().__init__(spec)
        cls = jsonschema.validators.validator_for(spec.json_schema, default=jsonschema.Draft202012Validator)
        # Format checking is opt-in in the library; a schema that says "format": "date" means it here.
        # The closed registry: specs stored before references were checked still cannot read files or fetch URLs.
        self._validator = cls(spec.json_schema, format_checker=cls.FORMAT_CHECKER, registry=closed_schema_registry())

    def _grade(self, sample: Sample) -> Score:
        value, error = _parse_output(sample.output or "", self.spec.strip_code_fence)
        if error is not None:
            return Score(value=0.0, passed=False, details={"reason": error})
        try:
            errors = list(self._validator.iter_errors(value))
        except Unresolvable as exc:  # only from specs stored before references were checked at creation
            raise GradingError(f"json_schema has a reference that does not resolve inside it: {exc}") from None
        if not errors:
            return Score(value=1.0, passed=True)
        best = best_match(errors)
        shown = [best, *[e for e in errors if e is not best]][:_MAX_ERRORS]
        details = {
            "reason": f"schema violation at {best.json_path}: {best.message}",
            "errors": [{"path": e.json_path, "message": e.message[:300]} for e in shown],
            "n_errors": len(errors),
        }
        return Score(value=0.0, passed=False, details=details)


_MISSING = object()


def _lookup(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if isinstance(node, dict):
            if part not in node:
                return _MISSING
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit():
            i = int(part)
            if not -len(node) <= i < len(node):
                return _MISSING
            node = node[i]
        else:
            return _MISSING
    return node


@register_grader
class JsonFieldMatchGrader(Grader[JsonFieldMatchGraderSpec]):
    spec_type = JsonFieldMatchGraderSpec
    description = "Fraction of the selected fields of the output JSON equal to the reference JSON; passes when all are."
    always_binary = True

    def _reference(self, sample: Sample) -> Any:
        ref = sample.reference
        if isinstance(ref, str):
            try:
                ref = parse_json_strict(strip_code_fence(ref))
            except JsonParseError as exc:
                raise GradingError(f"reference is not valid JSON: {exc}") from None
        if not isinstance(ref, dict):
            raise GradingError("reference must be a JSON object")
        return ref

    def _same(self, a: Any, b: Any) -> bool:
        norm = self.spec.normalization
        if norm is not None and isinstance(a, str) and isinstance(b, str):
            return normalize(a, norm) == normalize(b, norm)
        return json_equal(a, b)

    def _grade(self, sample: Sample) -> Score:
        reference = self._reference(sample)
        output, error = _parse_output(sample.output or "", self.spec.strip_code_fence)
        fields = self.spec.fields
        if error is not None:
            return Score(value=0.0, passed=False, details={"reason": error, "mismatched": list(fields)})
        if not isinstance(output, dict):
            return Score(value=0.0, passed=False, details={"reason": "output is not a JSON object"})
        mismatched, missing = [], []
        for path in fields:
            want, got = _lookup(reference, path), _lookup(output, path)
            if got is _MISSING and want is not _MISSING:
                missing.append(path)
            elif want is _MISSING and got is _MISSING:
                # Absent in both: the reference says the field should not be there, and it is not.
                continue
            elif want is _MISSING or not self._same(want, got):
                mismatched.append(path)
        wrong = len(mismatched) + len(missing)
        value = (len(fields) - wrong) / len(fields)
        return Score(value=value, passed=wrong == 0, details={"mismatched": mismatched, "missing": missing})
