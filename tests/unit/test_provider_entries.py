"""Provider differences come from the registry's entry: a provider registered with its own capabilities is priced,
pre-flighted and evaluated by them, not by its name."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.evaluations.summary import _cost
from service.providers import registry


def test_the_built_in_entries_say_how_their_models_are_called_and_priced() -> None:
    local, openai = registry.entry("local"), registry.entry("openai")
    assert (local.evaluation_target, local.pricing, local.capabilities.runs_locally) == ("local", "free", True)
    assert (openai.evaluation_target, openai.pricing, openai.capabilities.runs_locally) == (
        "openai",
        "price_table",
        False,
    )
    found = registry.find("local")
    assert registry.find("endpoint") is None and found is not None and found.name == "local"


@pytest.mark.parametrize(
    ("like", "pricing", "expected"),
    [("local", "free", "0"), ("openai", "price_table", "priced"), ("openai", None, None)],
)
def test_a_new_provider_is_priced_by_its_entry(monkeypatch, like: str, pricing, expected) -> None:
    monkeypatch.setitem(registry._ENTRIES, "acme", lambda: replace(registry.entry(like), name="acme", pricing=pricing))
    cost = _cost("gpt-4.1-mini-2025-04-14", "acme", 1_000_000, 1_000_000, False)
    if expected == "priced":
        assert cost is not None and float(cost) > 0
        assert cost == _cost("gpt-4.1-mini-2025-04-14", "openai", 1_000_000, 1_000_000, False)
    else:
        assert cost == expected
    assert _cost("x", "endpoint", 10, 10, False) is None
