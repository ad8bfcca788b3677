"""Together's dated list prices (``together_prices.json``): training by model size tier, LoRA or full, SFT or DPO;
inference of the base models, which Together also charges for their LoRA fine-tunes. Together's own estimate for one
job comes from ``POST /fine-tunes/estimate-price`` (``TogetherProvider.estimate_price``); this table answers without a
call, as the price table does for OpenAI, and names its version with every quote."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.pricing.estimates import MILLION, CostQuote, round_money
from service.pricing.table import UnknownModel

TOGETHER_PRICE_TABLE = Path(__file__).with_name("together_prices.json")
Tier = Literal["up_to_16b", "17b_to_69b", "70b_to_100b"]


class TierPrices(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lora_sft: Decimal = Field(ge=0)
    full_sft: Decimal = Field(ge=0)
    lora_dpo: Decimal = Field(ge=0)
    full_dpo: Decimal = Field(ge=0)


class InferencePrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)


class TogetherModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: Tier
    inference: InferencePrice
    full: bool = Field(description="Full fine-tuning offered (LoRA always is).")


class TogetherPriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    currency: Literal["USD"]
    unit: str
    source: str
    size_tiers: dict[Tier, TierPrices]
    models: dict[str, TogetherModel]


@lru_cache(maxsize=1)
def load_together_prices() -> TogetherPriceTable:
    return TogetherPriceTable.model_validate_json(TOGETHER_PRICE_TABLE.read_bytes())


def training_quote(model: str, tokens: int, *, training_type: str = "lora", method: str = "supervised") -> CostQuote:
    """List price of training ``tokens`` (epochs included) on ``model``; ``UnknownModel`` when it is not listed."""
    table = load_together_prices()
    entry = table.models.get(model)
    if entry is None:
        raise UnknownModel(model, table.version)
    kind = f"{'full' if training_type == 'full' else 'lora'}_{'dpo' if method == 'dpo' else 'sft'}"
    price: Decimal = getattr(table.size_tiers[entry.tier], kind)
    return CostQuote(
        model=model,
        table_entry=f"{model} ({entry.tier}, {kind})",
        amount_usd=round_money(price * tokens / MILLION),
        usd_per_1m=price,
        tokens=tokens,
        price_table_version=table.version,
    )


def inference_cost(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    """USD for these tokens on ``model``: a listed base model, or a LoRA fine-tune of one, which Together serves at its
    base model's price (``<account>/<base without org>-<suffix>-<hash>``)."""
    table = load_together_prices()
    entry = table.models.get(model)
    if entry is None:
        _account, _, rest = model.partition("/")
        entry = next((e for name, e in table.models.items() if rest.startswith(name.split("/", 1)[-1] + "-")), None)
    if entry is None:
        raise UnknownModel(model, table.version)
    return round_money((entry.inference.input * input_tokens + entry.inference.output * output_tokens) / MILLION)
