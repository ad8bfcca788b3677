"""What calling an Azure fine-tune needs: a deployment, which only the control plane (ARM, an Entra identity with
``Microsoft.CognitiveServices/accounts/deployments/write``) can create; a resource's api-key, all this service holds,
cannot. So the service says exactly what to run, and the project registers the deployment's name
(``PUT /v1/jobs/{id}/deployment``); calls then go to ``{endpoint}/openai/v1/chat/completions`` with
``model=<deployment>``.

Deployment types for fine-tunes: ``Standard`` (regional), ``GlobalStandard`` and ``DeveloperTier`` (no SLA, removed
after 24 hours); hosting is billed per hour whether or not the model is called, and Azure deletes a fine-tune's
deployment left unused for 15 days.
"""

from __future__ import annotations

from urllib.parse import urlsplit

V1_PATH = "/openai/v1"


def v1_base_url(endpoint: str) -> str:
    """``https://<resource>.openai.azure.com`` (with or without ``/openai/v1``) -> the v1 API's base URL."""
    base = endpoint.rstrip("/")
    if base.endswith(V1_PATH):
        return base
    if base.endswith("/openai"):
        base = base[: -len("/openai")]
    return base + V1_PATH


def resource_name(endpoint: str) -> str:
    """The Azure resource (account) name from its endpoint host, or a placeholder when the host is not Azure's."""
    host = urlsplit(endpoint).hostname or ""
    for suffix in (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com"):
        if host.endswith(suffix):
            return host[: -len(suffix)]
    return "<RESOURCE_NAME>"


def suggested_deployment_name(job_id: str) -> str:
    # Deployment names: letters, digits, '-', '_' and '.', at most 64 characters.
    return job_id.replace("_", "-")


def deploy_command(endpoint: str, fine_tuned_model: str, deployment: str, sku: str = "Standard") -> str:
    return (
        "az cognitiveservices account deployment create"
        f" --resource-group <RESOURCE_GROUP> --name {resource_name(endpoint)}"
        f" --deployment-name {deployment} --model-name {fine_tuned_model} --model-version 1"
        f" --model-format OpenAI --sku-name {sku} --sku-capacity 1"
    )
