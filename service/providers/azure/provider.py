"""The Azure OpenAI adapter: the ``openai`` adapter pointed at ``{endpoint}/openai/v1`` with an ``api-key`` header,
plus Azure's statuses, file rules, training tier and model listing (see the package docstring for the sources)."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from api_schemas.jobs import JobStatus
from service.providers.azure import files
from service.providers.azure.deployment import v1_base_url
from service.providers.base import Capabilities, JobSpec, ProviderError, ProviderModel
from service.providers.openai.provider import STATUS_MAP, OpenAIHyperparameters, OpenAIProvider

# Statuses Azure reports besides OpenAI's (its older data-plane API, still seen through v1 on some resources).
AZURE_STATUS_MAP: dict[str, JobStatus] = {
    **STATUS_MAP,
    "pending": JobStatus.queued,
    "notRunning": JobStatus.queued,
    "pausing": JobStatus.running,
    "resuming": JobStatus.paused,
}


class AzureHyperparameters(OpenAIHyperparameters):
    """OpenAI's hyperparameters (same names and ranges), plus where Azure trains: ``standard`` (the resource's region),
    ``globalstandard`` (any region, cheaper) or ``developer`` (cheapest, preemptible). Unknown names are refused."""

    training_type: Literal["standard", "globalstandard", "developer"] | None = Field(
        default=None, description="Azure's training tier (sent as trainingType); default: Azure's (standard)."
    )


class AzureProvider(OpenAIProvider):
    name: ClassVar[str] = "azure"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=["supervised", "dpo"],
        pause_resume=True,
        checkpoints=True,
        events=True,
        webhooks=False,
        needs_deployment=True,
    )
    params_model: ClassVar[type[BaseModel]] = AzureHyperparameters
    status_map: ClassVar[dict[str, JobStatus]] = AZURE_STATUS_MAP

    def __init__(self, *, endpoint: str, api_key: str, timeout: float = 60.0, max_retries: int = 2) -> None:
        super().__init__(
            api_key=api_key, base_url=v1_base_url(endpoint), timeout=timeout, max_retries=max_retries, auth="api-key"
        )
        self.endpoint = endpoint
        self._account = hashlib.sha256(f"azure\0{v1_base_url(endpoint)}\0{api_key}".encode()).hexdigest()[:32]

    def upload_file(self, path: Path, *, sha256: str, purpose: str) -> str:
        try:
            files.check_size(path.stat().st_size)
            with files.with_bom(path) as upload:
                # Named by the content hash without the BOM, so find_file matches across attempts.
                return super().upload_file(upload, sha256=sha256, purpose=purpose)
        except files.FileRuleError as exc:
            raise ProviderError(str(exc), transient=False, code="file_too_large", param="training_file") from exc

    def _create_kwargs(self, spec: JobSpec) -> dict[str, Any]:
        hp = dict(spec.hyperparameters)
        training_type = hp.pop("training_type", None)
        kwargs = super()._create_kwargs(spec.model_copy(update={"hyperparameters": hp}))
        if training_type:
            kwargs["extra_body"] = {"trainingType": training_type}
        return kwargs

    def list_models(self) -> list[ProviderModel]:
        """Azure's models carry ``deprecation: {fine_tune, inference}`` (Unix seconds) instead of ``shutdown_date``;
        the inference date is when its fine-tunes stop serving."""
        page = self._call(self._client.models.list)
        out = []
        for m in page.data or []:
            raw = m.model_dump(mode="json")
            deprecation = raw.get("deprecation") or {}
            when = deprecation.get("inference")
            if isinstance(when, int | float):
                shutdown = date.fromtimestamp(when)
            else:  # a resource answering in OpenAI's shape
                try:
                    shutdown = date.fromisoformat(raw["shutdown_date"]) if raw.get("shutdown_date") else None
                except (TypeError, ValueError):
                    shutdown = None
            capabilities = raw.get("capabilities") or {}
            out.append(
                ProviderModel(
                    id=raw["id"],
                    owned_by=raw.get("owned_by"),
                    shutdown_date=shutdown,
                    fine_tunable=capabilities.get("fine_tune") if "fine_tune" in capabilities else None,
                )
            )
        return out
