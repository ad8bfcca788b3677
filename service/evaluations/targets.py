"""Where each candidate's answers come from: an OpenAI-compatible endpoint (with credentials) or local inference of a
base model with an optional LoRA adapter. Resolved when the evaluation is created (to fail early) and again when it
runs (credentials may have changed in between)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlmodel import Session, select

from api_schemas.evaluations import EndpointCandidate, JobCandidate, ModelCandidate
from api_schemas.jobs import JobStatus
from service.errors import Conflict, InvalidInput, Unavailable
from service.evaluations.generation import ClientConfig
from service.jobs.local_models import LocalModel, Purpose, resolve_local_model
from service.jobs.models import Job, JobCheckpoint
from service.providers import registry
from service.providers.local import BaseModelSource, LocalTrainingError
from service.secrets import decrypt_secret, encrypt_secret
from service.settings import Settings
from service.tenancy import get_owned

SECRET_PURPOSE = "evaluation-endpoint"


@dataclass(frozen=True)
class RemoteTarget:
    model: str
    client: ClientConfig
    provider: str  # the provider ("openai", "azure", ...) or "endpoint": whether OpenAI's Batch API is there


@dataclass(frozen=True)
class LocalTarget:
    model: str  # a label for results
    base_model: BaseModelSource  # resolved for the project (service.jobs.local_models): never a path it gave
    adapter_path: Path | None


Target = RemoteTarget | LocalTarget


def openai_client(session: Session, settings: Settings, project_id: str) -> ClientConfig:
    from service.providers.registry import credential_for, decode_credential

    cred = credential_for(session, project_id, "openai")
    key = decode_credential(settings, cred).api_key if cred is not None else None
    if key is None and settings.openai_api_key is not None:
        key = settings.openai_api_key.get_secret_value()
    if not key:
        raise Unavailable(
            "no OpenAI key for this project: store one with PUT /v1/providers/openai/credentials",
            code="provider_credentials_missing",
        )
    base_url = (cred.base_url if cred is not None else None) or settings.openai_base_url
    return ClientConfig(base_url=base_url, api_key=SecretStr(key))


def resolve(
    session: Session, settings: Settings, project_id: str, candidate: dict[str, Any], *, check_only: bool = False
) -> Target:
    """The target of a stored candidate (its JSON form, with ``api_key_ciphertext`` for endpoint keys)."""
    kind = candidate["kind"]
    if kind == "endpoint":
        spec = EndpointCandidate.model_validate({k: v for k, v in candidate.items() if k != "api_key_ciphertext"})
        ciphertext = candidate.get("api_key_ciphertext")
        key = decrypt_secret(settings, ciphertext, purpose=SECRET_PURPOSE) if ciphertext else None
        # Local servers (vLLM, Ollama, llama.cpp) accept any key; the SDK insists on one.
        return RemoteTarget(
            spec.model, ClientConfig(base_url=spec.base_url, api_key=SecretStr(key or "none")), "endpoint"
        )
    if kind == "model":
        spec_m = ModelCandidate.model_validate(candidate)
        if registry.entry(spec_m.provider).evaluation_target == "local":
            local = _local_model(session, settings, project_id, spec_m.model, "infer")
            return LocalTarget(spec_m.model, local.base, local.adapter_path)
        client = (
            provider_client(session, settings, project_id, spec_m.provider) if not check_only else _placeholder_client()
        )
        return RemoteTarget(spec_m.model, client, spec_m.provider)
    spec_j = JobCandidate.model_validate(candidate)
    job = get_owned(session, Job, spec_j.job_id, project_id, "job")
    if spec_j.checkpoint_step is None and job.status != JobStatus.succeeded:
        raise Conflict(
            f"job {job.id} is {job.status}; only a succeeded job has a fine-tuned model to evaluate",
            code="job_not_succeeded",
        )
    target = registry.entry(job.provider).evaluation_target
    if target == "local":
        from service.providers.local_provider import runs_dir

        output = runs_dir(settings) / job.id / "output"
        if spec_j.checkpoint_step is None:
            path = output / "adapter"
        else:
            path = output / "checkpoints" / f"step-{spec_j.checkpoint_step}"
        if not (path / "adapter_config.json").exists():
            raise Conflict(f"job {job.id} has no adapter at {path.name} (was it kept?)", code="adapter_missing")
        label = f"local:{job.id}" + (f":step-{spec_j.checkpoint_step}" if spec_j.checkpoint_step is not None else "")
        return LocalTarget(label, _local_model(session, settings, project_id, job.base_model, "train").base, path)
    if spec_j.checkpoint_step is None:
        model = job.fine_tuned_model
    else:
        ckpt = session.exec(
            select(JobCheckpoint).where(JobCheckpoint.job_id == job.id, JobCheckpoint.step == spec_j.checkpoint_step)
        ).first()
        if ckpt is None or not ckpt.model:
            raise Conflict(
                f"job {job.id} has no checkpoint model at step {spec_j.checkpoint_step}", code="checkpoint_missing"
            )
        model = ckpt.model
    if not model:
        raise Conflict(f"job {job.id} has no fine-tuned model", code="job_not_succeeded")
    if target != "openai":
        raise InvalidInput(f"jobs of provider {job.provider!r} cannot be evaluated yet", code="unsupported_provider")
    if check_only:
        return RemoteTarget(model, _placeholder_client(), job.provider)
    if registry.entry(job.provider).capabilities.needs_deployment:
        # Azure answers a fine-tune only under the name of its deployment. Checked when the evaluation runs, not when
        # it is created: the one a job asks for is created as the job succeeds, before anyone could deploy it.
        from service.deployments.service import deployment_name

        if spec_j.checkpoint_step is not None:
            raise Conflict(
                f"{job.provider} serves checkpoints only through a deployment of their own; evaluate the final model",
                code="deployment_required",
            )
        model = deployment_name(session, job)
    return RemoteTarget(model, provider_client(session, settings, project_id, job.provider), job.provider)


def provider_client(session: Session, settings: Settings, project_id: str, provider: str) -> ClientConfig:
    """The OpenAI-compatible client a provider's models are called with, for this project."""
    entry = registry.entry(provider)
    if entry.inference_client is not None:
        return entry.inference_client(session, settings, project_id)
    return openai_client(session, settings, project_id)


