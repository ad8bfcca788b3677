"""Grader specifications (a discriminated union on ``type``), per-sample scores and the grader catalogue.

A spec is what a client writes in ``POST /v1/evaluations``; the service turns it into a grader through the registry in
``service.evaluations.graders``. Specs check themselves (patterns compile, JSON schemas are valid schemas) so a bad
grader is rejected with the request, before any generation is paid for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api_schemas.common import RequestModel

GRADER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class TextNormalization(RequestModel):
    """How texts are normalised before they are compared. Applied in the order of the fields."""

    model_config = ConfigDict(extra="forbid")

    unicode_nfkc: bool = Field(default=False, description="Apply Unicode NFKC (full-width forms, ligatures, ...).")
    ignore_case: bool = Field(default=False, description="Compare case-insensitively (Unicode case folding).")
    ignore_punctuation: bool = Field(default=False, description="Drop Unicode punctuation characters.")
    collapse_whitespace: bool = Field(default=False, description="Turn every run of whitespace into one space.")
    strip: bool = Field(default=True, description="Remove leading and trailing whitespace.")


class _GraderSpecBase(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        default="",
        pattern=r"^$|" + GRADER_NAME_PATTERN[1:],
        description="Label of this grader's results; unique within an evaluation. Default: the grader type.",
    )

    @model_validator(mode="after")
    def _default_name(self) -> _GraderSpecBase:
        if not self.name:
            self.name = self.type  # type: ignore[attr-defined]
        return self


class _ThresholdMixin(RequestModel):
    pass_threshold: float | None = Field(
        default=None,
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="When set, a sample passes when its score is at least this value, which makes the grader binary "
        "(pass rates, McNemar comparisons).",
    )


class ExactMatchGraderSpec(_GraderSpecBase):
    """The output equals the reference (any of them) after normalisation."""

    type: Literal["exact_match"] = "exact_match"
    normalization: TextNormalization = Field(default_factory=TextNormalization)


class ClassificationGraderSpec(_GraderSpecBase):
    """The output is a class label compared with the reference label: accuracy, per-class precision / recall / F1,
    macro and micro averages and a confusion matrix."""

    type: Literal["classification"] = "classification"
    labels: list[str] | None = Field(
        default=None,
        min_length=2,
        max_length=1000,
        description="The label set. Default: the distinct reference labels. Outputs outside the set count as wrong "
        "and appear in the confusion matrix column '<other>'.",
    )
    normalization: TextNormalization = Field(default_factory=TextNormalization)

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if len(set(v)) != len(v):
                raise ValueError("labels must be unique")
            if any(not label.strip() for label in v):
                raise ValueError("labels must be non-empty")
        return v


BleuTokenizer = Literal["13a", "intl", "char", "zh", "none"]


class BleuGraderSpec(_ThresholdMixin, _GraderSpecBase):
    """sacreBLEU: corpus BLEU as the aggregate, sentence BLEU (effective order) per sample, both 0-100."""

    type: Literal["bleu"] = "bleu"
    tokenize: BleuTokenizer = "13a"
    lowercase: bool = False
    smooth_method: Literal["exp", "floor", "add-k", "none"] = "exp"
    smooth_value: float | None = Field(
        default=None, ge=0, le=100, allow_inf_nan=False, description="For floor (default 0.1) and add-k (1)."
    )


class ChrfGraderSpec(_ThresholdMixin, _GraderSpecBase):
    """sacreBLEU chrF (chrF++ with word_order=2): corpus score as the aggregate, sentence score per sample, 0-100."""

    type: Literal["chrf"] = "chrf"
    char_order: int = Field(default=6, ge=1, le=10)
    word_order: int = Field(default=0, ge=0, le=2)
    beta: int = Field(default=2, ge=1, le=10)
    lowercase: bool = False
    whitespace: bool = Field(default=False, description="Count whitespace inside character n-grams.")


class RougeLGraderSpec(_ThresholdMixin, _GraderSpecBase):
    """ROUGE-L: F-measure of the longest common subsequence of tokens, 0-1; the best reference counts."""

    type: Literal["rouge_l"] = "rouge_l"
    unit: Literal["word", "char"] = Field(
        default="word", description="'char' compares characters, for languages written without spaces."
    )
    ignore_case: bool = True
    beta: float = Field(
        default=1.0, gt=0, le=10, allow_inf_nan=False, description="Weight of recall against precision (1 = F1)."
    )


class JsonValidGraderSpec(_GraderSpecBase):
    """The output parses as JSON (optionally of a given top-level kind)."""

    type: Literal["json_valid"] = "json_valid"
    require: Literal["any", "object", "array"] = "any"
    strip_code_fence: bool = Field(default=True, description="Accept output wrapped in a ``` or ```json fence.")


_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# Keywords whose values are data, not schemas: a "$ref" key inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "example"})


def _refuse_retrieval(uri: str) -> Any:
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)


def closed_schema_registry() -> Any:
    """A ``referencing`` registry that retrieves nothing: a user's schema resolves only references inside itself.

    Without it, jsonschema falls back to its deprecated resolver, which opens ``file://`` and fetches ``http://``
    references: a grader could read server files and echo them in its messages.
    """
    from referencing import Registry

    return Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]


def _references(node: Any, path: str) -> list[tuple[str, str]]:
    """``(where, reference)`` for every reference keyword in the schema."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _REF_KEYWORDS and isinstance(value, str):
                found.append((f"{path}/{key}", value))
            elif key not in _DATA_KEYWORDS:
                found.extend(_references(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found.extend(_references(item, f"{path}/{i}"))
    return found


def check_schema_references(schema: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first reference that is not a fragment resolvable inside ``schema``."""
    import referencing.jsonschema
    from referencing.exceptions import Unresolvable

    refs = _references(schema, "")
    if not refs:
        return
    dialect = schema.get("$schema") or "https://json-schema.org/draft/2020-12/schema"
    spec = referencing.jsonschema.specification_with(dialect, default=referencing.jsonschema.DRAFT202012)
    base = schema.get("$id") if isinstance(schema.get("$id"), str) else ""
    resolver = closed_schema_registry().with_resource(base, spec.create_resource(schema)).resolver(base_uri=base)
    for where, ref in refs:
        if not ref.startswith("#"):
            raise ValueError(
                f"json_schema reference {ref!r} at {where or '/'} points outside the schema; only references inside "
                "it (e.g. '#/$defs/name') are allowed"
            )
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise ValueError(
                f"json_schema reference {ref!r} at {where or '/'} does not resolve inside the schema"
            ) from None


class JsonSchemaGraderSpec(_GraderSpecBase):
    """The output parses as JSON and validates against a JSON Schema (Draft 2020-12 unless $schema says otherwise)."""

    type: Literal["json_schema"] = "json_schema"
    json_schema: dict[str, Any] = Field(description="The JSON Schema the output must satisfy.")
    strip_code_fence: bool = True

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        import jsonschema
        from jsonschema.exceptions import SchemaError

        try:
            jsonschema.validators.validator_for(v, default=jsonschema.Draft202012Validator).check_schema(v)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise ValueError(f"json_schema is not a valid JSON Schema at {where}: {exc.message}") from None
        check_schema_references(v)
        return v


class JsonFieldMatchGraderSpec(_GraderSpecBase):
    """Output and reference both parse as JSON objects and the selected fields are equal. Score: fraction of fields
    equal; passes when all are."""

    type: Literal["json_field_match"] = "json_field_match"
    fields: list[str] = Field(
        min_length=1,
        max_length=200,
        description="Dotted paths into the objects, e.g. 'customer.id' or 'items.0.sku' (integers index arrays).",
    )
    normalization: TextNormalization | None = Field(
        default=None, description="Normalise string values before comparing; numbers compare by value."
    )
    strip_code_fence: bool = True

    @field_validator("fields")
    @classmethod
    def _valid_paths(cls, v: list[str]) -> list[str]:
        for path in v:
            if not path or any(part == "" for part in path.split(".")):
                raise ValueError(f"field path {path!r} has an empty segment")
        if len(set(v)) != len(v):
            raise ValueError("fields must be unique")
        return v


class RegexGraderSpec(_GraderSpecBase):
    """The output matches a regular expression (Python syntax; matching time is capped)."""

    type: Literal["regex"] = "regex"
    pattern: str = Field(min_length=1, max_length=2000)
    mode: Literal["search", "fullmatch"] = "search"
    ignore_case: bool = False
    multiline: bool = False
    dotall: bool = False
    expect_match: bool = Field(default=True, description="False: a sample passes when the pattern does NOT match.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        # The same engine as the grader (`regex`, which supports match timeouts); its syntax is a superset of `re`.
        import regex

        try:
            regex.compile(v)
        except regex.error as exc:
            raise ValueError(f"pattern does not compile: {exc}") from None
        return v


class _JudgeSpecBase(_GraderSpecBase):
    model: str = Field(min_length=1, max_length=256, description="The judge model.")
    include_reference: bool = Field(default=True, description="Show the reference answer to the judge when present.")
    temperature: float = Field(default=0.0, ge=0, le=2, allow_inf_nan=False)
    max_tokens: int = Field(default=512, ge=16, le=8192)
    seed: int | None = Field(default=None, ge=0, le=2147483647)


class LlmRubricGraderSpec(_JudgeSpecBase):
    """An LLM judge scores each output against a rubric: 1-5 or pass/fail, read from a strict final line."""

    type: Literal["llm_rubric"] = "llm_rubric"
    rubric: str = Field(min_length=1, max_length=16000)
    scale: Literal["1-5", "pass_fail"] = "1-5"
    pass_threshold: int = Field(default=4, ge=1, le=5, description="On the 1-5 scale, the lowest passing score.")


class LlmPairwiseGraderSpec(_JudgeSpecBase):
    """An LLM judge compares two candidates' outputs on the same input, in both orders; a verdict counts only when
    both orders agree, otherwise it is 'inconsistent'."""

    type: Literal["llm_pairwise"] = "llm_pairwise"
    criteria: str = Field(min_length=1, max_length=16000)


GraderSpec = Annotated[
    ExactMatchGraderSpec
    | ClassificationGraderSpec
    | BleuGraderSpec
    | ChrfGraderSpec
    | RougeLGraderSpec
    | JsonValidGraderSpec
    | JsonSchemaGraderSpec
    | JsonFieldMatchGraderSpec
    | RegexGraderSpec
    | LlmRubricGraderSpec
    | LlmPairwiseGraderSpec,
    Field(discriminator="type"),
]


class Score(BaseModel):
    """One grader's verdict on one sample. ``value`` is None when the sample could not be graded (see ``error``)."""

    value: float | None
    passed: bool | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class GraderCapabilities(BaseModel):
    needs_reference: bool = Field(description="Samples must carry a reference answer.")
    is_binary: bool = Field(description="Every score has passed set (pass rates, McNemar); with pass_threshold too.")
    needs_llm: bool = Field(description="Calls a judge model: costs tokens and needs a chat client.")
    is_pairwise: bool = Field(default=False, description="Compares two candidates instead of scoring one.")
    corpus_metrics: bool = Field(default=False, description="Its aggregate is not a mean of sample scores.")


class GraderInfo(BaseModel):
    type: str
    description: str
    capabilities: GraderCapabilities
    config_schema: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------------------
# Results: aggregates with intervals and paired comparisons

CiMethod = Literal["percentile", "bca"]


class ConfidenceInterval(BaseModel):
    estimate: float
    low: float
    high: float
    confidence: float
    method: CiMethod = Field(description="bca falls back to percentile when its bias correction is undefined.")
    n: int
    n_resamples: int


class PairedDifference(BaseModel):
    """A metric of candidates a and b on the same examples, the difference b - a, its interval and p-value."""

    metric: str
    a: float
    b: float
    difference: float
    low: float
    high: float
    confidence: float
    p_value: float = Field(description="Two-sided: paired bootstrap with the resampled differences centred at 0.")
    method: CiMethod
    n: int
    n_resamples: int


class McNemarResult(BaseModel):
    """McNemar's test on paired pass/fail results: does the rate of a-only passes differ from b-only passes?"""

    n: int
    both_passed: int
    a_only: int = Field(description="Examples a passed and b failed.")
    b_only: int = Field(description="Examples b passed and a failed.")
    neither_passed: int
    statistic: float | None = Field(description="Chi-square statistic for chi2-cc; None for the binomial tests.")
    p_value: float
    method: Literal["exact", "mid-p", "chi2-cc"] = Field(
        description="exact: two-sided binomial test of a_only vs b_only at p=1/2; mid-p: the same minus the "
        "probability of the observed table; chi2-cc: chi-square with continuity correction."
    )


class Flips(BaseModel):
    """Examples whose pass/fail outcome differs between a and b."""

    a_only: list[str] = Field(description="Keys of examples a passed and b failed.")
    b_only: list[str] = Field(description="Keys of examples b passed and a failed.")


class GraderSummary(BaseModel):
    grader: str
    type: str
    n: int = Field(description="Samples given.")
    n_graded: int = Field(description="Samples with a score; the metrics are over these.")
    n_errors: int
    metrics: dict[str, ConfidenceInterval]
    details: dict[str, Any] = Field(description="Grader-specific aggregates, e.g. a confusion matrix.")


class MetricComparison(BaseModel):
    metric: str
    a: float
    b: float
    difference: float = Field(description="b - a")
    low: float
    high: float
    confidence: float
    p_value: float
    test: str = Field(description="paired_bootstrap, or mcnemar-<method> for pass rates")
    ci_method: CiMethod
    n: int


class GraderComparison(BaseModel):
    grader: str
    type: str
    n_paired: int = Field(description="Examples both candidates have a score for; the comparison is over these.")
    n_excluded: int = Field(description="Examples left out because either candidate has no score.")
    metrics: dict[str, MetricComparison]
    mcnemar: McNemarResult | None = None
    flips: Flips | None = None
