"""Deployments: the name under which a provider that serves fine-tunes only once deployed (Azure OpenAI) serves a job's
fine-tuned model. The service cannot create one (that takes the provider's control plane); it says how, and the
project registers the name so evaluations and ``/v1/chat/completions`` reach the model."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api_schemas.common import RequestModel


class DeploymentRegister(RequestModel):
    name: str = Field(
        min_length=2,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The deployment's name at the provider (Azure: letters, digits, '.', '_' and '-').",
    )


class DeploymentOut(BaseModel):
    job_id: str
    provider: str
    fine_tuned_model: str | None = Field(description="The provider's name for the model to deploy.")
    deployment: str | None = Field(description="The registered deployment; null: none yet.")
    registered_at: datetime | None = None
    instructions: str = Field(description="What to do for the model to answer.")
    command: str | None = Field(default=None, description="The command that creates the deployment (Azure CLI).")
    chat_completions_url: str | None = Field(
        default=None, description="Where the deployment answers: send model=<deployment>."
    )
