"""OpenAI's hyperparameters into a provider's own, for providers that name theirs differently (jobs created through
the OpenAI-shaped routes, reruns; see ``ProviderEntry.hyperparameters``)."""

from __future__ import annotations


def from_openai(hyperparameters: dict[str, object], *, base_learning_rate: float, beta_name: str) -> dict[str, object]:
    """``n_epochs`` and ``batch_size`` as they are; ``learning_rate_multiplier`` scales the provider's own default
    learning rate (so 1.0 means "what this provider would have chosen", as it does at OpenAI); DPO's ``beta`` under
    the provider's name. "auto" and absent values are left out: the provider's default stands."""
    out: dict[str, object] = {}
    for name in ("n_epochs", "batch_size"):
        value = hyperparameters.get(name)
        if value is not None and value != "auto":
            out[name] = value
    multiplier = hyperparameters.get("learning_rate_multiplier")
    if multiplier is not None and multiplier != "auto":
        out["learning_rate"] = base_learning_rate * float(multiplier)  # type: ignore[arg-type]
    beta = hyperparameters.get("beta")  # only OpenAI's DPO section has it
    if beta is not None and beta != "auto":
        out[beta_name] = beta
    return out
