"""Model catalog and prices from a versioned JSON table, and the cost estimates built on it."""

from service.pricing.estimates import (
    CostQuote,
    InferenceQuote,
    auto_epochs,
    billable_tokens,
    inference_cost,
    quote_inference,
    quote_training,
    round_money,
    training_cost,
)
from service.pricing.table import (
    BUNDLED_PRICE_TABLE,
    ModelEntry,
    ModelInfo,
    PriceTable,
    PriceTableError,
    TokenPrices,
    UnknownModel,
    encoding_of,
    load_price_table,
    model_info,
)

__all__ = [
    "BUNDLED_PRICE_TABLE",
    "CostQuote",
    "InferenceQuote",
    "ModelEntry",
    "ModelInfo",
    "PriceTable",
    "PriceTableError",
    "TokenPrices",
    "UnknownModel",
    "auto_epochs",
    "billable_tokens",
    "encoding_of",
    "inference_cost",
    "load_price_table",
    "model_info",
    "quote_inference",
    "quote_training",
    "round_money",
    "training_cost",
]
