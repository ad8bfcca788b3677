"""The versioned price table and the estimates built on it (money as Decimal, version with every quote)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from service.pricing import (
    BUNDLED_PRICE_TABLE,
    PriceTableError,
    UnknownModel,
    auto_epochs,
    billable_tokens,
    encoding_of,
    inference_cost,
    load_price_table,
    model_info,
    quote_inference,
    quote_training,
    training_cost,
)


def test_bundled_table_loads_with_a_date_version() -> None:
    table = load_price_table()
    assert date.fromisoformat(table.version)
    assert table.batch_discount == Decimal("0.5")
    assert "source" in json.loads(BUNDLED_PRICE_TABLE.read_text())


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o-2024-08-06",
        "gpt-4o-mini-2024-07-18",
        "gpt-4.1-2025-04-14",
        "gpt-4.1-mini-2025-04-14",
        "gpt-4.1-nano-2025-04-14",
    ],
)
def test_gpt4o_and_gpt41_families_shut_down_on_2027_01_14(name: str) -> None:
    info = model_info(name)
    assert info.entry.shutdown_date == date(2027, 1, 14)
    assert info.entry.encoding == "o200k_base"
    assert info.fine_tunable("supervised") and info.fine_tunable("dpo")


def test_fine_tuned_and_checkpoint_names_resolve_to_their_base() -> None:
    ft = model_info("ft:gpt-4.1-mini-2025-04-14:acme::AbC123")
    assert ft.name == "gpt-4.1-mini-2025-04-14" and ft.fine_tuned
    ckpt = model_info("ft:gpt-4o-mini-2024-07-18:acme:sfx:job123:ckpt-step-10")
    assert ckpt.name == "gpt-4o-mini-2024-07-18" and ckpt.fine_tuned
    alias = model_info("gpt-4.1-mini")
    assert alias.name == "gpt-4.1-mini-2025-04-14" and not alias.fine_tuned


def test_unknown_model() -> None:
    with pytest.raises(UnknownModel, match="not in price table"):
        model_info("llama-3-8b")
    assert encoding_of("llama-3-8b") == ("o200k_base", True)
    assert encoding_of("ft:gpt-3.5-turbo-0125:acme::x") == ("cl100k_base", False)


def test_training_cost_by_hand() -> None:
    # 1,500 tokens at USD 5 per million = USD 0.0075.
    assert training_cost("gpt-4.1-mini-2025-04-14", 1500) == Decimal("0.007500")
    quote = quote_training("ft:gpt-4.1-mini-2025-04-14:acme::x", 2_000_000)
    assert quote.amount_usd == Decimal("10.000000")
    assert quote.table_entry == "gpt-4.1-mini-2025-04-14"
    assert quote.price_table_version == load_price_table().version


def test_inference_cost_base_fine_tuned_and_batch() -> None:
    # gpt-4o-mini base: 0.15 in / 0.60 out per million.
    assert inference_cost("gpt-4o-mini", 1_000_000, 1_000_000) == Decimal("0.750000")
    # Fine-tuned gpt-4o-mini: 0.30 / 1.20; batch halves it.
    assert inference_cost("ft:gpt-4o-mini-2024-07-18:acme::x", 1_000_000, 1_000_000) == Decimal("1.500000")
    quote = quote_inference("ft:gpt-4o-mini-2024-07-18:acme::x", 1_000_000, 1_000_000, batch=True)
    assert quote.amount_usd == Decimal("0.750000") and quote.batch


def test_models_without_per_token_training_price() -> None:
    with pytest.raises(PriceTableError, match="per hour"):
        training_cost("o4-mini-2025-04-16", 1000)
    with pytest.raises(PriceTableError, match="no fine-tuned inference prices"):
        inference_cost("ft:gpt-5-mini:acme::x", 10, 10)


def test_negative_tokens_are_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        training_cost("gpt-4.1-mini-2025-04-14", -1)


@pytest.mark.parametrize(
    ("n", "epochs"),
    [
        (1, 25),
        (3, 25),
        (4, 25),
        (5, 20),
        (10, 10),
        (33, 3),
        (34, 3),
        (100, 3),
        (8333, 3),
        (8334, 2),
        (25000, 1),
        (10**6, 1),
    ],
)
def test_auto_epochs_follows_the_cookbook(n: int, epochs: int) -> None:
    assert auto_epochs(n) == epochs


def test_auto_epochs_needs_examples() -> None:
    with pytest.raises(ValueError):
        auto_epochs(0)


def test_billable_tokens_truncate_at_the_limit() -> None:
    assert billable_tokens([10, 200, 50], limit=100, n_epochs=3) == 3 * (10 + 100 + 50)
    assert billable_tokens([10, 200], limit=None, n_epochs=1) == 210


def test_table_path_override_and_reload_on_change(tmp_path: Path) -> None:
    data = json.loads(BUNDLED_PRICE_TABLE.read_text())
    data["version"] = "2027-01-01"
    data["models"]["gpt-4.1-mini-2025-04-14"]["training_per_1m"] = "4.00"
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    table = load_price_table(path)
    assert table.version == "2027-01-01"
    assert training_cost("gpt-4.1-mini-2025-04-14", 1_000_000, table=table) == Decimal("4.000000")
    data["version"] = "2027-02-01"
    path.write_text(json.dumps(data))
    import os

    os.utime(path, ns=(1, 10**18))
    assert load_price_table(path).version == "2027-02-01"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version="latest"), "YYYY-MM-DD"),
        (lambda d: d["models"]["gpt-4o-mini-2024-07-18"].update(training_per_1m="-1"), "greater than or equal"),
        (lambda d: d["models"]["gpt-4o-2024-08-06"]["aliases"].append("gpt-4o-mini"), "listed for both"),
        (lambda d: d["models"]["gpt-4o-2024-08-06"].update(encoding="r50k_base"), "encoding"),
    ],
)
def test_invalid_tables_are_refused(tmp_path: Path, mutate, message: str) -> None:
    data = json.loads(BUNDLED_PRICE_TABLE.read_text())
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PriceTableError, match=message):
        load_price_table(path)


def test_missing_table_file(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="cannot read"):
        load_price_table(tmp_path / "nope.json")
