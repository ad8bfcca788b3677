"""Cost estimates from the price table. Money is Decimal; quotes carry the table version that produced them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from service.pricing.table import PriceTable, PriceTableError, load_price_table, model_info

MILLION = Decimal(1_000_000)
# Estimates are shown to the micro-dollar: one token at the cheapest listed price is still visible.
MONEY_QUANTUM = Decimal("0.000001")

# OpenAI's data-prep cookbook: aim for 3 epochs, but at least 100 and at most 25,000 examples seen.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def auto_epochs(n_examples: int) -> int:
    """The epochs ``n_epochs="auto"`` picks for ``n_examples``, per the cookbook rule."""
    if n_examples < 1:
        raise ValueError("n_examples must be at least 1")
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def billable_tokens(example_tokens: Iterable[int], *, limit: int | None, n_epochs: int) -> int:
    """``n_epochs * sum(min(limit, tokens))``: examples over the limit are truncated, so billed up to it."""
    if n_epochs < 1:
        raise ValueError("n_epochs must be at least 1")
    if limit is None:
        return n_epochs * sum(example_tokens)
    return n_epochs * sum(min(limit, t) for t in example_tokens)


def round_money(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class CostQuote:
    """An amount in USD with what produced it."""

    model: str
    table_entry: str
    amount_usd: Decimal
    usd_per_1m: Decimal
    tokens: int
    price_table_version: str


def _check_tokens(*counts: int) -> None:
    for n in counts:
        if n < 0:
            raise ValueError(f"token counts cannot be negative, got {n}")


def quote_training(model: str, billable: int, *, table: PriceTable | None = None) -> CostQuote:
    """Price of training ``billable`` tokens on ``model`` (a base, alias, or ``ft:`` name, which trains from its
    base). Raises ``UnknownModel`` or ``PriceTableError`` when the table has no per-token training price for it."""
    _check_tokens(billable)
    info = model_info(model, table=table)
    price = info.entry.training_per_1m
    if price is None:
        note = info.entry.training_note or "it is not fine-tunable per token"
        raise PriceTableError(f"no per-token training price for {info.name} in table {info.table_version}: {note}")
    return CostQuote(
        model=model,
        table_entry=info.name,
        amount_usd=round_money(price * billable / MILLION),
        usd_per_1m=price,
        tokens=billable,
        price_table_version=info.table_version,
    )


@dataclass(frozen=True)
class InferenceQuote:
    model: str
    table_entry: str
    amount_usd: Decimal
    input_tokens: int
    output_tokens: int
    batch: bool
    price_table_version: str


def quote_inference(
    model: str, input_tokens: int, output_tokens: int, *, batch: bool = False, table: PriceTable | None = None
) -> InferenceQuote:
    """Price of a call (or calls) with these token totals; ``ft:`` names use fine-tuned prices, ``batch`` the
    table's batch discount."""
    _check_tokens(input_tokens, output_tokens)
    table = table or load_price_table()
    info = model_info(model, table=table)
    prices = info.inference_prices()
    amount = (prices.input * input_tokens + prices.output * output_tokens) / MILLION
    if batch:
        amount *= table.batch_discount
    return InferenceQuote(
        model=model,
        table_entry=info.name,
        amount_usd=round_money(amount),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        batch=batch,
        price_table_version=info.table_version,
    )


def training_cost(model: str, billable_tokens: int, *, table: PriceTable | None = None) -> Decimal:
    """USD to train ``billable_tokens`` on ``model``; ``quote_training`` also gives the table version."""
    return quote_training(model, billable_tokens, table=table).amount_usd


def inference_cost(
    model: str, input_tokens: int, output_tokens: int, *, batch: bool = False, table: PriceTable | None = None
) -> Decimal:
    """USD for these inference tokens on ``model``; ``quote_inference`` also gives the table version."""
    return quote_inference(model, input_tokens, output_tokens, batch=batch, table=table).amount_usd
