from __future__ import annotations

import pytest
from pydantic import ValidationError

from api_schemas.graders import ExactMatchGraderSpec, JsonSchemaGraderSpec, RegexGraderSpec
from service.evaluations.graders import GraderConfigError, Sample, get_grader, list_graders, parse_grader_spec


def _grade(spec: dict, output: str | None, reference: object = None):
    return get_grader(spec).grade(Sample(output=output, reference=reference))


@pytest.mark.parametrize(
    ("normalization", "output", "reference", "expected"),
    [
        ({}, " Paris ", "Paris", True),
        ({"strip": False}, " Paris ", "Paris", False),
        ({}, "paris", "Paris", False),
        ({"ignore_case": True}, "PARIS", "paris", True),
        ({"ignore_case": True}, "STRASSE", "Straße", True),
        ({"ignore_punctuation": True}, "Paris.", "Paris", True),
        ({"ignore_punctuation": True}, "«Paris»!", "Paris", True),
        ({"collapse_whitespace": True}, "New   York\n", "New York", True),
        ({}, "New   York", "New York", False),
        ({"unicode_nfkc": True}, "Ｐａｒｉｓ", "Paris", True),
    ],
)
def test_exact_match_normalisation(normalization: dict, output: str, reference: str, expected: bool) -> None:
    score = _grade({"type": "exact_match", "normalization": normalization}, output, reference)
    assert score.passed is expected
    assert score.value == (1.0 if expected else 0.0)


def test_exact_match_any_of_several_references() -> None:
    score = _grade({"type": "exact_match"}, "NYC", ["New York", "NYC"])
    assert score.passed and score.details == {"matched_reference": 1}


def test_regex_modes_flags_and_inversion() -> None:
    assert _grade({"type": "regex", "pattern": r"\d{3}"}, "call 555 now").passed
    assert not _grade({"type": "regex", "pattern": r"\d{3}", "mode": "fullmatch"}, "call 555 now").passed
    assert _grade({"type": "regex", "pattern": "yes", "ignore_case": True}, "YES").passed
    assert _grade({"type": "regex", "pattern": "sorry", "expect_match": False}, "Here you go").passed
    assert _grade({"type": "regex", "pattern": r"\d+"}, "no digits").details == {"match": None}


def test_regex_spec_rejects_bad_pattern() -> None:
    with pytest.raises(ValidationError, match="pattern does not compile"):
        RegexGraderSpec(pattern="(unclosed")


def test_json_valid() -> None:
    assert _grade({"type": "json_valid"}, '{"a": 1}').passed
    assert _grade({"type": "json_valid"}, '```json\n{"a": 1}\n```').passed
    assert not _grade({"type": "json_valid", "strip_code_fence": False}, '```json\n{"a": 1}\n```').passed
    bad = _grade({"type": "json_valid"}, '{"a": 1,}')
    assert not bad.passed and "line 1 column 9" in bad.details["reason"]
    assert not _grade({"type": "json_valid"}, '{"a": NaN}').passed  # not RFC 8259 JSON
    assert not _grade({"type": "json_valid", "require": "object"}, "[1, 2]").passed
    assert _grade({"type": "json_valid", "require": "array"}, "[1, 2]").passed


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}, "born": {"format": "date"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_validation() -> None:
    spec = {"type": "json_schema", "json_schema": SCHEMA}
    assert _grade(spec, '{"name": "Ada", "age": 36}').passed
    score = _grade(spec, '{"name": "Ada", "age": -1}')
    assert not score.passed and score.details["reason"].startswith("schema violation at $.age")
    assert not _grade(spec, '{"name": "Ada", "age": 3, "born": "not a date"}').passed  # formats are checked
    assert "not valid JSON" in _grade(spec, "Ada, 36").details["reason"]


def test_json_schema_spec_rejects_invalid_schema() -> None:
    with pytest.raises(ValidationError, match="not a valid JSON Schema at properties/age/type"):
        JsonSchemaGraderSpec(json_schema={"type": "object", "properties": {"age": {"type": "integr"}}})


def test_json_field_match() -> None:
    spec = {"type": "json_field_match", "fields": ["id", "customer.name", "items.0.qty", "flag"]}
    ref = {"id": 7, "customer": {"name": "Ada"}, "items": [{"qty": 2}], "flag": True}
    full = _grade(spec, '{"id": 7.0, "customer": {"name": "Ada"}, "items": [{"qty": 2}], "flag": true}', ref)
    assert full.passed and full.value == 1.0
    partial = _grade(spec, '{"id": 7, "customer": {"name": "ada"}, "items": [], "flag": 1}', ref)
    assert partial.value == 0.25
    assert partial.details == {"mismatched": ["customer.name", "flag"], "missing": ["items.0.qty"]}
    normalised = {**spec, "normalization": {"ignore_case": True}}
    assert _grade(normalised, '{"id": 7, "customer": {"name": "ADA"}, "items": [{"qty": 2}], "flag": true}', ref).passed
    # The reference may also be JSON text; a non-object reference is the sample's error.
    assert _grade(
        spec,
        '{"id": 7, "customer": {"name": "Ada"}, "items": [{"qty": 2}], "flag": true}',
        '{"id": 7, "customer": {"name": "Ada"}, "items": [{"qty": 2}], "flag": true}',
    ).passed
    assert "must be a JSON object" in (_grade(spec, "{}", "[1]").error or "")


def test_spec_names_default_to_type_and_are_validated() -> None:
    assert ExactMatchGraderSpec().name == "exact_match"
    assert parse_grader_spec({"type": "regex", "pattern": "x", "name": "has-x"}).name == "has-x"
    with pytest.raises(ValidationError):
        parse_grader_spec({"type": "regex", "pattern": "x", "name": "bad name!"})
    with pytest.raises(ValidationError):
        parse_grader_spec({"type": "exact_match", "unknown_option": True})


def test_registry_errors_and_catalogue() -> None:
    with pytest.raises(GraderConfigError, match="invalid grader spec"):
        get_grader({"type": "nope"})
    with pytest.raises(GraderConfigError, match="needs a chat client"):
        get_grader({"type": "llm_rubric", "model": "gpt-4o-mini", "rubric": "Is it polite?"})
    catalogue = {g.type: g for g in list_graders()}
    assert set(catalogue) == {
        "exact_match",
        "classification",
        "bleu",
        "chrf",
        "rouge_l",
        "json_valid",
        "json_schema",
        "json_field_match",
        "regex",
        "llm_rubric",
        "llm_pairwise",
    }
    assert catalogue["llm_pairwise"].capabilities.is_pairwise
    assert catalogue["llm_rubric"].capabilities.needs_llm
    assert catalogue["bleu"].capabilities.needs_reference and not catalogue["regex"].capabilities.needs_reference
    assert catalogue["regex"].config_schema["properties"]["pattern"]["maxLength"] == 2000
