"""The versioned model and price table: loading, validation and model lookup.

Prices change, so they live in a JSON file (``price_table.json`` next to this module, or a path from settings) with a
``version``; code never carries a price. Every estimate reports the version that produced it.
"""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from service.tokens import base_model_name, resolve_model_encoding

BUNDLED_PRICE_TABLE = Path(__file__).with_name("price_table.json")

FineTuningMethod = Literal["supervised", "dpo", "reinforcement"]


class PriceTableError(ValueError):
    """The price table file is missing or malformed."""


class UnknownModel(LookupError):
    """The model (or the base of a fine-tuned model) is not in the price table."""

    def __init__(self, model: str, version: str) -> None:
        super().__init__(f"model {model!r} is not in price table {version}")
        self.model = model
        self.version = version


class TokenPrices(BaseModel):
    """USD per 1M tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    output: Decimal = Field(ge=0)


class InferencePrices(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base: TokenPrices
    fine_tuned: TokenPrices | None = None


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    aliases: tuple[str, ...] = ()
    encoding: Literal["o200k_base", "cl100k_base"]
    context_window: int | None = Field(default=None, gt=0)
    training_example_token_limit: int | None = Field(
        default=None, gt=0, description="Tokens per training example; longer examples are truncated."
    )
    fine_tuning_methods: tuple[FineTuningMethod, ...] = ()
    legacy_prompt_completion: bool = False
    image_inputs: bool = False
    training_per_1m: Decimal | None = Field(default=None, ge=0)
    training_note: str | None = None
    inference: InferencePrices
    shutdown_date: date | None = None
    source: str | None = None


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    currency: Literal["USD"] = "USD"
    unit: str
    batch_discount: Decimal = Field(gt=0, le=1, description="Factor applied to direct prices for Batch API calls.")
    source: str
    provider_notes: dict[str, str] = Field(default_factory=dict)
    models: dict[str, ModelEntry]

    _name_index: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _version_is_a_date(cls, v: str) -> str:
        try:
            date.fromisoformat(v)
        except ValueError as exc:
            raise ValueError(f"version must be a YYYY-MM-DD date, got {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> PriceTable:
        seen: dict[str, str] = {}
        for name, entry in self.models.items():
            for alias in (name, *entry.aliases):
                key = alias.lower()
                if key in seen:
                    raise ValueError(f"model name {alias!r} is listed for both {seen[key]!r} and {name!r}")
                seen[key] = name
        return self

    def model_post_init(self, context: object, /) -> None:
        self._name_index = {alias.lower(): name for name, e in self.models.items() for alias in (name, *e.aliases)}

    def lookup(self, model: str) -> ModelInfo:
        """The entry for ``model``: a snapshot, an alias, or a fine-tuned / checkpoint name of one of them."""
        base = base_model_name(model)
        name = self._name_index.get(base.lower())
        if name is None:
            raise UnknownModel(model, self.version)
        return ModelInfo(
            model=model,
            name=name,
            fine_tuned=model.strip().startswith("ft:") or ":ft-" in model or ".ft-" in model,
            entry=self.models[name],
            table_version=self.version,
        )


class ModelInfo(BaseModel):
    """A model name resolved against the table."""

    model_config = ConfigDict(frozen=True)

    model: str = Field(description="The name asked for.")
    name: str = Field(description="The table entry (base snapshot) it resolved to.")
    fine_tuned: bool
    entry: ModelEntry
    table_version: str

    @property
    def encoding(self) -> str:
        return self.entry.encoding

    def fine_tunable(self, method: FineTuningMethod = "supervised") -> bool:
        return method in self.entry.fine_tuning_methods

    def inference_prices(self) -> TokenPrices:
        """Prices of calling this model: fine-tuned prices for ``ft:`` names, base prices otherwise."""
        if self.fine_tuned:
            if self.entry.inference.fine_tuned is None:
                raise PriceTableError(f"{self.name} has no fine-tuned inference prices in table {self.table_version}")
            return self.entry.inference.fine_tuned
        return self.entry.inference.base


_lock = threading.Lock()


@lru_cache(maxsize=8)
def _load(path: Path, mtime_ns: int) -> PriceTable:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PriceTableError(f"cannot read price table {path}: {exc}") from exc
    try:
        return PriceTable.model_validate_json(raw)
    except ValidationError as exc:
        raise PriceTableError(f"price table {path} is invalid: {exc}") from exc


def load_price_table(path: Path | str | None = None) -> PriceTable:
    """The price table at ``path`` (default: the bundled one), cached until the file changes."""
    resolved = Path(path).expanduser().resolve() if path is not None else BUNDLED_PRICE_TABLE
    try:
        mtime = resolved.stat().st_mtime_ns
    except OSError as exc:
        raise PriceTableError(f"cannot read price table {resolved}: {exc}") from exc
    with _lock:
        return _load(resolved, mtime)


def model_info(model: str, *, table: PriceTable | None = None) -> ModelInfo:
    """Resolve ``model`` (including ``ft:`` and checkpoint names) to its price table entry.

    Raises ``UnknownModel`` when it is not listed; ``service.tokens.resolve_model_encoding`` still gives its encoding.
    """
    return (table or load_price_table()).lookup(model)


def encoding_of(model: str, *, table: PriceTable | None = None) -> tuple[str, bool]:
    """The model's encoding from the table, else from name rules; the flag is True when the encoding was assumed."""
    try:
        return model_info(model, table=table).encoding, False
    except UnknownModel:
        resolved = resolve_model_encoding(model)
        return resolved.encoding, resolved.assumed
