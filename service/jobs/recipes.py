"""A job's hyperparameters carried to another provider (``POST /v1/jobs/{id}/rerun``).

Providers name and scale their hyperparameters differently (OpenAI's ``learning_rate_multiplier``, a local or Together
``learning_rate``; ``beta`` / ``dpo_beta``), so a recipe moves through the one vocabulary every registry entry maps in
and out of: OpenAI's (``ProviderEntry.hyperparameters``). A value set away from its provider's default that does not
survive that trip (a local ``lora_rank``) has no counterpart at the target: the rerun is refused naming it, rather than
training something else silently; the caller names the target's own hyperparameters instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from service.errors import InvalidInput
from service.providers.registry import ProviderEntry


@dataclass(frozen=True)
class Carried:
    hyperparameters: dict[str, Any]
    # Names set in the original that the target knows under another name (OpenAI's multiplier, a learning rate).
    renamed: list[str]


def carry(source: ProviderEntry, target: ProviderEntry, hyperparameters: dict[str, Any]) -> Carried:
    if source.name == target.name:
        return Carried(dict(hyperparameters), [])
    hyperparameters = {k: v for k, v in hyperparameters.items() if k not in source.hyperparameters.placement}
    openai_shaped = source.hyperparameters.to_openai(hyperparameters)
    mapped = target.hyperparameters.from_openai(openai_shaped)
    back = source.hyperparameters.from_openai(source.hyperparameters.to_openai(hyperparameters))
    lost = sorted(
        name
        for name, value in hyperparameters.items()
        if not _is_default(source, name, value) and not _same(back.get(name), value)
    )
    if lost:
        raise InvalidInput(
            f"hyperparameters {', '.join(lost)} of the {source.name} job have no counterpart at {target.name}; "
            f"give the rerun its own hyperparameters (those {target.name} knows: "
            f"{', '.join(sorted(target.params_model.model_fields))})",
            code="invalid_hyperparameters",
            param="hyperparameters",
        )
    renamed = sorted(k for k, v in hyperparameters.items() if k not in mapped and not _is_default(source, k, v))
    return Carried(mapped, renamed)


def _is_default(entry: ProviderEntry, name: str, value: Any) -> bool:
    if value is None or value == "auto":
        return True
    field = entry.params_model.model_fields.get(name)
    return field is not None and _same(field.default, value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-6)
    return a == b
