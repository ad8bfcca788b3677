"""Provider resources: the models a provider can fine-tune or serve, with their shutdown dates and warnings."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field


class ModelWarning(BaseModel):
    code: str = Field(
        description="model_shutdown_soon | model_shut_down | fine_tuning_closing | fine_tuning_closed | "
        "fine_tuned_model_shutdown_soon | fine_tuned_model_shut_down"
    )
    message: str


class ProviderModelOut(BaseModel):
    object: str = "provider.model"
    id: str = Field(description="The name to pass as `model` (a job's base model, or an evaluation's model).")
    provider: str
    owned_by: str | None = None
    base_model: str | None = Field(default=None, description="For fine-tuned models: the model it was trained from.")
    fine_tuned: bool = False
    fine_tunable: bool = Field(description="A new fine-tuning job on this model would be accepted today.")
    fine_tuning_methods: list[str] = Field(default_factory=list)
    shutdown_date: date | None = Field(
        default=None, description="The day it stops serving (fine-tunes stop with their base model)."
    )
    shutdown_date_source: str | None = Field(default=None, description="provider | price_table")
    price_table_version: str | None = Field(default=None, description="Set when the model is in our price table.")
    training_per_1m_usd: str | None = Field(default=None, description="Training price per million tokens.")
    warnings: list[ModelWarning] = Field(default_factory=list)
