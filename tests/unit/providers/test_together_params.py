"""Together's typed hyperparameters, OpenAI's mapped onto them, the dated list prices, model names, and the error
classification of its answers: pure logic, no server."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from pydantic import ValidationError

from service.pricing.table import UnknownModel
from service.pricing.together import load_together_prices, training_quote
from service.providers.together.errors import status_error, transport_error
from service.providers.together.models import claims_together_model
from service.providers.together.params import (
    BASE_LEARNING_RATE,
    TogetherHyperparameters,
    from_openai_hyperparameters,
    to_openai_hyperparameters,
)

BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


def _check(params: dict, method: str = "supervised") -> TogetherHyperparameters:
    return TogetherHyperparameters.model_validate(params, strict=True, context={"method": method})


@pytest.mark.parametrize(
    ("params", "method", "names"),
    [
        ({"epochs": 2}, "supervised", "epochs"),
        ({"wandb_api_key": "k"}, "supervised", "wandb_api_key"),
        ({"n_epochs": 0}, "supervised", "n_epochs"),
        ({"batch_size": "min"}, "supervised", "batch_size"),
        ({"training_type": "full", "lora_r": 8}, "supervised", "lora_r"),
        ({"dpo_beta": 0.1}, "supervised", "dpo_beta"),
        ({"train_on_inputs": True}, "dpo", "train_on_inputs"),
        ({"num_cycles": 1.0, "lr_scheduler": "linear"}, "supervised", "num_cycles"),
        ({"n_epochs": "3"}, "supervised", "n_epochs"),
        ({}, "reinforcement", "reinforcement"),
    ],
)
def test_refused_naming_the_field(params, method, names):
    with pytest.raises(ValidationError) as err:
        _check(params, method)
    assert names in str(err.value)


def test_request_fields_lora_sft_defaults():
    body = _check({"n_epochs": 2, "learning_rate": 2e-5, "lr_scheduler": "linear", "min_lr_ratio": 0.1}).request_fields(
        "supervised"
    )
    assert body == {
        "n_epochs": 2,
        "learning_rate": 2e-5,
        "lr_scheduler": {"lr_scheduler_type": "linear", "lr_scheduler_args": {"min_lr_ratio": 0.1}},
        "training_type": {"type": "Lora", "lora_r": 8, "lora_alpha": 16},
        "training_method": {"method": "sft", "train_on_inputs": False},
    }


def test_request_fields_full_dpo():
    body = _check({"training_type": "full", "dpo_beta": 0.3, "rpo_alpha": 0.5}, "dpo").request_fields("dpo")
    assert body["training_type"] == {"type": "Full"}
    assert body["training_method"] == {"method": "dpo", "dpo_beta": 0.3, "rpo_alpha": 0.5}


def test_openai_hyperparameters_map_both_ways():
    native = from_openai_hyperparameters(
        {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 2.5, "beta": 0.2}
    )
    assert native == {"n_epochs": 3, "learning_rate": 2.5 * BASE_LEARNING_RATE, "dpo_beta": 0.2}
    assert to_openai_hyperparameters(native) == {
        "n_epochs": 3,
        "batch_size": "auto",
        "learning_rate_multiplier": 2.5,
        "beta": 0.2,
    }
    assert from_openai_hyperparameters({"n_epochs": "auto", "learning_rate_multiplier": "auto"}) == {}


def test_list_prices_by_tier_type_and_method():
    table = load_together_prices()
    assert table.version == "2026-11-01" and table.currency == "USD"
    assert training_quote(BASE, 2_000_000).amount_usd == Decimal("0.96")
    assert training_quote(BASE, 1_000_000, training_type="full", method="dpo").usd_per_1m == Decimal("1.35")
    big = training_quote("meta-llama/Meta-Llama-3.1-70B-Instruct-Reference", 1_000_000)
    assert big.usd_per_1m == Decimal("2.90") and big.price_table_version == "2026-11-01"
    with pytest.raises(UnknownModel):
        training_quote("gpt-4.1-mini-2025-04-14", 10)


def test_inference_prices_of_base_and_lora_fine_tune():
    from service.pricing.together import inference_cost

    assert inference_cost(BASE, 1_000_000, 1_000_000) == Decimal("0.36")
    assert inference_cost("acct/Meta-Llama-3.1-8B-Instruct-Reference-tickets-01jd-3f2a", 500_000, 0) == Decimal("0.09")
    with pytest.raises(UnknownModel):
        inference_cost("acct/unknown-model-x", 1, 1)


def test_model_names():
    assert claims_together_model(BASE)
    assert claims_together_model("acct/Meta-Llama-3.1-8B-Instruct-Reference-tickets-01jd-3f2a")
    assert not claims_together_model("gpt-4.1-mini-2025-04-14")
    assert not claims_together_model("HuggingFaceTB/SmolLM2-135M-Instruct")


def _response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers, request=httpx.Request("GET", "https://x/v1/files"))


def test_status_errors():
    limited = status_error(
        _response(429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"retry-after": "7"})
    )
    assert limited.transient and limited.retry_after == 7.0 and limited.message == "slow down"
    assert status_error(_response(502, {"message": "bad gateway"})).transient
    refused = status_error(
        _response(400, {"error": {"message": "Invalid lora_r", "type": "invalid_request_error", "param": "lora_r"}})
    )
    assert not refused.transient and refused.message == "Invalid lora_r" and refused.param == "lora_r"
    assert refused.code == "invalid_request_error"
    plain = status_error(httpx.Response(403, text="forbidden", request=httpx.Request("GET", "https://x")))
    assert not plain.transient and plain.message == "forbidden" and plain.code == "http_403"


def test_transport_errors():
    from service.net import OutboundRefused

    assert transport_error(httpx.ReadTimeout("slow")).transient
    assert transport_error(httpx.ConnectError("down")).transient
    refusal = transport_error(OutboundRefused("refused: private address 10.0.0.1"))
    assert not refusal.transient and refusal.code == "url_not_allowed"