def judge_endpoint(judge: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored (or requested) judge as the endpoint candidate its prompts go to; None when the judge is OpenAI with
    the project's credentials (no ``base_url``). The judge model itself is named in each LLM grader."""
    if not judge or not judge.get("base_url"):
        return None
    return {"kind": "endpoint", "name": "judge", "model": "judge", **judge}


def _local_model(session: Session, settings: Settings, project_id: str, name: str, purpose: Purpose) -> LocalModel:
    try:
        return resolve_local_model(session, settings, project_id, name, purpose=purpose)
    except LocalTrainingError as exc:
        raise InvalidInput(str(exc), code="base_model_unavailable") from exc


def _placeholder_client() -> ClientConfig:
    return ClientConfig(api_key=SecretStr("unused"))


def seal_candidate(settings: Settings, candidate: dict[str, Any]) -> dict[str, Any]:
    """The candidate as stored: an endpoint key becomes a ciphertext."""
    out = dict(candidate)
    key = out.pop("api_key", None)
    if key:
        plain = key.get_secret_value() if isinstance(key, SecretStr) else str(key)
        out["api_key_ciphertext"] = encrypt_secret(settings, plain, purpose=SECRET_PURPOSE)
    return out


def public_candidate(candidate: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in candidate.items() if k not in ("api_key", "api_key_ciphertext")}
    if candidate.get("kind") == "endpoint":
        out["api_key_set"] = bool(candidate.get("api_key_ciphertext"))
    return out
