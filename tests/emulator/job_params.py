"""Checks of a fine-tuning job request: method, hyperparameters ("auto" or in range), integrations."""

from __future__ import annotations

from typing import Any

from . import params
from .errors import invalid

CREATE_FIELDS = {
    "model",
    "training_file",
    "validation_file",
    "suffix",
    "seed",
    "metadata",
    "integrations",
    "method",
    "hyperparameters",
}
METHODS = ("supervised", "dpo", "reinforcement")
COMMON_HP = ("batch_size", "learning_rate_multiplier", "n_epochs")
EXTRA_HP = {
    "supervised": (),
    "dpo": ("beta",),
    "reinforcement": ("reasoning_effort", "compute_multiplier", "eval_interval", "eval_samples"),
}
SEED_MAX = 2147483647
# Azure's training tiers (``trainingType`` in a job create; Microsoft Learn, "Customize a model with fine-tuning").
AZURE_TRAINING_TYPES = ("standard", "globalstandard", "developer")


def _hyperparameters(raw: Any, path: str, method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise params.wrong_type(path, "an object", raw)
    for key in raw:
        if key not in COMMON_HP and key not in EXTRA_HP[method]:
            raise invalid(f"Unknown parameter: '{path}.{key}'.", param=f"{path}.{key}", code="unknown_parameter")
    common = {
        "batch_size": params.auto_or_int(f"{path}.batch_size", raw.get("batch_size", "auto"), low=1, high=256),
        "learning_rate_multiplier": params.auto_or_number(
            f"{path}.learning_rate_multiplier", raw.get("learning_rate_multiplier", "auto"), low=0.0
        ),
        "n_epochs": params.auto_or_int(f"{path}.n_epochs", raw.get("n_epochs", "auto"), low=1, high=50),
    }
    extra: dict[str, Any] = {}
    if method == "dpo":
        extra["beta"] = params.auto_or_number(f"{path}.beta", raw.get("beta", "auto"), low=0.0, high=2.0)
    elif method == "reinforcement":
        for key in EXTRA_HP["reinforcement"]:
            if key in raw:
                extra[key] = raw[key]
    return common, extra


def parse_method(body: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(method type, common hyperparameters, method-only fields) from `method` or the deprecated top level."""
    top = body.get("hyperparameters")
    method = body.get("method")
    if method is None:
        common, _ = _hyperparameters(top, "hyperparameters", "supervised")
        return "supervised", common, {"hyperparameters": {}}
    if not isinstance(method, dict):
        raise params.wrong_type("method", "an object", method)
    if "type" not in method:
        raise params.missing("method.type")
    kind = params.one_of("method.type", method["type"], METHODS)
    for key in method:
        if key not in ("type", *METHODS):
            raise invalid(f"Unknown parameter: 'method.{key}'.", param=f"method.{key}", code="unknown_parameter")
    section = method.get(kind) or {}
    if not isinstance(section, dict):
        raise params.wrong_type(f"method.{kind}", "an object", section)
    raw = section.get("hyperparameters")
    if top is not None and raw is not None:
        raise invalid(
            f"Specify hyperparameters either in 'method.{kind}.hyperparameters' or in the deprecated top-level "
            "'hyperparameters', not both.",
            param="hyperparameters",
        )
    common, extra = _hyperparameters(raw if raw is not None else top, f"method.{kind}.hyperparameters", kind)
    fields: dict[str, Any] = {"hyperparameters": extra}
    if kind == "reinforcement":
        grader = section.get("grader")
        if not isinstance(grader, dict) or "type" not in grader:
            raise invalid(
                "Reinforcement fine-tuning requires 'method.reinforcement.grader'.",
                param="method.reinforcement.grader",
                code="missing_required_parameter",
            )
        fields["grader"] = grader
    return kind, common, fields


def parse_integrations(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    value = body.get("integrations")
    if value is None:
        return None
    if not isinstance(value, list):
        raise params.wrong_type("integrations", "an array", value)
    if len(value) > 5:
        raise invalid("Invalid 'integrations': at most 5 integrations are allowed.", param="integrations")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or item.get("type") != "wandb":
            raise invalid(f"Invalid 'integrations[{i}].type': only 'wandb' is supported.", param=f"integrations[{i}]")
        wandb = item.get("wandb")
        if not isinstance(wandb, dict) or not isinstance(wandb.get("project"), str):
            raise params.missing(f"integrations[{i}].wandb.project")
        out.append({"type": "wandb", "wandb": {"project": wandb["project"], "entity": wandb.get("entity")}})
    return out
